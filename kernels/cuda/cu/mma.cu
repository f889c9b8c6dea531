// FP8 GEMMs of our own on the tensor cores: E4M3 × E4M3 products by the warp-level
// `mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32` (sm_89 and later), with DeepSeek-V3's
// fine-grained scaling and its promotion: each chunk of 128 along K is summed by the tensor
// cores from zero, then multiplied by its two scales and added into FP32 accumulators held in
// registers. Every group of a grouped GEMM (the MoE experts)
// is a layer of the grid, so all experts' products are one launch — where cuBLASLt takes one
// call per expert. The operands are those of cuBLASLt's block-scaled matmul, written by
// quant.cu's fp8_quantize_lt_f32: E4M3 codes with K contiguous, one scale per 1 × 128 tile or
// per 128 × 128 block. Reference: kernels/src/cpu/lowp.rs (the CPU's FP8 GEMM on the
// fake-quantized values, its chunk sums truncated to the accumulator model's mantissa): the
// two differ by the rounding inside a chunk and where the scales are applied.
//
// In the CPU emulation (kernels/cuda/emu) the instruction is the shim's warp-collective
// emu_mma_e4m3_m16n8k32, which follows the PTX ISA's fragment layout (documented there), and
// the copies into shared memory are its cp.async, made when their thread waits for them; on a
// GPU below sm_89 the kernel traps (the backend refuses such a device first).

#define MMA_BM 128
#define MMA_BN 128
#define MMA_BK 128           // the promotion interval and the scale tiles' extent along K
#define MMA_LDS (MMA_BK + 16)  // bytes per shared row: 36 words, so a fragment load's 8 rows × 4
                             // words fall in 32 distinct banks
#define MMA_STAGE ((MMA_BM + MMA_BN) * MMA_LDS)  // bytes of one stage: A's and B's rows
// Dynamic shared memory of both kernels: two stages (72 KiB).
#define MMA_SMEM (2 * MMA_STAGE)

// One warp's `mma.sync.aligned.<instr>` with four A registers, two B and the four FP32
// accumulators d updated in place (the fragments of the function it is used in: a, b, d).
#define TM_MMA_SYNC(instr)                                                                     \
    asm volatile("mma.sync.aligned." instr " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "          \
                 "{%0,%1,%2,%3};\n"                                                             \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                              \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))

// d += a · b for one warp: a the 16 × 32 E4M3 fragment of A (row-major), b the 32 × 8 fragment
// of B (column-major), d the 16 × 8 FP32 accumulator fragment. Lane l = 4·g + t holds
//   a[0]: A[g][4t .. 4t+3]   a[1]: A[g+8][4t .. 4t+3]   a[2]: A[g][16+4t ..]   a[3]: A[g+8][16+4t ..]
//   b[0]: B[4t .. 4t+3][g]   b[1]: B[16+4t .. 16+4t+3][g]
//   d[0], d[1]: D[g][2t], D[g][2t+1]   d[2], d[3]: D[g+8][2t], D[g+8][2t+1]
// each register's lowest byte the first of its four K indices.
DEVICE void mma_e4m3(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(TOKENMILL_EMU)
    emu_mma_e4m3_m16n8k32(d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    TM_MMA_SYNC("m16n8k32.row.col.f32.e4m3.e4m3.f32");
#else
    __trap();
#endif
}

// d += a · b for one warp with BF16 operands: A 16 × 16, B 16 × 8, D 16 × 8 in FP32. Lane
// l = 4·g + t holds a[0]: A[g][2t .. 2t+1], a[1]: A[g+8][2t ..], a[2]: A[g][8+2t ..], a[3]:
// A[g+8][8+2t ..]; b[0]: B[2t .. 2t+1][g], b[1]: B[8+2t ..][g]; d as mma_e4m3's — each register's
// low half the lower K. In bytes of a K-contiguous row these are the places of mma_e4m3's
// fragments, so both read shared memory alike.
DEVICE void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(TOKENMILL_EMU)
    emu_mma_bf16_m16n8k16(d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    TM_MMA_SYNC("m16n8k16.row.col.f32.bf16.bf16.f32");
#else
    __trap();
#endif
}

// Starts the copies of the thread's four 16-byte pieces of a 128 × 128-byte chunk (rows r0 ..,
// K bytes from k0) into the stage s (rows of MMA_LDS bytes): piece p = threadIdx.x + 256·i is
// row p / 8, bytes 16·(p % 8) ..; rows past `rows` and K past `k` are zeros.
DEVICE void mma_load(unsigned char* s, const unsigned char* src, long long ld, int r0, int rows,
                     int k0, int k) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int p = threadIdx.x + 256 * i, r = p / 8, kb = k0 + (p % 8) * 16;
        bool ok = r0 + r < rows && kb < k;
        cp_async16(s + r * MMA_LDS + (p % 8) * 16, ok ? src + (long long)(r0 + r) * ld + kb : src,
                   ok);
    }
}

DEVICE void mma_zero(float (&x)[4][4][4]) {
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) x[i][j][e] = 0.0f;
}

DEVICE uint32_t mma_word(const unsigned char* s, int row, int byte) {
    return *reinterpret_cast<const uint32_t*>(s + row * MMA_LDS + byte);
}

// The GEMM body of both kernels below over byte rows: a chunk is 128 bytes of K (128 E4M3
// codes or 64 BF16 values), a k-step of one mma 32 bytes (32 codes or 16 values), and the
// fragments of both instructions lie at the same bytes of a row (see mma_e4m3 and mma_bf16).
// FP8: each chunk summed from zero, scaled and added into acc (the promotion); BF16: the
// tensor cores accumulate into acc directly. k: bytes of K; lda, ldb: bytes per row.
template <bool FP8>
DEVICE void mma_gemm(const unsigned char* a, long long lda, const float* sa, long long sa_outer,
                     long long sa_k, int a_blk, const unsigned char* b, long long ldb,
                     const float* sb, long long sb_outer, long long sb_k, int b_blk, float* c,
                     long long ldc, int m, int n, int k, int accumulate) {
    DYNAMIC_SHARED(unsigned char, sm);  // two stages of A's and B's rows (16-byte aligned)
    const int r0 = blockIdx.y * MMA_BM, c0 = blockIdx.x * MMA_BN;
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    const int g = lane / 4, t = lane % 4;
    const int wr = (w / 4) * 64, wc = (w % 4) * 32;
    float acc[4][4][4];
    mma_zero(acc);
    const int chunks = (k + MMA_BK - 1) / MMA_BK;
    if (chunks > 0) {
        mma_load(sm, a, lda, r0, m, 0, k);
        mma_load(sm + MMA_BM * MMA_LDS, b, ldb, c0, n, 0, k);
    }
    cp_async_commit();
    for (int kc = 0; kc < chunks; kc++) {
        cp_async_wait<0>();  // this thread's copies of chunk kc are in
        __syncthreads();     // everyone's are, and chunk kc - 1's fragments are read
        if (kc + 1 < chunks) {
            // The next chunk into the other stage while this one is multiplied.
            unsigned char* next = sm + ((kc + 1) % 2) * MMA_STAGE;
            mma_load(next, a, lda, r0, m, (kc + 1) * MMA_BK, k);
            mma_load(next + MMA_BM * MMA_LDS, b, ldb, c0, n, (kc + 1) * MMA_BK, k);
        }
        cp_async_commit();
        const unsigned char* as = sm + (kc % 2) * MMA_STAGE;
        const unsigned char* bs = as + MMA_BM * MMA_LDS;
        // The chunk's scales, loaded before the tensor cores' work so that their latency hides
        // behind it.
        float s_a[4][2] = {}, s_b[4][2] = {};
        if constexpr (FP8) {
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    s_a[i][h] = mma_scale(sa, a_blk, sa_outer, sa_k, r0 + wr + i * 16 + g + 8 * h, m, kc);
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int q = 0; q < 2; q++)
                    s_b[j][q] = mma_scale(sb, b_blk, sb_outer, sb_k, c0 + wc + j * 8 + 2 * t + q, n, kc);
        }
        float part[4][4][4];  // FP8: the chunk's sums
        if constexpr (FP8) mma_zero(part);
#pragma unroll
        for (int ks = 0; ks < MMA_BK; ks += 32) {
            uint32_t fa[4][4], fb[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int r = wr + i * 16 + g;
                fa[i][0] = mma_word(as, r, ks + 4 * t);
                fa[i][1] = mma_word(as, r + 8, ks + 4 * t);
                fa[i][2] = mma_word(as, r, ks + 16 + 4 * t);
                fa[i][3] = mma_word(as, r + 8, ks + 16 + 4 * t);
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int col = wc + j * 8 + g;
                fb[j][0] = mma_word(bs, col, ks + 4 * t);
                fb[j][1] = mma_word(bs, col, ks + 16 + 4 * t);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    if constexpr (FP8)
                        mma_e4m3(part[i][j], fa[i], fb[j]);
                    else
                        mma_bf16(acc[i][j], fa[i], fb[j]);
                }
        }
        if constexpr (FP8) {
            // The promotion: the chunk's sums added into FP32 by one fused multiply-add each,
            // times the product of their row's and column's scales (wgmma.cu's wg_promote:
            // the same bits). B in 128 × 128 blocks: one scale for all the thread's columns
            // (the first is the smallest: past n, none of them is stored).
            if (b_blk) {
                float sab[4][2];
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int h = 0; h < 2; h++) sab[i][h] = __fmul_rn(s_a[i][h], s_b[0][0]);
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
#pragma unroll
                        for (int x = 0; x < 4; x++)
                            acc[i][j][x] = fmaf(part[i][j][x], sab[i][x / 2], acc[i][j][x]);
            } else {
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
#pragma unroll
                        for (int x = 0; x < 4; x++)
                            acc[i][j][x] = fmaf(part[i][j][x],
                                                __fmul_rn(s_a[i][x / 2], s_b[j][x % 2]),
                                                acc[i][j][x]);
            }
        }
    }
    // C in pairs of adjacent columns, every value added to read before the first is written
    // (as wgmma.cu's wg_store, which says why). FP8: a 4-byte access for each value, as the
    // 8-byte ones would have ptxas spill the promotion's registers (124 bytes, against 16).
    // BF16: in two halves of the fragments' rows (two trips to memory), which keeps the
    // kernel at 126 registers — two blocks a multiprocessor; reading all at once took 168.
    const bool pairs = !FP8 && tm_pairs(c, ldc);
    constexpr int ROWS = FP8 ? 4 : 2;  // fragments' rows i per trip
#pragma unroll
    for (int i0 = 0; i0 < 4; i0 += ROWS) {
        tm_float2 old[ROWS][4][2];
        if (accumulate) {
#pragma unroll
            for (int i = 0; i < ROWS; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
#pragma unroll
                    for (int y = 0; y < 2; y++)
                        old[i][j][y] = tm_pair_load(c, ldc, r0 + wr + (i0 + i) * 16 + g + 8 * y,
                                                    c0 + wc + j * 8 + 2 * t, m, n, pairs);
        }
#pragma unroll
        for (int i = 0; i < ROWS; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int y = 0; y < 2; y++) {
                    tm_float2 v = {acc[i0 + i][j][2 * y], acc[i0 + i][j][2 * y + 1]};
                    if (accumulate)
                        v = {__fadd_rn(old[i][j][y].x, v.x), __fadd_rn(old[i][j][y].y, v.y)};
                    tm_pair_store(c, ldc, r0 + wr + (i0 + i) * 16 + g + 8 * y,
                                  c0 + wc + j * 8 + 2 * t, m, n, pairs, v);
                }
    }
}

// For every group g (blockIdx.z) of desc [groups][8] = {m, n, k, a_off, b_off, sa_off, sb_off,
// c_off}:
//   C_g[i, j] (+)= Σ_c ((Σ_{κ in chunk c} A_g[i, κ] · B_g[j, κ]) · sa_g(i, c)) · sb_g(j, c)
// over the chunks c of 128 along K, i < m, j < n, where
//   A_g[i, κ] = e4m3(a[a_off + i · lda + κ]), B_g[j, κ] = e4m3(b[b_off + j · ldb + κ]) (bytes),
//   sa_g(i, c) = sa[sa_off + (a_blk ? i / 128 : i) · sa_outer + c · sa_k], sb_g likewise,
//   C_g[i, j] at c[c_off + i · ldc + j] (floats; added to when accumulate, else written).
// lda, ldb, a_off and b_off are multiples of 16 and the codes from k to the next multiple of 16
// zeros (quant.cu's quantizer pads so). A group with k = 0 writes zeros (adds nothing). NaN
// codes (a non-finite tile's) make their products NaN.
// Tiles: a block computes 128 × 128 of C with 8 warps, warp w the 64 × 32 at rows 64·(w / 4),
// columns 32·(w % 4): 4 × 4 fragments of 16 × 8. Per chunk both operands' 128 × 128 codes
// are in one of two stages of shared memory (the next chunk's copied into the other by
// cp.async meanwhile), then 4 steps of 32 along K, each 16 mma per warp, then the promotion.
// Launch: grid (ceil(N / 128), ceil(M / 128), groups), N and M a group's largest (M ≤ 65535 ·
// 128); block 256, dynamic shared memory MMA_SMEM (72 KiB: the kernel opts in to more than
// 48 KiB, as every kernel does).
KERNEL void __launch_bounds__(256)
    fp8_mma_gemm_f32(const unsigned char* __restrict__ a, long long lda,
                     const float* __restrict__ sa, long long sa_outer, long long sa_k, int a_blk,
                     const unsigned char* __restrict__ b, long long ldb,
                     const float* __restrict__ sb, long long sb_outer, long long sb_k, int b_blk,
                     float* __restrict__ c, long long ldc, const long long* __restrict__ desc,
                     int accumulate) {
    const long long* d = desc + 8 * (long long)blockIdx.z;
    const int m = (int)d[0], n = (int)d[1], k = (int)d[2];
    if ((int)blockIdx.y * MMA_BM >= m || (int)blockIdx.x * MMA_BN >= n) return;
    mma_gemm<true>(a + d[3], lda, sa + d[5], sa_outer, sa_k, a_blk, b + d[4], ldb, sb + d[6],
                   sb_outer, sb_k, b_blk, c + d[7], ldc, m, n, k, accumulate);
}

// The BF16 GEMM on the tensor cores (mma.sync m16n8k16, sm_80 and later), every group in one
// launch: for every group g of desc [groups][8] = {m, n, k, a_off, b_off, -, -, c_off}
// (elements),
//   C_g[i, j] (+)= Σ_κ A_g[i, κ] · B_g[j, κ],  A_g[i, κ] = a[a_off + i · lda + κ] (BF16 bits),
// B_g likewise, C_g[i, j] at c[c_off + i · ldc + j]: products exact, summed in FP32 by the
// tensor cores — the CPU's BF16 GEMM up to the order and rounding of the sums. lda, ldb, a_off
// and b_off are multiples of 8 and the values from k to the next multiple of 8 zeros
// (to_bf16_rows_f32 pads so). Tiles as fp8_mma_gemm_f32. Launch: as fp8_mma_gemm_f32.
KERNEL void __launch_bounds__(256)
    bf16_mma_gemm_f32(const unsigned short* __restrict__ a, long long lda,
                      const unsigned short* __restrict__ b, long long ldb, float* __restrict__ c,
                      long long ldc, const long long* __restrict__ desc, int accumulate) {
    const long long* d = desc + 8 * (long long)blockIdx.z;
    const int m = (int)d[0], n = (int)d[1], k = (int)d[2];
    if ((int)blockIdx.y * MMA_BM >= m || (int)blockIdx.x * MMA_BN >= n) return;
    const unsigned char* ab = reinterpret_cast<const unsigned char*>(a + d[3]);
    const unsigned char* bb = reinterpret_cast<const unsigned char*>(b + d[4]);
    mma_gemm<false>(ab, 2 * lda, nullptr, 0, 0, 0, bb, 2 * ldb, nullptr, 0, 0, 0, c + d[7], ldc,
                    m, n, 2 * k, accumulate);
}
