// GEMMs of our own on the CUDA cores (fp32 FMA), for where cuBLAS(Lt) does not apply:
//
//   fp8_gemm_f32      C[m,n] (+)= A·Bᵀ with DeepSeek-V3's fine-grained FP8 scaling: A as E4M3
//                     codes [m,k] with one scale per 1 × 128 tile (a_scales [m, ceil(k/128)]),
//                     B (the weight [n,k], used transposed) as codes with one scale per
//                     128 × 128 block (b_scales [ceil(n/128), ceil(k/128)]). Per chunk of 128
//                     along K the products of the decoded codes are summed with FP32 FMA, the
//                     sum is multiplied by a_scale and b_scale, its mantissa truncated to
//                     acc_bits bits (the tensor-core accumulator model) and added into the
//                     FP32 accumulator (the promotion). Reference: kernels/src/cpu/lowp.rs
//                     (matmul_lowp, LowpGemm::Fp8 { a_tile: (1, 128), b_tile: (128, 128) }),
//                     which computes the same quantity from the fake-quantized values; the two
//                     differ only by the rounding of the sums inside a chunk.
//   grouped_gemm_forms_f32 / grouped_gemm_promoted_f32
//                     the MoE experts' products in the three forms of the seam's `Grouped`
//                     (forward, input gradient, weight gradient), every expert in one launch;
//                     the promoted one with the FP8 accumulator model on operands the caller
//                     fake-quantized per expert (quant.cu fp8_fake_quantize_rows_f32, _blocks_f32).
//
// All: a block computes a 128 × 128 tile of the output with 256 threads, thread
// (ty, tx) = (tid / 16, tid % 16) owning the 8 × 8 outputs rows {ty·4 + i, 64 + ty·4 + i},
// columns {tx·4 + j, 64 + tx·4 + j} (i, j < 4). K is walked in slices of 16: both operands'
// slices are stored k-major in shared memory (As[kk][row], stride 132 floats), double
// buffered, the next slice's global loads issued before the current slice's FMAs (one
// __syncthreads per slice); the inner loop reads 2 + 2 aligned 128-bit words per 64 FMAs.

#define GM_BM 128
#define GM_BN 128
#define GM_BK 16
#define GM_LDS 132  // row stride (floats) of a k-major slice: 128 + 4
#define GM_SLICE (GM_BK * GM_LDS)

// part[i][j] += Σ_kk As[kk][row i] · Bs[kk][col j] over one slice.
DEVICE void gm_slice(const float* As, const float* Bs, int ty, int tx, float (&part)[8][8]) {
#pragma unroll
    for (int kk = 0; kk < GM_BK; kk++) {
        const float* ar = As + kk * GM_LDS + ty * 4;
        const float* br = Bs + kk * GM_LDS + tx * 4;
        const tm_float4 a0 = *reinterpret_cast<const tm_float4*>(ar);
        const tm_float4 a1 = *reinterpret_cast<const tm_float4*>(ar + 64);
        const tm_float4 b0 = *reinterpret_cast<const tm_float4*>(br);
        const tm_float4 b1 = *reinterpret_cast<const tm_float4*>(br + 64);
        const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) part[i][j] = fmaf(a[i], b[j], part[i][j]);
    }
}

// Row (or column) of the tile that the thread's i-th output row (column) is.
DEVICE int gm_pos(int t, int i) { return (i < 4 ? 0 : 64) + t * 4 + (i & 3); }

// ---------------------------------------------------------------------------------------------
// FP8

#define FP8_CHUNK 128  // the promotion interval along K, and the scale tiles' width

// Loads the thread's 16 codes of a slice: row `row` (< rows, else zeros), columns
// k0 .. k0 + 16 (< k, else zeros) of the [rows, k] code matrix g.
DEVICE tm_uint4 gm_load_codes(const uint8_t* g, int row, int rows, int k, int k0, bool vec) {
    tm_uint4 v = {0u, 0u, 0u, 0u};
    if (row >= rows || k0 >= k) return v;
    const uint8_t* p = g + (long long)row * k + k0;
    if (vec) return *reinterpret_cast<const tm_uint4*>(p);
    uint32_t w[4] = {0u, 0u, 0u, 0u};
    for (int e = 0; e < 16 && k0 + e < k; e++) w[e >> 2] |= (uint32_t)p[e] << (8 * (e & 3));
    v.x = w[0];
    v.y = w[1];
    v.z = w[2];
    v.w = w[3];
    return v;
}

// Decodes 16 codes into column `row` of a k-major slice (S[kk][row], kk < 16).
DEVICE void gm_store_codes(float* S, int row, tm_uint4 v) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 16; e++) S[e * GM_LDS + row] = e4m3_to_f32((uint8_t)(w[e >> 2] >> (8 * (e & 3))));
}

// grid (ceil(n / 128), ceil(m / 128), 1), block (256, 1, 1), dynamic shared memory 99328 bytes
// (2 buffers × 2 operands × 16 × 132 floats of slices + 128 × 128 floats of accumulators).
// Codes are read 16 bytes at a time when k % 16 == 0 and a, b are 16-byte aligned (bytewise
// otherwise). acc_bits in 1..23 (23: no truncation). accumulate != 0: C += A·Bᵀ.
KERNEL void __launch_bounds__(256, 2)
    fp8_gemm_f32(const unsigned char* __restrict__ a, const float* __restrict__ a_scales,
                 const unsigned char* __restrict__ b, const float* __restrict__ b_scales,
                 float* __restrict__ c, int m, int n, int k, int acc_bits, int accumulate) {
    DYNAMIC_SHARED(float, sm);
    float* slices = sm;                     // [2 buffers][A, B][16][132]
    float* accs = sm + 4 * GM_SLICE;        // [64 outputs][256 threads]: private accumulators
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    const int m0 = blockIdx.y * GM_BM, n0 = blockIdx.x * GM_BN;
    const int chunks = (k + FP8_CHUNK - 1) / FP8_CHUNK;
    const int bits = tm_max(1, tm_min(acc_bits, 23));
    const bool vec = (k & 15) == 0 && tm_aligned16(a) && tm_aligned16(b);

    // Threads 0..127 load rows of A, 128..255 rows of B (one 16-byte group each per slice).
    const bool loads_a = tid < GM_BM;
    const int lrow = tid & (GM_BM - 1);
    const uint8_t* src = loads_a ? a : b;
    const int src_row = (loads_a ? m0 : n0) + lrow, src_rows = loads_a ? m : n;

#pragma unroll
    for (int i = 0; i < 8; i++) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int row = m0 + gm_pos(ty, i), col = n0 + gm_pos(tx, j);
            accs[(i * 8 + j) * 256 + tid] =
                accumulate && row < m && col < n ? c[(long long)row * n + col] : 0.0f;
        }
    }
    float part[8][8];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) part[i][j] = 0.0f;

    const int nslices = (k + GM_BK - 1) / GM_BK;
    if (nslices > 0) {
        tm_uint4 codes = gm_load_codes(src, src_row, src_rows, k, 0, vec);
        gm_store_codes(slices + (loads_a ? 0 : GM_SLICE), lrow, codes);
    }
    __syncthreads();
    for (int s = 0; s < nslices; s++) {
        const int buf = s & 1;
        const bool more = s + 1 < nslices;
        tm_uint4 next = {0u, 0u, 0u, 0u};
        if (more) next = gm_load_codes(src, src_row, src_rows, k, (s + 1) * GM_BK, vec);
        gm_slice(slices + buf * 2 * GM_SLICE, slices + buf * 2 * GM_SLICE + GM_SLICE, ty, tx, part);
        const int chunk = s * GM_BK / FP8_CHUNK;
        if (!more || (s + 1) * GM_BK / FP8_CHUNK != chunk) {
            // End of a chunk of K: scale, truncate, promote.
            const float sb = n0 < n ? b_scales[(long long)(n0 / FP8_CHUNK) * chunks + chunk] : 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int row = m0 + gm_pos(ty, i);
                const float sa = row < m ? a_scales[(long long)row * chunks + chunk] : 0.0f;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    accs[(i * 8 + j) * 256 + tid] += truncate_mantissa(part[i][j] * sa * sb, bits);
                    part[i][j] = 0.0f;
                }
            }
        }
        if (more) gm_store_codes(slices + (buf ^ 1) * 2 * GM_SLICE + (loads_a ? 0 : GM_SLICE), lrow, next);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int row = m0 + gm_pos(ty, i);
        if (row >= m) continue;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int col = n0 + gm_pos(tx, j);
            if (col < n) c[(long long)row * n + col] = accs[(i * 8 + j) * 256 + tid];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Grouped f32 GEMM (MoE experts)

// Loads the thread's two groups of 4 floats of a slice of the [rows, k] matrix g (tile rows
// from row0, limited to `rows`; columns from k0, limited to k): group u is tile row
// (tid + 256u) / 4, columns k0 + 4·((tid + 256u) % 4) .. +3.
DEVICE void gm_load_f32(tm_float4 (&v)[2], const float* g, int rows, int k, int k0, bool vec) {
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int idx = threadIdx.x + 256 * u, r = idx >> 2, c = k0 + (idx & 3) * 4;
        tm_float4 t = {0.0f, 0.0f, 0.0f, 0.0f};
        if (r < rows && c < k) {
            const float* p = g + (long long)r * k + c;
            if (vec) {
                t = *reinterpret_cast<const tm_float4*>(p);
            } else {
                t.x = p[0];
                if (c + 1 < k) t.y = p[1];
                if (c + 2 < k) t.z = p[2];
                if (c + 3 < k) t.w = p[3];
            }
        }
        v[u] = t;
    }
}

DEVICE void gm_store_f32(float* S, const tm_float4 (&v)[2]) {
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int idx = threadIdx.x + 256 * u, r = idx >> 2, kk = (idx & 3) * 4;
        S[(kk + 0) * GM_LDS + r] = v[u].x;
        S[(kk + 1) * GM_LDS + r] = v[u].y;
        S[(kk + 2) * GM_LDS + r] = v[u].z;
        S[(kk + 3) * GM_LDS + r] = v[u].w;
    }
}

// ---------------------------------------------------------------------------------------------
// Grouped GEMM in the three forms of the seam's `Grouped` (kernels/src/backend/types.rs):
// group e owns rows offsets[e] .. offsets[e + 1] of the row operands and the weight block
// W_e = `e · stride` elements into the weight buffer.
//   form 0 (forward):   C[rows_e, n] (+)= A[rows_e, k] · W_eᵀ,  W_e [n, k] in B
//   form 1 (input):     C[rows_e, n] (+)= A[rows_e, k] · W_e,   W_e [k, n] in B
//   form 2 (weight):    W_e[n, k] (+)= A_eᵀ · B_e over the group's rows, A [rows, n], B [rows, k],
//                       the blocks W_e in C (a group with no rows writes zeros, or nothing
//                       when accumulating)
// Same tiles as fp8_gemm_f32; an operand whose contracted index is its row index (k-major:
// W_e in form 1, both in form 2) is copied into shared memory as it lies.
//
// PROMOTE: the FP8 accumulator model of kernels/src/cpu/lowp.rs (`promoted`) per group, K
// counted from the group's own first element of the contraction: the products of each chunk
// of FP8_CHUNK along K summed in registers (`part`), the chunk's sum truncated to acc_bits
// mantissa bits and added into an FP32 accumulator kept in shared memory (`accs`, one column
// per thread as in fp8_gemm_f32), which starts from C when accumulating and from zero
// otherwise. Without it the registers are the accumulator and C (+)= their sum at the end.

// Loads the thread's two groups of 4 of a k-major slice: g[(k0 + kk) · ld + p] for kk < 16,
// p < 128 (zeros past prows columns or kext slices), g pointing at the tile's first column.
DEVICE void gm_load_kmajor(tm_float4 (&v)[2], const float* g, long long ld, int prows, int kext,
                           int k0) {
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int idx = threadIdx.x + 256 * u, kk = idx >> 5, p = (idx & 31) * 4;
        tm_float4 t = {0.0f, 0.0f, 0.0f, 0.0f};
        if (k0 + kk < kext) {
            const float* q = g + (long long)(k0 + kk) * ld + p;
            if (p < prows) t.x = q[0];
            if (p + 1 < prows) t.y = q[1];
            if (p + 2 < prows) t.z = q[2];
            if (p + 3 < prows) t.w = q[3];
        }
        v[u] = t;
    }
}

DEVICE void gm_store_kmajor(float* S, const tm_float4 (&v)[2]) {
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int idx = threadIdx.x + 256 * u, kk = idx >> 5, p = (idx & 31) * 4;
        float* s = S + kk * GM_LDS + p;
        s[0] = v[u].x;
        s[1] = v[u].y;
        s[2] = v[u].z;
        s[3] = v[u].w;
    }
}

// One block's tile of the grouped GEMM (above). slices: 4 · GM_SLICE floats of shared memory;
// accs (PROMOTE only): 64 · 256 floats of shared memory.
template <bool PROMOTE>
DEVICE void grouped_tile(const float* __restrict__ a, const float* __restrict__ b,
                         float* __restrict__ c, const int* __restrict__ offsets, int experts,
                         int form, int n, int k, long long stride, int accumulate, int acc_bits,
                         float* slices, float* accs) {
    const int e = blockIdx.z;
    if (e >= experts) return;
    const int r0 = offsets[e], rows_e = offsets[e + 1] - r0;
    const int M = form == 2 ? n : rows_e, N = form == 2 ? k : n, K = form == 2 ? rows_e : k;
    const int m0 = blockIdx.y * GM_BM, n0 = blockIdx.x * GM_BN;
    if (m0 >= M || n0 >= N) return;  // the whole block
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    const int mr = tm_min(GM_BM, M - m0), nr = tm_min(GM_BN, N - n0);
    const float* w = b + (long long)e * stride;
    const float *A, *B;
    float* C;
    long long ldc;
    if (form == 2) {
        A = a + (long long)r0 * n + m0;
        B = b + (long long)r0 * k + n0;
        C = c + (long long)e * stride + (long long)m0 * k + n0;
        ldc = k;
    } else {
        A = a + (long long)(r0 + m0) * k;
        B = form == 0 ? w + (long long)n0 * k : w + n0;
        C = c + (long long)(r0 + m0) * n + n0;
        ldc = n;
    }
    const bool a_km = form == 2, b_km = form != 0;
    const long long lda = form == 2 ? n : k, ldb = form == 2 ? k : n;
    const bool vec_a = (k & 3) == 0 && tm_aligned16(a);
    const bool vec_b = (k & 3) == 0 && (stride & 3) == 0 && tm_aligned16(b);
    const int bits = tm_max(1, tm_min(acc_bits, 23));

    // PROMOTE: the thread's 64 FP32 accumulators, from C when accumulating (else zero).
    if (PROMOTE) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int r = gm_pos(ty, i);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int col = gm_pos(tx, j);
                accs[(i * 8 + j) * 256 + tid] =
                    accumulate && r < mr && col < nr ? C[(long long)r * ldc + col] : 0.0f;
            }
        }
    }
    float part[8][8];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) part[i][j] = 0.0f;
    const int nslices = (K + GM_BK - 1) / GM_BK;
    tm_float4 va[2], vb[2];
    if (nslices > 0) {
        if (a_km) gm_load_kmajor(va, A, lda, mr, K, 0);
        else gm_load_f32(va, A, mr, K, 0, vec_a);
        if (b_km) gm_load_kmajor(vb, B, ldb, nr, K, 0);
        else gm_load_f32(vb, B, nr, K, 0, vec_b);
        if (a_km) gm_store_kmajor(slices, va);
        else gm_store_f32(slices, va);
        if (b_km) gm_store_kmajor(slices + GM_SLICE, vb);
        else gm_store_f32(slices + GM_SLICE, vb);
    }
    __syncthreads();
    for (int s = 0; s < nslices; s++) {
        const int buf = s & 1;
        const bool more = s + 1 < nslices;
        if (more) {
            const int k1 = (s + 1) * GM_BK;
            if (a_km) gm_load_kmajor(va, A, lda, mr, K, k1);
            else gm_load_f32(va, A, mr, K, k1, vec_a);
            if (b_km) gm_load_kmajor(vb, B, ldb, nr, K, k1);
            else gm_load_f32(vb, B, nr, K, k1, vec_b);
        }
        gm_slice(slices + buf * 2 * GM_SLICE, slices + buf * 2 * GM_SLICE + GM_SLICE, ty, tx, part);
        if (PROMOTE && (!more || (s + 1) * GM_BK % FP8_CHUNK == 0)) {
            // End of a chunk of K: truncate its sum and promote it into FP32.
#pragma unroll
            for (int i = 0; i < 8; i++)
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    accs[(i * 8 + j) * 256 + tid] += truncate_mantissa(part[i][j], bits);
                    part[i][j] = 0.0f;
                }
        }
        if (more) {
            float* next = slices + (buf ^ 1) * 2 * GM_SLICE;
            if (a_km) gm_store_kmajor(next, va);
            else gm_store_f32(next, va);
            if (b_km) gm_store_kmajor(next + GM_SLICE, vb);
            else gm_store_f32(next + GM_SLICE, vb);
        }
        __syncthreads();
    }
    // C in the thread's runs of 4 adjacent columns (gm_pos): one 16-byte access each where C's
    // start is 16-byte aligned and its rows hold a multiple of 4 floats. When adding, every
    // value of C the thread adds to is read before the first is written (as wgmma.cu's
    // wg_store, which says why), in two halves of the rows so that the values read fit in the
    // registers beside the products: two trips to memory.
    const bool vec_c = (ldc & 3) == 0 && tm_aligned16(C);
#pragma unroll
    for (int i0 = 0; i0 < 8; i0 += 4) {
        float old[4][8];
        if (!PROMOTE && accumulate) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int r = gm_pos(ty, i0 + i);
#pragma unroll
                for (int u = 0; u < 8; u += 4) {
                    const int col = gm_pos(tx, u);
                    const float* p = C + (long long)r * ldc + col;
                    if (r < mr && vec_c && col + 3 < nr) {
                        const tm_float4 q = *reinterpret_cast<const tm_float4*>(p);
                        old[i][u] = q.x, old[i][u + 1] = q.y, old[i][u + 2] = q.z, old[i][u + 3] = q.w;
                    } else {
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            old[i][u + e] = r < mr && col + e < nr ? p[e] : 0.0f;
                    }
                }
            }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = gm_pos(ty, i0 + i);
            if (r >= mr) continue;
            float* crow = C + (long long)r * ldc;
#pragma unroll
            for (int u = 0; u < 8; u += 4) {
                const int col = gm_pos(tx, u);
                float v[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int j = u + e;
                    v[e] = PROMOTE ? accs[((i0 + i) * 8 + j) * 256 + tid]
                                   : (accumulate ? old[i][j] + part[i0 + i][j] : part[i0 + i][j]);
                }
                if (vec_c && col + 3 < nr) {
                    *reinterpret_cast<tm_float4*>(crow + col) = {v[0], v[1], v[2], v[3]};
                } else {
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (col + e < nr) crow[col + e] = v[e];
                }
            }
        }
    }
}

// grid (ceil(N / 128), ceil(max M / 128), experts) with (M, N) = (an expert's rows, n) for forms
// 0 and 1 and (n, k) for form 2; block (256, 1, 1); no dynamic shared memory.
// accumulate != 0: C (+)= the product.
KERNEL void __launch_bounds__(256, 2)
    grouped_gemm_forms_f32(const float* __restrict__ a, const float* __restrict__ b,
                           float* __restrict__ c, const int* __restrict__ offsets, int experts,
                           int form, int n, int k, long long stride, int accumulate) {
    __shared__ tm_float4 smem4[4 * GM_SLICE / 4];
    float* slices = reinterpret_cast<float*>(smem4);  // [2 buffers][A, B][16][132]
    grouped_tile<false>(a, b, c, offsets, experts, form, n, k, stride, accumulate, 23, slices,
                        nullptr);
}

// The same with the FP8 accumulator model: acc_bits in 1..23 (23: no truncation, the chunk
// sums still added one by one). Launch: as grouped_gemm_forms_f32 with dynamic shared memory
// 99328 bytes (2 buffers × 2 operands × 16 × 132 floats of slices + 128 × 128 floats of
// accumulators; over 48 KiB: the kernel must opt in, as every kernel here does).
KERNEL void __launch_bounds__(256, 2)
    grouped_gemm_promoted_f32(const float* __restrict__ a, const float* __restrict__ b,
                              float* __restrict__ c, const int* __restrict__ offsets,
                              int experts, int form, int n, int k, long long stride,
                              int accumulate, int acc_bits) {
    DYNAMIC_SHARED(float, sm);
    grouped_tile<true>(a, b, c, offsets, experts, form, n, k, stride, accumulate, acc_bits, sm,
                       sm + 4 * GM_SLICE);
}
