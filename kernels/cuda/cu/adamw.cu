// One AdamW step over a parameter buffer, exactly the update of trainer/src/optim.rs
// (`AdamW::step`), with the step's scalars computed by the launcher in f64 and rounded to f32
// as optim.rs does:
//   step_size = (lr / (1 − β₁ᵗ)) as f32
//   bc2_sqrt  = sqrt(1 − β₂ᵗ) as f32
//   decay     = (1 − lr · weight_decay) as f32
//   beta1, beta2, eps, grad_scale (the clip scale) = their f64 values as f32
// and per element
//   g = grad · grad_scale
//   m = β₁·m + (1 − β₁)·g ;  v = β₂·v + (1 − β₂)·g·g      (rounded to BF16 if bf16_moments)
//   p = p · decay                                        (decayed != 0: linear weights only)
//   p = p − step_size · m / (sqrt(v) / bc2_sqrt + eps)
// Frozen buffers (kind 2 in optim.rs) are not passed to the kernel at all.
// Grid-stride, one thread per element.

// Launch: grid (min(ceil(n / 256), 65535)), block 256, dynamic shared 0.
KERNEL void adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                      float* __restrict__ v, long long n, float step_size, float beta1,
                      float beta2, float eps, float bc2_sqrt, float decay, float grad_scale,
                      int decayed, int bf16_moments) {
    float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i] * grad_scale;
        float mi = beta1 * m[i] + c1 * gi;
        float vi = beta2 * v[i] + c2 * gi * gi;
        if (bf16_moments) {
            mi = round_bf16(mi);
            vi = round_bf16(vi);
        }
        m[i] = mi;
        v[i] = vi;
        float pi = p[i];
        if (decayed) pi *= decay;
        p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}
