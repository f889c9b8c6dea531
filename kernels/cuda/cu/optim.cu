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

// grid (min(ceil(n / 256), 65535)), block 256, dynamic shared 0; grid-stride, one thread per
// element.
KERNEL void adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                      float* __restrict__ v, const unsigned char* __restrict__ kind, long long n,
                      float step_size, float beta1, float beta2, float eps, float bc2_sqrt,
                      float decay, float grad_scale, int bf16_moments) {
    const float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const unsigned char k = kind[i];
        if (k == 2) continue;
        const float gi = g[i] * grad_scale;
        float mi = beta1 * m[i] + c1 * gi;
        float vi = beta2 * v[i] + c2 * gi * gi;
        if (bf16_moments) {
            mi = round_bf16(mi);
            vi = round_bf16(vi);
        }
        m[i] = mi;
        v[i] = vi;
        float pi = p[i];
        if (k == 1) pi *= decay;
        p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
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
