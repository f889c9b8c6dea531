// SwiGLU: h = silu(g) ⊙ u, silu(g) = g·σ(g); g, u, h, dh, dg, du: [n] (rows × f flattened).
// Reference: kernels/src/cpu/swiglu.rs. One thread per element, grid-stride.

DEVICE float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

KERNEL void swiglu_fwd_f32(const float* __restrict__ g, const float* __restrict__ u,
                           float* __restrict__ h, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        h[i] = gi * sigmoidf_(gi) * u[i];
    }
}

KERNEL void swiglu_bwd_f32(const float* __restrict__ g, const float* __restrict__ u,
                           const float* __restrict__ dh, float* __restrict__ dg,
                           float* __restrict__ du, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i], s = sigmoidf_(gi), d = dh[i];
        dg[i] = d * u[i] * s * (1.0f + gi * (1.0f - s));
        du[i] = d * (gi * s);
    }
}
