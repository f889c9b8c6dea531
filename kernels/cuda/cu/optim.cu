// The optimizer's kernels, bit for bit those of kernels/src/cpu/optim.rs (compiled without FMA
// contraction, as every kernel here is).
//
//   adamw_f32        one AdamW step over the flat parameter buffer: FP32 master weights p, their
//                    gradients g, the moments m and v, and one kind byte per element
//                    (0 plain, 1 decayed, 2 frozen: AdamStep::PLAIN/DECAYED/FROZEN). The step's
//                    scalars come computed in f64 and rounded to f32 once (AdamStep::new):
//                      step_size = lr / (1 − β₁ᵗ),  bc2_sqrt = √(1 − β₂ᵗ),
//                      decay = 1 − lr · weight_decay,  grad_scale = the clip scale
//                    and per element not frozen
//                      g = grad · grad_scale
//                      m = β₁·m + (1 − β₁)·g ;  v = β₂·v + (1 − β₂)·g·g   (BF16 if bf16_moments)
//                      p = p · decay                                     (decayed only)
//                      p = p − step_size · m / (√v / bc2_sqrt + ε)
//   sum_squares_f32  Σ x² over each segment [start, end) of x, in f64, in the CPU's lane order:
//                    thread j of the block sums x[start + j]², x[start + j + 256]², … in order,
//                    then the 256 partial sums are folded pairwise in shared memory (lane j +=
//                    lane j + 128, then + 64, …, + 1). Squares of f32 are exact in f64.

// One element's update from its loaded values; the new m, v and p in the last three.
DEVICE void adamw_one(float gi, float mi, float vi, float pi, unsigned char k, float step_size,
                      float beta1, float beta2, float eps, float bc2_sqrt, float decay,
                      float grad_scale, int bf16_moments, float* mo, float* vo, float* po) {
    gi = gi * grad_scale;
    mi = beta1 * mi + (1.0f - beta1) * gi;
    vi = beta2 * vi + (1.0f - beta2) * gi * gi;
    if (bf16_moments) {
        mi = round_bf16(mi);
        vi = round_bf16(vi);
    }
    if (k == 1) pi *= decay;
    *mo = mi;
    *vo = vi;
    *po = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
}

#define ADAMW_UNROLL 4

// grid (min(ceil(n / (256 · ADAMW_UNROLL)), 65535 · 8)), block 256, dynamic shared 0
// (`elementwise_by(n, ADAMW_UNROLL)`): grid-stride, ADAMW_UNROLL elements a thread a pass, a
// grid apart so that every access stays coalesced across the warp (one pass for up to
// 2²⁹ − 8,192 elements, two for 1 B). Every read of a pass — kind, g, m, v and p of each
// element — is issued before its first write. Read element by element, as until 2026-12-07,
// the kind's test and the writes of m and v (which the compiler did not move p's read above)
// made three trips to memory one after another per element, and a thread had one element's
// bytes in flight where the optimizer step's bandwidth needs several. Frozen elements, and
// those past n, are left unwritten.
KERNEL void adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                      float* __restrict__ v, const unsigned char* __restrict__ kind, long long n,
                      float step_size, float beta1, float beta2, float eps, float bc2_sqrt,
                      float decay, float grad_scale, int bf16_moments) {
    const long long stride = (long long)gridDim.x * blockDim.x;
#pragma unroll 1
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += ADAMW_UNROLL * stride) {
        unsigned char k[ADAMW_UNROLL];
        float gi[ADAMW_UNROLL], mi[ADAMW_UNROLL], vi[ADAMW_UNROLL], pi[ADAMW_UNROLL];
#pragma unroll
        for (int u = 0; u < ADAMW_UNROLL; ++u) {
            const long long e = i + u * stride;
            const bool in = e < n;
            k[u] = in ? kind[e] : (unsigned char)2;
            gi[u] = in ? g[e] : 0.0f;
            mi[u] = in ? m[e] : 0.0f;
            vi[u] = in ? v[e] : 0.0f;
            pi[u] = in ? p[e] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < ADAMW_UNROLL; ++u) {
            adamw_one(gi[u], mi[u], vi[u], pi[u], k[u], step_size, beta1, beta2, eps, bc2_sqrt,
                      decay, grad_scale, bf16_moments, &mi[u], &vi[u], &pi[u]);
        }
#pragma unroll
        for (int u = 0; u < ADAMW_UNROLL; ++u) {
            if (k[u] == 2) continue;
            const long long e = i + u * stride;
            m[e] = mi[u];
            v[e] = vi[u];
            p[e] = pi[u];
        }
    }
}

#define SQ_LANES 256

// grid (segments), block (256), dynamic shared 0; seg [segments, 2] = (start, end).
KERNEL void sum_squares_f32(const float* __restrict__ x, const long long* __restrict__ seg,
                            double* __restrict__ out) {
    __shared__ double lanes[SQ_LANES];
    const int j = threadIdx.x;
    const long long a = seg[2 * (long long)blockIdx.x], b = seg[2 * (long long)blockIdx.x + 1];
    double acc = 0.0;
    for (long long i = a + j; i < b; i += SQ_LANES) {
        const double xi = (double)x[i];
        acc += xi * xi;
    }
    lanes[j] = acc;
    __syncthreads();
    for (int h = SQ_LANES / 2; h > 0; h >>= 1) {
        if (j < h) lanes[j] += lanes[j + h];
        __syncthreads();
    }
    if (j == 0) out[blockIdx.x] = lanes[0];
}
