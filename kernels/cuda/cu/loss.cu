// Softmax cross-entropy over rows of logits [rows, vocab] with targets [rows] (reference
// kernels/src/cpu/loss.rs): loss = lse − logits[target], lse = log Σ exp(logits), and the
// gradient dlogits = exp(logits − lse) · g[row] − onehot(target) · g[row], in place. A target
// of 0xffffffff (IGNORE) gives loss 0 (its lse is still computed) and a zero gradient row.
// One block per row; the log-sum-exp is one pass over the row (an online max and rescaled sum
// per thread, then combined over the block).
//
// Non-finite logits as the reference: a NaN anywhere, an infinite maximum (+inf) or a row
// that is all −inf gives lse = NaN. A target that is neither IGNORE nor < vocab (the
// reference panics) gives loss NaN and no one-hot term.

#define CE_IGNORE 0xffffffffu

// Adds x to a running (max m, Σ exp(· − m) s). NaN never becomes the max but makes s NaN.
DEVICE void lse_push(float x, float& m, float& s) {
    if (x > m) {
        s = s * expf(m - x) + 1.0f;
        m = x;
    } else if (x != -TM_INF) {
        s += expf(x - m);
    }
}

// Merges the running pair (m2, s2) into (m, s).
DEVICE void lse_merge(float& m, float& s, float m2, float s2) {
    float mm = fmaxf(m, m2);
    if (mm == -TM_INF) {  // both without a finite value so far: keep a NaN of either
        s += s2;
        return;
    }
    s = s * expf(m - mm) + s2 * expf(m2 - mm);
    m = mm;
}

// The log-sum-exp of row[0..vocab), every thread of the block gets it. sm, ss: 32 floats of
// shared memory each.
DEVICE float block_row_lse(const float* __restrict__ row, int vocab, float* sm, float* ss) {
    float m = -TM_INF, s = 0.0f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) lse_push(row[j], m, s);
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(FULL_MASK, m, o);
        float s2 = __shfl_xor_sync(FULL_MASK, s, o);
        lse_merge(m, s, m2, s2);
    }
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    __syncthreads();
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    m = lane < warps ? sm[lane] : -TM_INF;
    s = lane < warps ? ss[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(FULL_MASK, m, o);
        float s2 = __shfl_xor_sync(FULL_MASK, s, o);
        lse_merge(m, s, m2, s2);
    }
    if (vocab == 0) return -TM_INF;                   // the reference: −inf + ln 0
    if (!tm_isfinite(m)) return TM_NAN;               // +inf maximum, or every logit −inf / NaN
    return m + logf(s);                               // s is NaN when a logit is NaN
}

// One row's gradient in place, from its lse; t is the row's target.
DEVICE void ce_grad_row(float* __restrict__ row, unsigned int t, float lse, float g, int vocab) {
    if (t == CE_IGNORE) {
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) row[j] = 0.0f;
        return;
    }
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float v = expf(row[j] - lse) * g;
        if ((unsigned int)j == t) v -= g;
        row[j] = v;
    }
}

// losses, lse: [rows].
// Launch: grid (rows), block 256, dynamic shared 0.
KERNEL void cross_entropy_fwd_f32(const float* __restrict__ logits,
                                  const unsigned int* __restrict__ targets, int vocab,
                                  float* __restrict__ losses, float* __restrict__ lse, int rows) {
    __shared__ float sm[32], ss[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* row = logits + (long long)r * vocab;
    float l = block_row_lse(row, vocab, sm, ss);
    if (threadIdx.x == 0) {
        unsigned int t = targets[r];
        lse[r] = l;
        losses[r] = t == CE_IGNORE ? 0.0f : (t < (unsigned int)vocab ? l - row[t] : TM_NAN);
    }
}

// In place: logits become dlogits; lse, g: [rows].
// Launch: grid (rows), block 256, dynamic shared 0.
KERNEL void cross_entropy_bwd_f32(float* __restrict__ logits,
                                  const unsigned int* __restrict__ targets,
                                  const float* __restrict__ lse, const float* __restrict__ g,
                                  int vocab, int rows) {
    int r = blockIdx.x;
    if (r >= rows) return;
    ce_grad_row(logits + (long long)r * vocab, targets[r], lse[r], g[r], vocab);
}

// Forward and backward of a row in one block: losses and lse written, logits turned into
// dlogits (one read pass for the lse, one read-and-write pass for the gradient).
// Launch: grid (rows), block 256, dynamic shared 0.
KERNEL void cross_entropy_fused_f32(float* __restrict__ logits,
                                    const unsigned int* __restrict__ targets,
                                    const float* __restrict__ g, int vocab,
                                    float* __restrict__ losses, float* __restrict__ lse, int rows) {
    __shared__ float sm[32], ss[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    float* row = logits + (long long)r * vocab;
    unsigned int t = targets[r];
    // One test guards both the read of the target's logit and its use: a target outside the
    // vocabulary reads nothing and gives a NaN loss.
    const bool inside = t < (unsigned int)vocab;
    // The target's logit, read before the block reduction (whose barriers order it before
    // any thread overwrites the row).
    float xt = 0.0f;
    if (threadIdx.x == 0 && inside) xt = row[t];
    float l = block_row_lse(row, vocab, sm, ss);
    if (threadIdx.x == 0) {
        lse[r] = l;
        losses[r] = t == CE_IGNORE ? 0.0f : (inside ? l - xt : TM_NAN);
    }
    ce_grad_row(row, t, l, g[r], vocab);
}
