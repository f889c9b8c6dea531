// The strided copy of the Backend seam (kernels/src/backend/types.rs, `Strided`; reference
// kernels/src/cpu/strided.rs): over an index space of four dimensions n0..n3 (outermost
// first), dst[dst_at + Σ i_d·t_d] = src[src_at + Σ i_d·s_d], or += when accumulate != 0.
// A destination stride 0 over an extent > 1 sums over that dimension (the host asks for it
// only with accumulate): each thread owns one destination element and adds its terms one by
// one in index order (no atomics), so the bits are the CPU's. Source stride 0 broadcasts.
//
// grid (G, 1, 1) for any G ≥ 1 (a grid-stride loop over the written elements), block (256, 1,
// 1), no dynamic shared memory.

DEVICE bool strided_sums(long long n, long long t) { return t == 0 && n > 1; }

KERNEL void strided_copy_f32(const float* __restrict__ src, float* __restrict__ dst,
                             long long n0, long long n1, long long n2, long long n3,
                             long long s0, long long s1, long long s2, long long s3,
                             long long src_at, long long t0, long long t1, long long t2,
                             long long t3, long long dst_at, int accumulate) {
    const long long n[4] = {n0, n1, n2, n3};
    const long long s[4] = {s0, s1, s2, s3};
    const long long t[4] = {t0, t1, t2, t3};
    long long written = 1, summed = 1;
    for (int d = 0; d < 4; d++) {
        if (strided_sums(n[d], t[d])) summed *= n[d];
        else written *= n[d];
    }
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < written;
         p += (long long)gridDim.x * blockDim.x) {
        // p over the written dimensions, the innermost fastest.
        long long rest = p, from = src_at, to = dst_at;
        for (int d = 3; d >= 0; d--) {
            if (strided_sums(n[d], t[d])) continue;
            const long long i = rest % n[d];
            rest /= n[d];
            from += i * s[d];
            to += i * t[d];
        }
        if (summed == 1) {
            dst[to] = accumulate ? __fadd_rn(dst[to], src[from]) : src[from];
            continue;
        }
        float a = dst[to];
        for (long long q = 0; q < summed; q++) {
            long long r = q, at = from;
            for (int d = 3; d >= 0; d--) {
                if (!strided_sums(n[d], t[d])) continue;
                at += (r % n[d]) * s[d];
                r /= n[d];
            }
            a = __fadd_rn(a, src[at]);
        }
        dst[to] = a;
    }
}

// x[i] = v (grid-stride): Backend::fill.
KERNEL void fill_f32(float* __restrict__ x, long long n, float v) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        x[i] = v;
}

// x[i] = x[i] · s, one rounding (grid-stride): Backend::scale, bit for bit the CPU's.
KERNEL void scale_f32(float* __restrict__ x, long long n, float s) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

// Zeros `n` bytes at `p` (grid-stride): an output the backend hands a kernel by its host
// address (device memory over pageable host memory) starts as zeros, as a fresh device buffer
// of the copying path does, without the host touching its pages.
KERNEL void fill_zero_u8(unsigned char* __restrict__ p, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        p[i] = 0;
}
