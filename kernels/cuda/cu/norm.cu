// RMSNorm over rows of width d: y = x · rstd · w, rstd = 1/sqrt(mean(x²) + eps).
// Reference: kernels/src/cpu/norm.rs. x, y, dy, dx: [rows, d]; w, dw: [d]; rstd: [rows].
// The forward and the input gradient take one block per row (a block reduction over the
// row); the weight gradient takes one thread per column, summing over the rows in row order,
// so it is deterministic and adds in the reference's order.

// Launch: grid (rows), block 256, dynamic shared 0.
KERNEL void rmsnorm_fwd_f32(const float* __restrict__ x, const float* __restrict__ w, float eps,
                            float* __restrict__ y, float* __restrict__ rstd, int rows, int d) {
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (long long)r * d;
    float* yr = y + (long long)r * d;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = xr[j];
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    float rs = 1.0f / sqrtf(ss / (float)d + eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    for (int j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * rs * w[j];
}

// dx (+)= rstd · (dy·w − x̂ · mean(dy·w·x̂)), x̂ = x·rstd; accumulate != 0 adds into dx.
// Launch: grid (rows), block 256, dynamic shared 0.
KERNEL void rmsnorm_bwd_input_f32(const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ rstd, const float* __restrict__ dy,
                                  float* __restrict__ dx, int rows, int d, int accumulate) {
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    long long base = (long long)r * d;
    const float* xr = x + base;
    const float* dyr = dy + base;
    float* dxr = dx + base;
    float rs = rstd[r];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) dot += dyr[j] * w[j] * xr[j] * rs;
    dot = block_sum(dot, scratch);
    float mean = dot / (float)d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float g = rs * (dyr[j] * w[j] - xr[j] * rs * mean);
        dxr[j] = accumulate ? dxr[j] + g : g;
    }
}

// dw += Σ_rows dy · x · rstd, one thread per column, rows added in order (no atomics).
// Launch: grid (ceil(d / 256)), block 256, dynamic shared 0.
KERNEL void rmsnorm_bwd_weight_f32(const float* __restrict__ x, const float* __restrict__ rstd,
                                   const float* __restrict__ dy, float* __restrict__ dw, int rows,
                                   int d) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float acc = dw[j];
    long long at = j;
#pragma unroll 4
    for (int r = 0; r < rows; r++, at += d) acc += dy[at] * x[at] * rstd[r];
    dw[j] = acc;
}
