// Rows by index, the MoE layer's dispatch and combine as Backend operations (reference
// kernels/src/cpu/rows.rs). Rows are d floats; scale may be null (no multiply).
//
//   gather_rows_f32       dst[i] = src[rows[i]] (· scale[i])            dst [n, d]
//   scatter_add_rows_f32  dst[rows[i]] += src[i] (· scale[i])           src [n, d]; the host
//                         checks that the rows are distinct, so every element gets one term:
//                         no atomics, the CPU's bits (a rounded product, then a rounded sum)
//
// grid (G, 1, 1) for any G ≥ 1 (a grid-stride loop over rows), block (256, 1, 1), no dynamic
// shared memory.

KERNEL void gather_rows_f32(const float* __restrict__ src, const unsigned int* __restrict__ rows,
                            const float* __restrict__ scale, float* __restrict__ dst,
                            long long n, int d) {
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        const float* from = src + (long long)rows[i] * d;
        float* to = dst + i * d;
        if (scale) {
            const float g = scale[i];
            for (int c = threadIdx.x; c < d; c += blockDim.x) to[c] = __fmul_rn(g, from[c]);
        } else {
            for (int c = threadIdx.x; c < d; c += blockDim.x) to[c] = from[c];
        }
    }
}

KERNEL void scatter_add_rows_f32(const float* __restrict__ src,
                                 const unsigned int* __restrict__ rows,
                                 const float* __restrict__ scale, float* __restrict__ dst,
                                 long long n, int d) {
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        const float* from = src + i * d;
        float* to = dst + (long long)rows[i] * d;
        if (scale) {
            const float g = scale[i];
            for (int c = threadIdx.x; c < d; c += blockDim.x)
                to[c] = __fadd_rn(to[c], __fmul_rn(g, from[c]));
        } else {
            for (int c = threadIdx.x; c < d; c += blockDim.x) to[c] = __fadd_rn(to[c], from[c]);
        }
    }
}

// out[i] = Σ_c table[rows[i], c] · src[i, c], the terms added in order from c = 0 (a rounded
// product, then a rounded sum: the CPU's bits), one thread per row. grid (G, 1, 1) for any
// G ≥ 1 (grid-stride over rows), block (256, 1, 1).
KERNEL void dot_rows_f32(const float* __restrict__ table, const unsigned int* __restrict__ rows,
                         const float* __restrict__ src, float* __restrict__ out, long long n,
                         int d) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float* a = table + (long long)rows[i] * d;
        const float* b = src + i * d;
        float s = 0.0f;
        for (int c = 0; c < d; c++) s = __fadd_rn(s, __fmul_rn(a[c], b[c]));
        out[i] = s;
    }
}
