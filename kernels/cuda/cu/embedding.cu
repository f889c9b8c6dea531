// Embedding lookup (reference kernels/src/cpu/embedding.rs): y[t] = table[ids[t]], table
// [vocab, d], y [n_ids, d]; the backward scatter-adds the rows of dy into dtable. One block per
// token row (grid-stride over the rows), the threads across the row's d channels, so every
// access is coalesced. The launcher checks the ids against the vocabulary (the kernels cannot:
// they are not given it).

// Launch: grid (min(n_ids, 65535)), block 256, dynamic shared 0.
KERNEL void embedding_fwd_f32(const float* __restrict__ table, int d,
                              const unsigned int* __restrict__ ids, float* __restrict__ y,
                              long long n_ids) {
    for (long long t = blockIdx.x; t < n_ids; t += gridDim.x) {
        const float* src = table + (long long)ids[t] * d;
        float* dst = y + t * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
    }
}

// dtable[ids[t]] += dy[t] with atomics: repeated ids add in an unspecified order (the
// reference adds in token order, so sums of repeated ids may differ in the last bits).
// Launch: grid (min(n_ids, 65535)), block 256, dynamic shared 0.
KERNEL void embedding_bwd_f32(const float* __restrict__ dy, int d,
                              const unsigned int* __restrict__ ids, float* __restrict__ dtable,
                              long long n_ids) {
    for (long long t = blockIdx.x; t < n_ids; t += gridDim.x) {
        float* dst = dtable + (long long)ids[t] * d;
        const float* src = dy + t * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) atomicAdd(dst + j, src[j]);
    }
}
