// The token permutation of a MoE layer (trainer/src/moe/mod.rs, dispatch.rs on one process).
//
// The router picks k experts per token: idx [tokens, k]. One row travels per (token, slot);
// the rows are ordered by expert, then token, then slot — the order in which the trainer
// pushes (token, slot) onto each expert's list and flattens the lists (its send order). So
// expert e's rows are offsets[e] .. offsets[e+1] of the permuted matrix, in token order.
//
//   moe_offsets        idx → counts, offsets, src_rows (the token of each row) and slot_rows
//                      (the row of each (token, slot)); a stable counting sort, integers only,
//                      no atomics: deterministic.
//   moe_permute_f32    xp[r] = x[src_rows[r]] (the dispatch; also the backward of the combine
//                      once the rows are scaled).
//   moe_unpermute_f32  y[t] (+)= Σ_j weights[t, j] · yp[slot_rows[t, j]], the combine, as a
//                      gather per token (no atomics, deterministic): the terms are added in
//                      increasing row order, i.e. in expert order, each as a rounded product
//                      then a rounded sum (no FMA) — the trainer's `out[t] += g · y_r` over its
//                      send order, bit for bit. weights = null: weight 1 (the backward of the
//                      dispatch, dx[t] += Σ dx_r).

// Sum over the block of an int (blockDim.x a multiple of 32); every thread gets the result.
DEVICE int moe_block_sum(int v, int* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Inclusive scan over the lanes of a warp.
DEVICE int moe_warp_scan(int v) {
    const int lane = threadIdx.x % WARP;
    for (int o = 1; o < WARP; o <<= 1) {
        const int u = __shfl_sync(FULL_MASK, v, lane >= o ? lane - o : lane);
        if (lane >= o) v += u;
    }
    return v;
}

// Exclusive scan over the block's threads in threadIdx.x order; *total gets the block's sum.
DEVICE int moe_block_scan(int v, int* scratch, int* total) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    const int incl = moe_warp_scan(v);
    __syncthreads();
    if (lane == WARP - 1) scratch[warp] = incl;
    __syncthreads();
    const int w = moe_warp_scan(lane < warps ? scratch[lane] : 0);  // inclusive over warps
    const int before = __shfl_sync(FULL_MASK, w, warp > 0 ? warp - 1 : 0);
    *total = __shfl_sync(FULL_MASK, w, warps - 1);
    return (warp > 0 ? before : 0) + incl - v;
}

#define MOE_ITEMS 4  // consecutive entries per thread in the placement pass

// grid (experts, 1, 1), block (256, 1, 1) (any multiple of 32 up to 1024), no dynamic shared
// memory. n = tokens·k < 2^31. Block e reads idx twice: it counts the entries of experts < e
// (its offset) and of e, then places e's entries in entry order (t·k + j) through a block
// scan. Writes counts[e] = rows of expert e, offsets[e] (offsets[0] = 0, offsets[experts] =
// rows by the last block), src_rows[offsets[e] + i] = the token of e's i-th entry, and
// slot_rows[t·k + j] = its row. Entries outside 0..experts are left out (slot_rows −1, written
// by block 0). Cost: 2·experts·n int reads, from L2 (n = 32768, 256 experts: 64 MB of L2
// traffic, some 10 µs on an H100).
KERNEL void moe_offsets(const int* __restrict__ idx, int tokens, int k, int experts,
                        int* __restrict__ counts, int* __restrict__ offsets,
                        int* __restrict__ src_rows, int* __restrict__ slot_rows) {
    __shared__ int scratch[32];
    const int e = blockIdx.x, n = tokens * k;
    if (e >= experts) return;
    int lt = 0, eq = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int x = idx[i];
        lt += x >= 0 && x < e;
        eq += x == e;
    }
    lt = moe_block_sum(lt, scratch);
    eq = moe_block_sum(eq, scratch);
    if (threadIdx.x == 0) {
        counts[e] = eq;
        offsets[e] = lt;
        if (e == experts - 1) offsets[experts] = lt + eq;
    }
    int base = lt;
    const int step = blockDim.x * MOE_ITEMS;
    for (int c0 = 0; c0 < n && base < lt + eq; c0 += step) {
        const int first = c0 + threadIdx.x * MOE_ITEMS;
        int flags = 0, cnt = 0;
#pragma unroll
        for (int u = 0; u < MOE_ITEMS; u++) {
            const int i = first + u;
            if (i < n) {
                const int x = idx[i];
                if (x == e) {
                    flags |= 1 << u;
                    cnt++;
                }
            }
        }
        int total;
        int pos = base + moe_block_scan(cnt, scratch, &total);
#pragma unroll
        for (int u = 0; u < MOE_ITEMS; u++) {
            if (flags & (1 << u)) {
                const int i = first + u;
                src_rows[pos] = i / k;
                slot_rows[i] = pos;
                pos++;
            }
        }
        base += total;
    }
    // Block 0 marks the entries that belong to no expert.
    if (e == 0) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const int x = idx[i];
            if (x < 0 || x >= experts) slot_rows[i] = -1;
        }
    }
}

// grid (G, 1, 1) for any G ≥ 1 (a grid-stride loop over rows; G = rows is best up to 2^31 − 1),
// block (256, 1, 1) (any multiple of 32), no dynamic shared memory. xp [rows, d],
// x [tokens, d]. 128-bit copies when d % 4 == 0 and x, xp are 16-byte aligned.
KERNEL void moe_permute_f32(const float* __restrict__ x, const int* __restrict__ src_rows,
                            float* __restrict__ xp, long long rows, int d) {
    const bool vec = (d & 3) == 0 && tm_aligned16(x) && tm_aligned16(xp);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* src = x + (long long)src_rows[r] * d;
        float* dst = xp + r * d;
        if (vec) {
            const tm_float4* s4 = reinterpret_cast<const tm_float4*>(src);
            tm_float4* d4 = reinterpret_cast<tm_float4*>(dst);
            for (int c = threadIdx.x; c < d / 4; c += blockDim.x) d4[c] = s4[c];
        } else {
            for (int c = threadIdx.x; c < d; c += blockDim.x) dst[c] = src[c];
        }
    }
}

// grid (G, 1, 1) for any G ≥ 1 (a grid-stride loop over tokens), block (256, 1, 1) (a multiple
// of 32, at least k, at most 1024), no dynamic shared memory. yp [rows, d], slot_rows and
// weights [tokens, k] (weights may be null: all 1), y [tokens, d]; accumulate != 0: added to
// y (the shared expert's output), else y is overwritten. Slots with row −1 are skipped.
KERNEL void moe_unpermute_f32(const float* __restrict__ yp, const int* __restrict__ slot_rows,
                              const float* __restrict__ weights, float* __restrict__ y,
                              long long tokens, int k, int d, int accumulate) {
    __shared__ long long srow[1024];
    __shared__ float swt[1024];
    __shared__ int snv;
    const bool vec = (d & 3) == 0 && tm_aligned16(yp) && tm_aligned16(y);
    for (long long t = blockIdx.x; t < tokens; t += gridDim.x) {
        // The token's rows in increasing order (= expert order): slot j goes to its rank.
        if ((int)threadIdx.x < k) {
            const int* rows = slot_rows + t * k;
            const int r = rows[threadIdx.x];
            if (r >= 0) {
                int rank = 0;
                for (int u = 0; u < k; u++) rank += rows[u] >= 0 && rows[u] < r;
                srow[rank] = (long long)r * d;
                swt[rank] = weights ? weights[t * k + threadIdx.x] : 1.0f;
            }
        }
        if (threadIdx.x == 0) {
            int nv = 0;
            for (int u = 0; u < k; u++) nv += slot_rows[t * k + u] >= 0;
            snv = nv;
        }
        __syncthreads();
        const int nv = snv;
        float* out = y + t * d;
        if (vec) {
            tm_float4* o4 = reinterpret_cast<tm_float4*>(out);
            for (int c = threadIdx.x; c < d / 4; c += blockDim.x) {
                tm_float4 a = {0.0f, 0.0f, 0.0f, 0.0f};
                if (accumulate) a = o4[c];
                for (int u = 0; u < nv; u++) {
                    const tm_float4 v = reinterpret_cast<const tm_float4*>(yp + srow[u])[c];
                    const float g = swt[u];
                    a.x = __fadd_rn(a.x, __fmul_rn(g, v.x));
                    a.y = __fadd_rn(a.y, __fmul_rn(g, v.y));
                    a.z = __fadd_rn(a.z, __fmul_rn(g, v.z));
                    a.w = __fadd_rn(a.w, __fmul_rn(g, v.w));
                }
                o4[c] = a;
            }
        } else {
            for (int c = threadIdx.x; c < d; c += blockDim.x) {
                float a = accumulate ? out[c] : 0.0f;
                for (int u = 0; u < nv; u++) a = __fadd_rn(a, __fmul_rn(swt[u], yp[srow[u] + c]));
                out[c] = a;
            }
        }
        __syncthreads();  // srow / swt / snv are rewritten for the next token
    }
}
