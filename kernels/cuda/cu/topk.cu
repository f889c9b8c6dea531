// Top-k selection (reference kernels/src/cpu/topk.rs) and the DeepSeek-V3 router (the seam's
// `Backend::route`, reference kernels/src/cpu/route.rs).
//
// The order is the reference's: larger value first, ties to the lower index, NaN after every
// number (NaNs among themselves by index). It is a strict total order, so the j-th element is
// the best one strictly after the (j−1)-th: each of the k rounds is one scan of the row by a
// warp and a warp reduction, with no state but the previous pick. k is small (8 of 256
// experts), so k scans cost less than sorting.

// Whether (a, ia) comes before (b, ib); an index < 0 is "none", after everything.
DEVICE bool tk_before(float a, int ia, float b, int ib) {
    if (ib < 0) return ia >= 0;
    if (ia < 0) return false;
    bool an = tm_isnan(a), bn = tm_isnan(b);
    if (an != bn) return bn;
    if (!an && a != b) return a > b;
    return ia < ib;
}

// The first element of v[0..n) after (pv, pi) in the order (pi < 0: the first overall), as
// (pv, pi); pi = -1 when there is none. The whole warp calls it and gets the result.
DEVICE void warp_next(const float* v, int n, float& pv, int& pi) {
    int lane = threadIdx.x % WARP;
    float bv = 0.0f;
    int bi = -1;
    for (int j = lane; j < n; j += WARP) {
        float x = v[j];
        if ((pi < 0 || tk_before(pv, pi, x, j)) && tk_before(x, j, bv, bi)) {
            bv = x;
            bi = j;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, bv, o);
        int oi = __shfl_xor_sync(FULL_MASK, bi, o);
        if (tk_before(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    pv = bv;
    pi = bi;
}

// out [rows, k]: the indices of each row's k first elements, in order; when k > n the
// entries past n are -1.
// Launch: grid (ceil(rows / 4)), block 128 (one warp per row), dynamic shared 0.
KERNEL void topk_f32(const float* __restrict__ scores, int rows, int n, int k,
                     int* __restrict__ out) {
    int warps = blockDim.x / WARP;
    int r = blockIdx.x * warps + threadIdx.x / WARP;
    if (r >= rows) return;  // the whole warp
    const float* v = scores + (long long)r * n;
    int* o = out + (long long)r * k;
    float pv = 0.0f;
    int pi = -1;
    for (int j = 0; j < k; j++) {
        if (j == 0 || pi >= 0) warp_next(v, n, pv, pi);  // pi < 0: the row is exhausted
        if (threadIdx.x % WARP == 0) o[j] = pi;
    }
}

// The router of one token per warp:
//   s = sigmoid(logits)                                  scores [tokens, experts]
//   c = s + bias                                         (for the choice only)
//   groups > 1: experts cut into groups of experts/groups; each group scored by the sum of
//     its top-2 c (top-1 for groups of one); the top `topk_groups` groups kept; the experts
//     of the other groups get c = −inf
//   idx = top-k of c                                     idx [tokens, k], in top-k order
//   weights = s[idx] / (Σ_idx s + 1e-20) · route_scale   (norm_topk; else s[idx] · route_scale)
// Sums add in the CPU router's order (Rust's float sum starts from −0.0), so the results are
// the trainer's bit for bit wherever expf is the CPU's.
// Launch: grid (ceil(tokens / 4)), block 128 (one warp per token), dynamic shared
// 4 · 16 · experts bytes (≤ 48 KiB up to 768 experts).
KERNEL void moe_route_f32(const float* __restrict__ logits, const float* __restrict__ bias,
                          int tokens, int experts, int groups, int topk_groups, int k,
                          float route_scale, int norm_topk, int* __restrict__ idx,
                          float* __restrict__ weights, float* __restrict__ scores) {
    DYNAMIC_SHARED(float, smem);
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    int t = blockIdx.x * (blockDim.x / WARP) + warp;
    if (t >= tokens) return;  // the whole warp
    float* s = smem + (long long)warp * 4 * experts;  // sigmoid scores
    float* c = s + experts;                           // biased, then group-masked, scores
    float* gs = c + experts;                          // group scores
    int* aux = (int*)(gs + experts);                  // chosen-group flags, then the picks
    const float* lg = logits + (long long)t * experts;
    for (int e = lane; e < experts; e += WARP) {
        float sv = 1.0f / (1.0f + expf(-lg[e]));
        s[e] = sv;
        c[e] = sv + bias[e];
        scores[(long long)t * experts + e] = sv;
    }
    __syncwarp();
    if (groups > 1) {
        int gsize = experts / groups;  // groups ≤ experts (the trainer's config: they divide)
        int nch = (experts + gsize - 1) / gsize;  // = groups when they divide the experts
        for (int g = lane; g < nch; g += WARP) {
            int lo = g * gsize, hi = tm_min(experts, lo + gsize);
            float v1 = 0.0f, v2 = 0.0f;
            int i1 = -1, i2 = -1;
            for (int e = lo; e < hi; e++) {
                float x = c[e];
                if (tk_before(x, e, v1, i1)) {
                    v2 = v1;
                    i2 = i1;
                    v1 = x;
                    i1 = e;
                } else if (tk_before(x, e, v2, i2)) {
                    v2 = x;
                    i2 = e;
                }
            }
            float sum = -0.0f + v1;
            if (i2 >= 0) sum += v2;
            gs[g] = sum;
            aux[g] = 0;
        }
        __syncwarp();
        float pv = 0.0f;
        int pi = -1;
        int kg = tm_min(topk_groups, nch);
        for (int j = 0; j < kg; j++) {
            warp_next(gs, nch, pv, pi);
            if (lane == 0) aux[pi] = 1;
        }
        __syncwarp();
        for (int e = lane; e < experts; e += WARP)
            if (!aux[e / gsize]) c[e] = -TM_INF;
        __syncwarp();
    }
    // aux is free again: lane 0 keeps the picks there.
    float pv = 0.0f;
    int pi = -1;
    float denom = -0.0f;
    for (int j = 0; j < k; j++) {
        if (j == 0 || pi >= 0) warp_next(c, experts, pv, pi);  // pi < 0 only when k > experts
        if (lane == 0) {
            if (j < experts) aux[j] = pi;
            idx[(long long)t * k + j] = pi;
            if (pi >= 0) denom += s[pi];
        }
    }
    if (lane == 0) {
        denom = norm_topk ? denom + 1e-20f : 1.0f;
        for (int j = 0; j < k; j++) {
            int e = j < experts ? aux[j] : -1;
            weights[(long long)t * k + j] = e >= 0 ? s[e] / denom * route_scale : 0.0f;
        }
    }
}

// acc + v(lane 0) + v(lane 1) + … + v(lane n − 1), added one at a time in lane order, each
// addition rounded once: a sequential sum over a run of n ≤ 32 terms held one per lane, as a
// loop over the run would add them. Every lane of the warp calls it with the same acc and n
// and gets the same result.
DEVICE double warp_fold_in_order(double acc, double v, int n) {
    for (int l = 0; l < n; l++) acc = __dadd_rn(acc, __shfl_sync(FULL_MASK, v, l));
    return acc;
}

// The router's backward, one warp per token (reference: kernels/src/cpu/route.rs,
// `route_bwd_row`): ds [tokens, experts] from the scores, the token's experts idx [tokens, k]
// and their gates' gradients dgates [tokens, k], through
//   norm:  z = Σ_j s[idx_j] + 1e-20;  dot = Σ_j dg_j·s[idx_j] / z;  ds[idx_j] += scale/z·(dg_j − dot)
//   else:  ds[idx_j] += scale·dg_j
//   balance (coef non-null, in double):  Z = Σ_i s_i;  c_i = coef[b, i] / denom (denom = S·B);
//          ds_i += (float)((c_i − Σ_i c_i·s_i/Z) / Z)        b = t / seq
//   ds_i ·= s_i·(1 − s_i)
// Every sum from −0.0 in index order, each operation rounded once: the CPU's bits. The lanes
// take the experts i ≡ lane (mod 32): the zeroing, the balance terms c_i·s_i/Z, the balance's
// update and the last product run across the warp; the two sums over the experts fold each
// run of 32 terms in lane order (warp_fold_in_order), so only their additions stay in one
// chain. The K gates (a handful) are lane 0's, in order, as a repeated expert adds twice.
// Launch: blocks of whole warps (warp_rows: 128 threads, 4 tokens a block; any other block
// traps, as the shuffles need all 32 lanes and the warps' numbering whole ones), grid-stride
// over the tokens by warps.
KERNEL void moe_route_bwd_f32(const float* __restrict__ scores, const int* __restrict__ idx,
                              const float* __restrict__ dgates, const double* __restrict__ coef,
                              long long tokens, int experts, int k, int seq, double denom,
                              float route_scale, int norm_topk, float* __restrict__ ds) {
    if (blockDim.x % WARP != 0) __trap();
    const int lane = threadIdx.x % WARP;
    const long long warps = (long long)gridDim.x * (blockDim.x / WARP);
    for (long long t = (long long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
         t < tokens; t += warps) {
        const float* s = scores + t * experts;
        float* d = ds + t * experts;
        for (int i = lane; i < experts; i += WARP) d[i] = 0.0f;
        __syncwarp();
        if (lane == 0) {
            const int* sel = idx + t * k;
            const float* dg = dgates + t * k;
            if (norm_topk) {
                float z = -0.0f;
                for (int j = 0; j < k; j++) z = __fadd_rn(z, s[sel[j]]);
                z = __fadd_rn(z, 1e-20f);
                float dot = -0.0f;
                for (int j = 0; j < k; j++) dot = __fadd_rn(dot, __fmul_rn(dg[j], s[sel[j]]));
                dot = __fdiv_rn(dot, z);
                const float a = __fdiv_rn(route_scale, z);
                for (int j = 0; j < k; j++)
                    d[sel[j]] = __fadd_rn(d[sel[j]], __fmul_rn(a, __fsub_rn(dg[j], dot)));
            } else {
                for (int j = 0; j < k; j++)
                    d[sel[j]] = __fadd_rn(d[sel[j]], __fmul_rn(route_scale, dg[j]));
            }
        }
        __syncwarp();  // lane 0's gate updates seen by the lanes that own those experts
        if (coef) {
            const double* cb = coef + (t / seq) * experts;
            double z = -0.0;
            for (int i0 = 0; i0 < experts; i0 += WARP) {
                const int i = i0 + lane;
                z = warp_fold_in_order(z, i < experts ? (double)s[i] : 0.0,
                                       tm_min(WARP, experts - i0));
            }
            double dot = -0.0;
            for (int i0 = 0; i0 < experts; i0 += WARP) {
                const int i = i0 + lane;
                const double v =
                    i < experts ? __ddiv_rn(__dmul_rn(__ddiv_rn(cb[i], denom), (double)s[i]), z)
                                : 0.0;
                dot = warp_fold_in_order(dot, v, tm_min(WARP, experts - i0));
            }
            for (int i = lane; i < experts; i += WARP) {
                const double g = __ddiv_rn(__dsub_rn(__ddiv_rn(cb[i], denom), dot), z);
                d[i] = __fadd_rn(d[i], __double2float_rn(g));
            }
        }
        for (int i = lane; i < experts; i += WARP)
            d[i] = __fmul_rn(d[i], __fmul_rn(s[i], __fsub_rn(1.0f, s[i])));
    }
}
