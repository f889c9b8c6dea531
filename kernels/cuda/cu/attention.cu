// Causal softmax attention, flash-attention style, in fp32 on the CUDA cores.
//
// Layout: q, k [BH, S, d_qk], v [BH, S, d_v], o [BH, S, d_v], lse [BH, S] (the natural
// log-sum-exp of row i's scaled scores s_ij = scale · q_i·k_j, j ≤ i), delta [BH, S].
// Reference: kernels/src/cpu/attention.rs (attention_fwd_ref / attention_bwd_ref).
//
// Forward: one block per 64 query rows; it walks the key/value rows 0..min(S, q0 + 64) in
// tiles of 32 with the online softmax (running row max m and sum l; O rescaled by
// exp(m_old − m_new) before each tile is added). Backward (no atomics, every output written by
// exactly one thread, dq/dk/dv overwritten as the reference does):
//   attention_bwd_pre_f32   D_i = dO_i · O_i
//   attention_bwd_dkdv_f32  one block per 64 keys, looping over the query tiles (32 rows) at
//                           and below the diagonal: P = exp(s − lse), dV += Pᵀ dO,
//                           dP = dO Vᵀ, dS = P ⊙ (dP − D) · scale, dK += dSᵀ Q
//   attention_bwd_dq_f32    one block per 64 queries, looping over the key tiles (32 rows)
//                           up to the diagonal: dQ += dS K
//
// Every block has 256 threads: thread (ty, tx) = (tid / 16, tid % 16) owns the 4 rows
// ty·4 .. ty·4+3 of the block's 64, and of a 64 × 32 score tile the columns tx and tx + 16; of
// an output row it owns the columns tx·4 + 64·g .. +3 (g < 4), so d_qk and d_v are at most
// 256. Tiles are staged in shared memory with a row stride LD(d) = 32·ceil(d/32) + 4 floats
// (≡ 4 mod 32 banks: the 128-bit loads of 8 consecutive rows hit distinct banks), columns
// d .. round4(d) zero-filled and rows ≥ S zero-filled. The blocks with the most tiles are
// scheduled first (the causal triangle).
//
// Attention reset (packed documents that must not see each other): with heads > 0, query i of
// BH row h attends to keys first[h / heads][i] ..= i only; every mask above adds that bound,
// and in the forward the tiles that lie wholly before a row's first key add nothing to it
// (m stays −∞, nothing is added). heads == 0: plain causal attention, `first` not read.
//
// Shared memory per block (bytes), LDQ = LD(d_qk), LDV = LD(d_v):
//   fwd   4 · (96·LDQ + 32·LDV + 2304)              d_qk = 192, d_v = 128: 101376 (2 blocks/SM)
//   dq    4 · (96·(LDQ + LDV) + 2432)                            192 / 128: 135680
//   dkdv  4 · (96·(LDQ + LDV) + 4672)                            192 / 128: 144640
// At d_qk = d_v = 256 the largest is 218368 (dkdv), within Hopper's 227 KB: the launcher sets
// cudaFuncAttributeMaxDynamicSharedMemorySize when a formula exceeds 48 KB. (On sm_80, 163 KB:
// d_qk + d_v ≤ 384 fits every kernel.) Kernels return at once for d outside 1..256.

#define ATT_BQ 64      // rows of the block: queries (fwd, dq) or keys (dkdv)
#define ATT_BK 32      // rows of a streamed tile: keys (fwd, dq) or queries (dkdv)
#define ATT_LDP 36     // row stride of the 64 × 32 probability / dS tiles
#define ATT_MAXD 256

// Row stride (floats) of a shared tile of head dim d.
DEVICE int att_ld(int d) { return ((d + 31) / 32) * 32 + 4; }

DEVICE int att_round4(int d) { return (d + 3) & ~3; }

// Loads rows row0 .. row0 + rows of the [seq, d] matrix g into sm (row stride ld), zero
// filling rows ≥ seq and the columns d .. round4(d). All threads of the block take part.
DEVICE void att_load(float* sm, int ld, const float* g, int row0, int rows, int seq, int d) {
    const int quads = (d + 3) >> 2;
    const bool vec = (d & 3) == 0 && tm_aligned16(g);
    for (int i = threadIdx.x; i < rows * quads; i += blockDim.x) {
        const int r = i / quads, c = (i - r * quads) * 4, gr = row0 + r;
        tm_float4 v = {0.0f, 0.0f, 0.0f, 0.0f};
        if (gr < seq) {
            const float* p = g + (long long)gr * d + c;
            if (vec) {
                v = *reinterpret_cast<const tm_float4*>(p);
            } else {
                v.x = p[0];
                if (c + 1 < d) v.y = p[1];
                if (c + 2 < d) v.z = p[2];
                if (c + 3 < d) v.w = p[3];
            }
        }
        *reinterpret_cast<tm_float4*>(sm + r * ld + c) = v;
    }
}

// Loads row0 .. row0 + rows of the vector g (length seq) into sm, zero past seq.
DEVICE void att_load_vec(float* sm, const float* g, int row0, int rows, int seq) {
    for (int i = threadIdx.x; i < rows; i += blockDim.x) sm[i] = row0 + i < seq ? g[row0 + i] : 0.0f;
}

// s[i][j] = Σ_{c < d4} A[ty·4 + i][c] · B[tx + 16·j][c]: a 4 × 2 piece of the 64 × 32 tile
// A Bᵀ (A: 64 rows, B: 32 rows, both of stride ld, d4 a multiple of 4).
DEVICE void att_dot(const float* A, const float* B, int ld, int d4, int ty, int tx,
                    float (&s)[4][2]) {
#pragma unroll
    for (int i = 0; i < 4; i++) s[i][0] = s[i][1] = 0.0f;
    const float* a0 = A + ty * 4 * ld;
    const float* b0 = B + tx * ld;
    for (int c = 0; c < d4; c += 4) {
        tm_float4 a[4], b[2];
#pragma unroll
        for (int i = 0; i < 4; i++) a[i] = *reinterpret_cast<const tm_float4*>(a0 + i * ld + c);
#pragma unroll
        for (int j = 0; j < 2; j++) b[j] = *reinterpret_cast<const tm_float4*>(b0 + 16 * j * ld + c);
#pragma unroll
        for (int i = 0; i < 4; i++) {
#pragma unroll
            for (int j = 0; j < 2; j++) {
                s[i][j] = fmaf(a[i].x, b[j].x, s[i][j]);
                s[i][j] = fmaf(a[i].y, b[j].y, s[i][j]);
                s[i][j] = fmaf(a[i].z, b[j].z, s[i][j]);
                s[i][j] = fmaf(a[i].w, b[j].w, s[i][j]);
            }
        }
    }
}

// acc[i][g][e] += Σ_{kk < 32} P[ty·4 + i][kk] · B[kk][tx·4 + 64·g + e] over the columns
// < d4: the thread's piece of (64 × 32 tile P, stride ATT_LDP) · (B: 32 rows, stride ld).
template <int G>
DEVICE void att_acc(float (&acc)[4][G][4], const float* P, const float* B, int ld, int d4,
                    int ty, int tx) {
    for (int kk = 0; kk < ATT_BK; kk += 4) {
        float p[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            tm_float4 t = *reinterpret_cast<const tm_float4*>(P + (ty * 4 + i) * ATT_LDP + kk);
            p[i][0] = t.x;
            p[i][1] = t.y;
            p[i][2] = t.z;
            p[i][3] = t.w;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const float* brow = B + (kk + u) * ld + tx * 4;
#pragma unroll
            for (int g = 0; g < G; g++) {
                if (tx * 4 + 64 * g < d4) {
                    tm_float4 b = *reinterpret_cast<const tm_float4*>(brow + 64 * g);
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        acc[i][g][0] = fmaf(p[i][u], b.x, acc[i][g][0]);
                        acc[i][g][1] = fmaf(p[i][u], b.y, acc[i][g][1]);
                        acc[i][g][2] = fmaf(p[i][u], b.z, acc[i][g][2]);
                        acc[i][g][3] = fmaf(p[i][u], b.w, acc[i][g][3]);
                    }
                }
            }
        }
    }
}

// Writes the thread's rows of a 64-row block (row0 = the block's first row of [seq, d] out):
// out[row][c] = acc[i][g][e] · mul[i] for rows < seq and columns < d.
template <int G>
DEVICE void att_store(float* out, const float (&acc)[4][G][4], const float (&mul)[4], int row0,
                      int seq, int d, int ty, int tx) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int row = row0 + ty * 4 + i;
        if (row >= seq) continue;
        float* o = out + (long long)row * d;
#pragma unroll
        for (int g = 0; g < G; g++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = tx * 4 + 64 * g + e;
                if (c < d) o[c] = acc[i][g][e] * mul[i];
            }
        }
    }
}

// Sum / max over the 16 lanes of a half warp (all 32 lanes call it).
DEVICE float att_half_sum(float v) {
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
DEVICE float att_half_max(float v) {
    for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// The first key query `row` may attend to: 0 without a reset, first[row] with one (rows past
// the sequence, padding of the last tile, take 0).
DEVICE int att_first(const unsigned* first, int row, int seq) {
    return first != nullptr && row < seq ? (int)first[row] : 0;
}

// The first-key row of BH row h: `first` holds [samples][seq], `heads` rows of BH per sample;
// heads == 0 means no reset.
DEVICE const unsigned* att_first_row(const unsigned* first, int heads, long long h, int seq) {
    return heads > 0 ? first + (h / heads) * seq : nullptr;
}

template <int G>  // G = ceil(d_v / 64)
DEVICE void att_fwd_body(const float* q, const float* k, const float* v, float* o, float* lse,
                         const unsigned* first, int seq, int d_qk, int d_v, float scale) {
    DYNAMIC_SHARED(float, sm);
    const int ldq = att_ld(d_qk), ldv = att_ld(d_v);
    const int dq4 = att_round4(d_qk), dv4 = att_round4(d_v);
    float* Qs = sm;                   // [64][ldq]
    float* Ks = Qs + ATT_BQ * ldq;    // [32][ldq]
    float* Vs = Ks + ATT_BK * ldq;    // [32][ldv]
    float* Ps = Vs + ATT_BK * ldv;    // [64][ATT_LDP]
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * ATT_BQ;

    att_load(Qs, ldq, q, q0, ATT_BQ, seq, d_qk);
    float acc[4][G][4];
    float m[4], l[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -TM_INF;
        l[i] = 0.0f;
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][g][e] = 0.0f;
    }
    const int kend = tm_min(seq, q0 + ATT_BQ);
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        att_load(Ks, ldq, k, k0, ATT_BK, seq, d_qk);
        att_load(Vs, ldv, v, k0, ATT_BK, seq, d_v);
        __syncthreads();
        float s[4][2];
        att_dot(Qs, Ks, ldq, dq4, ty, tx, s);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int row = q0 + ty * 4 + i;
            const int lo = att_first(first, row, seq);
            float mt = -TM_INF;
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const int key = k0 + tx + 16 * j;
                s[i][j] = lo <= key && key <= row && key < seq ? s[i][j] * scale : -TM_INF;
                mt = fmaxf(mt, s[i][j]);
            }
            mt = att_half_max(mt);
            // A row's keys may all lie past this tile (its document starts later): m stays
            // −∞ and nothing is added until its first key.
            const float mn = fmaxf(m[i], mt);
            const bool none = mn == -TM_INF;
            const float alpha = none ? 1.0f : expf(m[i] - mn);
            m[i] = mn;
            const float p0 = none ? 0.0f : expf(s[i][0] - mn);
            const float p1 = none ? 0.0f : expf(s[i][1] - mn);
            l[i] = l[i] * alpha + (p0 + p1);
            Ps[(ty * 4 + i) * ATT_LDP + tx] = p0;
            Ps[(ty * 4 + i) * ATT_LDP + tx + 16] = p1;
#pragma unroll
            for (int g = 0; g < G; g++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[i][g][e] *= alpha;
        }
        __syncthreads();
        att_acc<G>(acc, Ps, Vs, ldv, dv4, ty, tx);
        __syncthreads();
    }
    float inv[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float z = att_half_sum(l[i]);
        inv[i] = 1.0f / z;
        const int row = q0 + ty * 4 + i;
        if (tx == 0 && row < seq) lse[row] = m[i] + logf(z);
    }
    att_store<G>(o, acc, inv, q0, seq, d_v, ty, tx);
}

// grid (ceil(seq / 64), bh, 1), block (256, 1, 1),
// dynamic shared memory 4 · (96·LD(d_qk) + 32·LD(d_v) + 2304) bytes, LD(d) = 32·ceil(d/32) + 4.
// first [bh / heads][seq]: each query's first key (attention reset), read when heads > 0.
// (__launch_bounds__(256, 2): at most 128 registers, so that two blocks share an SM.)
KERNEL void __launch_bounds__(256, 2)
    attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k,
                      const float* __restrict__ v, float* __restrict__ o,
                      float* __restrict__ lse, const unsigned* __restrict__ first, int heads,
                      int bh, int seq, int d_qk, int d_v, float scale) {
    if (d_qk < 1 || d_v < 1 || d_qk > ATT_MAXD || d_v > ATT_MAXD || (int)blockIdx.y >= bh) return;
    const long long h = blockIdx.y;
    first = att_first_row(first, heads, h, seq);
    q += h * seq * d_qk;
    k += h * seq * d_qk;
    v += h * seq * d_v;
    o += h * seq * d_v;
    lse += h * seq;
    switch ((d_v + 63) / 64) {
        case 1: att_fwd_body<1>(q, k, v, o, lse, first, seq, d_qk, d_v, scale); break;
        case 2: att_fwd_body<2>(q, k, v, o, lse, first, seq, d_qk, d_v, scale); break;
        case 3: att_fwd_body<3>(q, k, v, o, lse, first, seq, d_qk, d_v, scale); break;
        default: att_fwd_body<4>(q, k, v, o, lse, first, seq, d_qk, d_v, scale); break;
    }
}

// grid (ceil(bh·seq / 8), 1, 1), block (256, 1, 1), no dynamic shared memory: one warp per
// row, delta[row] = Σ_c d_o[row][c] · o[row][c].
KERNEL void attention_bwd_pre_f32(const float* __restrict__ o, const float* __restrict__ d_o,
                                  float* __restrict__ delta, int bh, int seq, int d_v) {
    const long long row = (long long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (row >= (long long)bh * seq) return;  // the whole warp
    const float* a = o + row * d_v;
    const float* b = d_o + row * d_v;
    float s = 0.0f;
    for (int c = threadIdx.x % WARP; c < d_v; c += WARP) s = fmaf(a[c], b[c], s);
    s = warp_sum(s);
    if (threadIdx.x % WARP == 0) delta[row] = s;
}

template <int G>  // G = max(ceil(d_qk / 64), ceil(d_v / 64))
DEVICE void att_dkdv_body(const float* q, const float* k, const float* v, const float* lse,
                          const float* d_o, const float* delta, float* dk, float* dv,
                          const unsigned* first, int seq, int d_qk, int d_v, float scale) {
    DYNAMIC_SHARED(float, sm);
    const int ldq = att_ld(d_qk), ldv = att_ld(d_v);
    const int dq4 = att_round4(d_qk), dv4 = att_round4(d_v);
    float* Ks = sm;                    // [64][ldq]
    float* Vs = Ks + ATT_BQ * ldq;     // [64][ldv]
    float* Qs = Vs + ATT_BQ * ldv;     // [32][ldq]
    float* dOs = Qs + ATT_BK * ldq;    // [32][ldv]
    float* Ps = dOs + ATT_BK * ldv;    // [64][ATT_LDP]  Pᵀ (key, query)
    float* dSs = Ps + ATT_BQ * ATT_LDP;  // [64][ATT_LDP] dSᵀ
    float* Ls = dSs + ATT_BQ * ATT_LDP;  // [32]
    float* Ds = Ls + ATT_BK;             // [32]
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    const int k0 = blockIdx.x * ATT_BQ;  // the first blocks have the most query tiles

    att_load(Ks, ldq, k, k0, ATT_BQ, seq, d_qk);
    att_load(Vs, ldv, v, k0, ATT_BQ, seq, d_v);
    float dk_acc[4][G][4], dv_acc[4][G][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int e = 0; e < 4; e++) dk_acc[i][g][e] = dv_acc[i][g][e] = 0.0f;
    for (int q0 = k0; q0 < seq; q0 += ATT_BK) {
        att_load(Qs, ldq, q, q0, ATT_BK, seq, d_qk);
        att_load(dOs, ldv, d_o, q0, ATT_BK, seq, d_v);
        att_load_vec(Ls, lse, q0, ATT_BK, seq);
        att_load_vec(Ds, delta, q0, ATT_BK, seq);
        __syncthreads();
        float s[4][2], dp[4][2];
        att_dot(Ks, Qs, ldq, dq4, ty, tx, s);
        att_dot(Vs, dOs, ldv, dv4, ty, tx, dp);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int key = k0 + ty * 4 + i;
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const int c = tx + 16 * j, row = q0 + c;
                const bool ok = key <= row && row < seq && att_first(first, row, seq) <= key;
                const float p = ok ? expf(s[i][j] * scale - Ls[c]) : 0.0f;
                Ps[(ty * 4 + i) * ATT_LDP + c] = p;
                dSs[(ty * 4 + i) * ATT_LDP + c] = p * (dp[i][j] - Ds[c]) * scale;
            }
        }
        __syncthreads();
        att_acc<G>(dv_acc, Ps, dOs, ldv, dv4, ty, tx);
        att_acc<G>(dk_acc, dSs, Qs, ldq, dq4, ty, tx);
        __syncthreads();
    }
    const float one[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    att_store<G>(dk, dk_acc, one, k0, seq, d_qk, ty, tx);
    att_store<G>(dv, dv_acc, one, k0, seq, d_v, ty, tx);
}

// grid (ceil(seq / 64), bh, 1), block (256, 1, 1),
// dynamic shared memory 4 · (96·(LD(d_qk) + LD(d_v)) + 4672) bytes. Writes dk, dv.
KERNEL void attention_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k,
                                   const float* __restrict__ v, const float* __restrict__ lse,
                                   const float* __restrict__ d_o,
                                   const float* __restrict__ delta, float* __restrict__ dk,
                                   float* __restrict__ dv, const unsigned* __restrict__ first,
                                   int heads, int bh, int seq, int d_qk, int d_v, float scale) {
    if (d_qk < 1 || d_v < 1 || d_qk > ATT_MAXD || d_v > ATT_MAXD || (int)blockIdx.y >= bh) return;
    const long long h = blockIdx.y;
    first = att_first_row(first, heads, h, seq);
    q += h * seq * d_qk;
    k += h * seq * d_qk;
    dk += h * seq * d_qk;
    v += h * seq * d_v;
    d_o += h * seq * d_v;
    dv += h * seq * d_v;
    lse += h * seq;
    delta += h * seq;
    switch ((tm_max(d_qk, d_v) + 63) / 64) {
        case 1: att_dkdv_body<1>(q, k, v, lse, d_o, delta, dk, dv, first, seq, d_qk, d_v, scale); break;
        case 2: att_dkdv_body<2>(q, k, v, lse, d_o, delta, dk, dv, first, seq, d_qk, d_v, scale); break;
        case 3: att_dkdv_body<3>(q, k, v, lse, d_o, delta, dk, dv, first, seq, d_qk, d_v, scale); break;
        default: att_dkdv_body<4>(q, k, v, lse, d_o, delta, dk, dv, first, seq, d_qk, d_v, scale); break;
    }
}

template <int G>  // G = ceil(d_qk / 64)
DEVICE void att_dq_body(const float* q, const float* k, const float* v, const float* lse,
                        const float* d_o, const float* delta, float* dq, const unsigned* first,
                        int seq, int d_qk, int d_v, float scale) {
    DYNAMIC_SHARED(float, sm);
    const int ldq = att_ld(d_qk), ldv = att_ld(d_v);
    const int dq4 = att_round4(d_qk), dv4 = att_round4(d_v);
    float* Qs = sm;                    // [64][ldq]
    float* dOs = Qs + ATT_BQ * ldq;    // [64][ldv]
    float* Ks = dOs + ATT_BQ * ldv;    // [32][ldq]
    float* Vs = Ks + ATT_BK * ldq;     // [32][ldv]
    float* dSs = Vs + ATT_BK * ldv;    // [64][ATT_LDP]
    float* Ls = dSs + ATT_BQ * ATT_LDP;  // [64]
    float* Ds = Ls + ATT_BQ;             // [64]
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * ATT_BQ;

    att_load(Qs, ldq, q, q0, ATT_BQ, seq, d_qk);
    att_load(dOs, ldv, d_o, q0, ATT_BQ, seq, d_v);
    att_load_vec(Ls, lse, q0, ATT_BQ, seq);
    att_load_vec(Ds, delta, q0, ATT_BQ, seq);
    float acc[4][G][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][g][e] = 0.0f;
    const int kend = tm_min(seq, q0 + ATT_BQ);
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        att_load(Ks, ldq, k, k0, ATT_BK, seq, d_qk);
        att_load(Vs, ldv, v, k0, ATT_BK, seq, d_v);
        __syncthreads();
        float s[4][2], dp[4][2];
        att_dot(Qs, Ks, ldq, dq4, ty, tx, s);
        att_dot(dOs, Vs, ldv, dv4, ty, tx, dp);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = ty * 4 + i, row = q0 + r;
            const int lo = att_first(first, row, seq);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const int key = k0 + tx + 16 * j;
                const bool ok = lo <= key && key <= row && row < seq;
                const float p = ok ? expf(s[i][j] * scale - Ls[r]) : 0.0f;
                dSs[r * ATT_LDP + tx + 16 * j] = p * (dp[i][j] - Ds[r]) * scale;
            }
        }
        __syncthreads();
        att_acc<G>(acc, dSs, Ks, ldq, dq4, ty, tx);
        __syncthreads();
    }
    const float one[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    att_store<G>(dq, acc, one, q0, seq, d_qk, ty, tx);
}

// grid (ceil(seq / 64), bh, 1), block (256, 1, 1),
// dynamic shared memory 4 · (96·(LD(d_qk) + LD(d_v)) + 2432) bytes. Writes dq.
KERNEL void attention_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k,
                                 const float* __restrict__ v, const float* __restrict__ lse,
                                 const float* __restrict__ d_o, const float* __restrict__ delta,
                                 float* __restrict__ dq, const unsigned* __restrict__ first,
                                 int heads, int bh, int seq, int d_qk, int d_v, float scale) {
    if (d_qk < 1 || d_v < 1 || d_qk > ATT_MAXD || d_v > ATT_MAXD || (int)blockIdx.y >= bh) return;
    const long long h = blockIdx.y;
    first = att_first_row(first, heads, h, seq);
    q += h * seq * d_qk;
    k += h * seq * d_qk;
    dq += h * seq * d_qk;
    v += h * seq * d_v;
    d_o += h * seq * d_v;
    lse += h * seq;
    delta += h * seq;
    switch ((d_qk + 63) / 64) {
        case 1: att_dq_body<1>(q, k, v, lse, d_o, delta, dq, first, seq, d_qk, d_v, scale); break;
        case 2: att_dq_body<2>(q, k, v, lse, d_o, delta, dq, first, seq, d_qk, d_v, scale); break;
        case 3: att_dq_body<3>(q, k, v, lse, d_o, delta, dq, first, seq, d_qk, d_v, scale); break;
        default: att_dq_body<4>(q, k, v, lse, d_o, delta, dq, first, seq, d_qk, d_v, scale); break;
    }
}
