// The FP8 and BF16 GEMMs of mma.cu on Hopper's warpgroup tensor-core instruction (sm_90a):
// the same arguments, tables of groups and results — for FP8 DeepSeek-V3's fine-grained
// scaling and promotion; every group (MoE expert) a layer of the grid — with the operands read
// by the tensor cores straight from shared memory (`wgmma.mma_async` m64n128k32 E4M3 × E4M3 or
// m64n128k16 BF16 × BF16 → FP32, both operands through matrix descriptors) and loaded there by
// asynchronous copies (`cp.async`) in five stages, so the next chunks' loads overlap this
// chunk's products. Where mma.cu's warps each read their fragments into registers and issue
// 16-row instructions, here each warpgroup (4 warps) issues one instruction for a 64 × 128
// product over 32 bytes of K.
//
// Shared memory: per stage, A's and B's 128 rows × 128 bytes of one chunk, each row in the
// 128-byte swizzle the descriptors name (the 16-byte piece c of row r at r · 128 +
// ((c ^ (r % 8)) · 16) from a 1024-byte aligned tile), so neither the copies in nor the tensor
// cores' reads collide on banks. A descriptor for rows 8·j .. of a tile gives its start, 1024
// bytes between groups of 8 rows (the stride dimension), and swizzle mode 1 (128 B); a step of
// 32 bytes along K moves its start by 32 bytes.
//
// In the CPU emulation (kernels/cuda/emu) the asynchronous copies and products are the shim's
// (emu_cp_async16, emu_wgmma_e4m3_m64n128k32, emu_wgmma_bf16_m64n128k16): each is carried out
// when the thread waits for its group, from shared memory as it is then — reading a stage the
// kernel has overwritten, or an accumulator before its wait, shows in the results. On a GPU
// without sm_90a's features (anything but Hopper, or a cubin for plain sm_90) the kernels
// trap; the backend uses them only on compute capability 9.0 after their probes.

#define WG_TILE (128 * 128)  // bytes of one operand's chunk in shared memory
#define WG_STAGES 5
// Dynamic shared memory of both kernels: the stages and 1 KiB to align them.
#define WG_SMEM (WG_STAGES * 2 * WG_TILE + 1024)

#if !defined(TOKENMILL_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && \
    defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TM_WGMMA 1
#endif

// Makes this thread's writes to shared memory (its copies) visible to the tensor cores' reads
// (the async proxy); a barrier after it makes every thread's visible.
DEVICE void wg_fence_proxy() {
#if defined(TM_WGMMA)
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// The descriptor of a K-major operand in the 128-byte swizzle: start address, leading byte
// offset 16 (unused in this mode), stride byte offset 1024 (between groups of 8 rows), base
// offset 0, swizzle mode 1.
DEVICE uint64_t wg_desc(uint32_t addr) {
    return (uint64_t)((addr & 0x3ffffu) >> 4) | ((uint64_t)(16 >> 4) << 16) |
           ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}

// The 64 accumulators of a wgmma with N = 128 as asm operands %0 .. %63 of the array d.
#define TM_WG_D \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define TM_WG_OUT \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// d (+)= A · Bᵀ for the calling warpgroup: A 64 × 32 and B 128 × 32 E4M3 codes (K-major) at
// descriptors da and db, d 64 × 128 in FP32, added to unless scale_d is 0. Thread T of the
// warpgroup (warp w = T / 32, lane 4·g + t) holds D[16·w + g + 8·(x / 2)][8·j + 2·t + x % 2] in
// d[4·j + x]. Asynchronous: the product is there after wg_commit and wg_wait.
DEVICE void wg_mma_e4m3(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
#if defined(TOKENMILL_EMU)
    emu_wgmma_e4m3_m64n128k32(d, da, db, scale_d);
#elif defined(TM_WGMMA)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " TM_WG_D
                 ", %64, %65, p, 1, 1;\n}\n"
                 : TM_WG_OUT
                 : "l"(da), "l"(db), "r"(scale_d));
#else
    __trap();
#endif
}

// The same with BF16 operands: A 64 × 16 and B 128 × 16 values — a K step is again 32 bytes
// of each row — (`wgmma.mma_async` m64n128k16 .bf16, both operands K-major: no transpose).
DEVICE void wg_mma_bf16(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
#if defined(TOKENMILL_EMU)
    emu_wgmma_bf16_m64n128k16(d, da, db, scale_d);
#elif defined(TM_WGMMA)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " TM_WG_D
                 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : TM_WG_OUT
                 : "l"(da), "l"(db), "r"(scale_d));
#else
    __trap();
#endif
}

// Keeps the compiler from moving accesses to the accumulators across this point (they are
// the asynchronous products' operands between wg_mma and wg_wait).
DEVICE void wg_pin(float (&d)[64]) {
#if !defined(TOKENMILL_EMU)
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
#endif
}

// Orders the warpgroup's register accesses before the products that follow (their
// accumulators were read by the promotion).
DEVICE void wg_fence(float (&d)[64]) {
    wg_pin(d);
#if defined(TM_WGMMA)
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

DEVICE void wg_commit() {
#if defined(TOKENMILL_EMU)
    emu_wgmma_commit();
#elif defined(TM_WGMMA)
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

// Waits until at most N of the warpgroup's groups of products are in flight.
template <int N>
DEVICE void wg_wait(float (&d)[64]) {
#if defined(TOKENMILL_EMU)
    emu_wgmma_wait(N);
#elif defined(TM_WGMMA)
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
    wg_pin(d);
}

// One chunk's FP8 products for the calling warpgroup (the tiles at shared addresses at and bt:
// four K steps of 32 bytes), summed from zero into part and waited for.
DEVICE void wg_chunk_e4m3(float (&part)[64], uint32_t at, uint32_t bt) {
    wg_fence(part);
#pragma unroll
    for (int ks = 0; ks < 4; ks++) wg_mma_e4m3(part, wg_desc(at + 32 * ks), wg_desc(bt + 32 * ks), ks);
    wg_commit();
    wg_wait<0>(part);
}

// One chunk's BF16 products accumulated into acc; on return the previous chunk's are done and
// this one's are in flight.
DEVICE void wg_chunk_bf16(float (&acc)[64], uint32_t at, uint32_t bt) {
    wg_fence(acc);
#pragma unroll
    for (int ks = 0; ks < 4; ks++) wg_mma_bf16(acc, wg_desc(at + 32 * ks), wg_desc(bt + 32 * ks), 1);
    wg_commit();
    wg_wait<1>(acc);
}

// Starts the copies of one operand's chunk (rows r0 .. r0 + 127, K bytes k0 .. k0 + 127) into
// the swizzled tile s: piece p = threadIdx.x + 256·i is row p / 8, bytes 16·(p % 8) ..; rows
// past `rows` and K past `k` are zeros.
DEVICE void wg_load(unsigned char* s, const unsigned char* src, long long ld, int r0, int rows,
                    int k0, int k) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int p = threadIdx.x + 256 * i, r = p / 8, c = p % 8, kb = k0 + 16 * c;
        bool ok = r0 + r < rows && kb < k;
        cp_async16(s + r * 128 + ((c ^ (r & 7)) << 4), ok ? src + (long long)(r0 + r) * ld + kb : src,
                  ok);
    }
}

// The chunk's scales of the FP8 kernels, for the calling thread's accumulators (A's rows
// 64·h + 16·w + g + 8·x of the tile at row r0, B's columns 8·j + 2·t + q of the tile at
// column c0). Loaded before the products so that their latency hides there.
DEVICE void wg_scales(float (&s_a)[2], float (&s_b)[32], const float* sa, long long sa_outer,
                      long long sa_k, int a_blk, const float* sb, long long sb_outer,
                      long long sb_k, int b_blk, int r0, int c0, int m, int n, int kc) {
    const int h = threadIdx.x / 128, w = (threadIdx.x % 128) / WARP, lane = threadIdx.x % WARP;
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int x = 0; x < 2; x++)
        s_a[x] = mma_scale(sa, a_blk, sa_outer, sa_k, r0 + 64 * h + 16 * w + g + 8 * x, m, kc);
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
        for (int q = 0; q < 2; q++)
            s_b[2 * j + q] = mma_scale(sb, b_blk, sb_outer, sb_k, c0 + 8 * j + 2 * t + q, n, kc);
}

// DeepSeek-V3's promotion: a chunk's sums scaled and added into the FP32 accumulators, one
// fused multiply-add each by the product of the row's and the column's scales (rounded once,
// as DeepGEMM promotes; mma.cu's promotion gives the same bits). s_b(i): the scale of the
// thread's column 8·(i / 2) + 2·t + i % 2; `b_one`: every column of the tile has s_b(0) (B in
// 128 × 128 blocks), so the thread's two products of scales serve all 64 sums.
template <typename SB>
DEVICE void wg_promote(float (&acc)[64], const float (&part)[64], const float (&s_a)[2], SB s_b,
                       bool b_one) {
    if (b_one) {
        const float b = s_b(0), s[2] = {__fmul_rn(s_a[0], b), __fmul_rn(s_a[1], b)};
#pragma unroll
        for (int i = 0; i < 64; i++) acc[i] = fmaf(part[i], s[(i % 4) / 2], acc[i]);
        return;
    }
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
        for (int x = 0; x < 4; x++)
            acc[4 * j + x] =
                fmaf(part[4 * j + x], __fmul_rn(s_a[x / 2], s_b(2 * j + x % 2)), acc[4 * j + x]);
}

// Writes (or adds) the calling thread's accumulators of warpgroup h (threadIdx.x / 128) to C:
// the 128 × 128 tile at (r0, c0), inside m × n, in pairs of adjacent columns (tm_pair_store).
// When adding, every value of C the thread adds to is read before the first is written: read,
// add and write value by value made 64 reads of memory one after another, each waiting for the
// write before it (the compiler may not move a read of C above a write to C that it cannot
// tell apart).
DEVICE void wg_store(const float (&acc)[64], float* c, long long ldc, int r0, int c0, int m, int n,
                     int accumulate) {
    const int h = threadIdx.x / 128, w = (threadIdx.x % 128) / WARP, lane = threadIdx.x % WARP;
    const int g = lane / 4, t = lane % 4;
    const int r = r0 + 64 * h + 16 * w + g, col = c0 + 2 * t;  // pair (j, y): r + 8·y, col + 8·j
    const bool pairs = tm_pairs(c, ldc);
    tm_float2 old[32];
    if (accumulate) {
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int y = 0; y < 2; y++)
                old[2 * j + y] = tm_pair_load(c, ldc, r + 8 * y, col + 8 * j, m, n, pairs);
    }
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
        for (int y = 0; y < 2; y++) {
            tm_float2 v = {acc[4 * j + 2 * y], acc[4 * j + 2 * y + 1]};
            if (accumulate) v = {__fadd_rn(old[2 * j + y].x, v.x), __fadd_rn(old[2 * j + y].y, v.y)};
            tm_pair_store(c, ldc, r + 8 * y, col + 8 * j, m, n, pairs, v);
        }
}

// The GEMM body of the cp.async kernels below over byte rows (as mma.cu's mma_gemm): a chunk
// is 128 bytes of K (128 E4M3 codes or 64 BF16 values), a product's K step 32 bytes. A block
// of two warpgroups computes 128 × 128 of C, warpgroup h the rows 64·h ..; per chunk, four
// products, while the next chunks' copies are in flight. FP8: the chunk's products summed from
// zero by the tensor cores and waited for, then the promotion ((sum · scale_a) · scale_b added
// into FP32 accumulators), with the next four chunks' copies in flight; BF16: the tensor cores
// accumulate into acc directly and the products of one chunk stay in flight while the next
// chunk's are issued, so a stage is refilled only once the products two chunks back are done:
// the next three chunks' copies in flight. k: bytes of K; lda, ldb: bytes per row.
template <bool FP8>
DEVICE void wg_gemm(const unsigned char* a, long long lda, const float* sa, long long sa_outer,
                    long long sa_k, int a_blk, const unsigned char* b, long long ldb,
                    const float* sb, long long sb_outer, long long sb_k, int b_blk, float* c,
                    long long ldc, int m, int n, int k, int accumulate) {
    DYNAMIC_SHARED(unsigned char, raw);
    unsigned char* sm = raw + ((1024u - (smem_addr(raw) & 1023u)) & 1023u);
    const int r0 = blockIdx.y * 128, c0 = blockIdx.x * 128;
    const int h = threadIdx.x / 128;
    const int chunks = (k + 127) / 128;
    constexpr int AHEAD = FP8 ? WG_STAGES - 1 : WG_STAGES - 2;  // chunks copied ahead
#pragma unroll
    for (int s = 0; s < AHEAD; s++) {
        if (s < chunks) {
            wg_load(sm + s * 2 * WG_TILE, a, lda, r0, m, s * 128, k);
            wg_load(sm + s * 2 * WG_TILE + WG_TILE, b, ldb, c0, n, s * 128, k);
        }
        cp_async_commit();
    }
    float acc[64], part[64];
#pragma unroll
    for (int i = 0; i < 64; i++) acc[i] = part[i] = 0.0f;
    for (int kc = 0; kc < chunks; kc++) {
        cp_async_wait<AHEAD - 1>();  // this thread's copies of chunk kc are in
        wg_fence_proxy();
        // Everyone's are; and the stage refilled next is read: chunk kc - 1's (FP8, waited for
        // with 0 in flight) or kc - 2's (BF16, waited for with 1 in flight).
        __syncthreads();
        const int next = kc + AHEAD;
        if (next < chunks) {
            unsigned char* st = sm + (next % WG_STAGES) * 2 * WG_TILE;
            wg_load(st, a, lda, r0, m, next * 128, k);
            wg_load(st + WG_TILE, b, ldb, c0, n, next * 128, k);
        }
        cp_async_commit();
        const unsigned char* st = sm + (kc % WG_STAGES) * 2 * WG_TILE;
        const uint32_t at = smem_addr(st) + 64 * h * 128, bt = smem_addr(st + WG_TILE);
        if constexpr (FP8) {
            float s_a[2], s_b[32];
            wg_scales(s_a, s_b, sa, sa_outer, sa_k, a_blk, sb, sb_outer, sb_k, b_blk, r0, c0, m,
                      n, kc);
            wg_chunk_e4m3(part, at, bt);
            wg_promote(acc, part, s_a, [&](int i) { return s_b[i]; }, b_blk);
        } else {
            wg_chunk_bf16(acc, at, bt);
        }
    }
    if constexpr (!FP8) wg_wait<0>(acc);
    cp_async_wait<0>();  // no copy outlives the block (the last groups are empty)
    wg_store(acc, c, ldc, r0, c0, m, n, accumulate);
}

// fp8_mma_gemm_f32 (cu/mma.cu: the same arguments, table of groups and result) on wgmma.
// Launch: grid (ceil(N / 128), ceil(M / 128), groups), N and M a group's largest (M ≤ 65535 ·
// 128); block 256; dynamic shared memory WG_SMEM (97 KiB: the kernel opts in to more than
// 48 KiB, as every kernel does).
KERNEL void __launch_bounds__(256)
    fp8_wgmma_gemm_f32(const unsigned char* __restrict__ a, long long lda,
                       const float* __restrict__ sa, long long sa_outer, long long sa_k,
                       int a_blk, const unsigned char* __restrict__ b, long long ldb,
                       const float* __restrict__ sb, long long sb_outer, long long sb_k,
                       int b_blk, float* __restrict__ c, long long ldc,
                       const long long* __restrict__ desc, int accumulate) {
    const long long* d = desc + 8 * (long long)blockIdx.z;
    const int m = (int)d[0], n = (int)d[1], k = (int)d[2];
    if ((int)blockIdx.y * 128 >= m || (int)blockIdx.x * 128 >= n) return;
    wg_gemm<true>(a + d[3], lda, sa + d[5], sa_outer, sa_k, a_blk, b + d[4], ldb, sb + d[6],
                  sb_outer, sb_k, b_blk, c + d[7], ldc, m, n, k, accumulate);
}

// bf16_mma_gemm_f32 (cu/mma.cu: the same arguments, table of groups and result — products
// exact, summed in FP32 by the tensor cores) on wgmma. Launch: as fp8_wgmma_gemm_f32.
KERNEL void __launch_bounds__(256)
    bf16_wgmma_gemm_f32(const unsigned short* __restrict__ a, long long lda,
                        const unsigned short* __restrict__ b, long long ldb,
                        float* __restrict__ c, long long ldc,
                        const long long* __restrict__ desc, int accumulate) {
    const long long* d = desc + 8 * (long long)blockIdx.z;
    const int m = (int)d[0], n = (int)d[1], k = (int)d[2];
    if ((int)blockIdx.y * 128 >= m || (int)blockIdx.x * 128 >= n) return;
    const unsigned char* ab = reinterpret_cast<const unsigned char*>(a + d[3]);
    const unsigned char* bb = reinterpret_cast<const unsigned char*>(b + d[4]);
    wg_gemm<false>(ab, 2 * lda, nullptr, 0, 0, 0, bb, 2 * ldb, nullptr, 0, 0, 0, c + d[7], ldc,
                   m, n, 2 * k, accumulate);
}

// ---------------------------------------------------------------------------------------------
// The same GEMMs with the operands brought in by the Tensor Memory Accelerator and the block
// specialised by warpgroup, as DeepSeek-V3's own kernels (DeepGEMM) do on Hopper: warpgroup 2
// is the producer — one of its threads issues, per chunk, two TMA copies (`cp.async.bulk.tensor`
// of a 128 × 128-byte box of A and of B, written by the copy engine into shared memory in the
// 128-byte swizzle, rows and K past the operand's edge filled with zeros) — and warpgroups 0 and
// 1 are the consumers, each issuing the products of its 64 rows. Stages are handed over by
// memory barriers (`mbarrier`) rather than block-wide barriers: a stage's "full" barrier
// completes when the producer's arrivals and the copies' bytes are in; its "empty" barrier
// when the four warps of each consumer have finished reading it. So the consumers never wait
// for each other, the producer runs up to six chunks ahead, and the FP8 promotion of one chunk
// overlaps the copies of the next ones. The producer gives up registers (`setmaxnreg.dec` to
// 40) and the consumers take them (`setmaxnreg.inc` to 232), as their accumulators need.
//
// The operands are described by tensor maps (`CUtensorMap`, made on the host by
// cuTensorMapEncodeTiled: 8-bit elements, two dimensions — a group's K in bytes, then its rows —,
// the row length in bytes, a 128 × 128 box, the 128-byte swizzle, zeros out of bounds), two per
// group (A, then B) in global memory, so each group's edges bound its own copies. In the CPU
// emulation the copies, barriers and register hints are the shim's: a copy lands when a thread
// waits on its barrier (from global memory as it is then), so a stage read before its barrier
// completes shows in the results, and a copy into shared memory that products in flight read
// aborts.

#define TMA_STAGES 6
// Dynamic shared memory of the TMA kernels: the stages (A's and B's tiles), each stage's
// scales (FP8: A's 128 rows', then B's 128 columns'), the barriers (full, then empty, 8 bytes
// each per stage) and 1 KiB to align the stages.
#define TMA_SMEM (TMA_STAGES * (2 * WG_TILE + 256 * 4) + 2 * TMA_STAGES * 8 + 1024)

// mbarrier.init: the barrier expects `count` arrivals per phase (shared memory, 8 bytes).
DEVICE void mbar_init(uint64_t* bar, unsigned count) {
#if defined(TOKENMILL_EMU)
    emu_mbar_init(bar, count);
#elif defined(TM_WGMMA)
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
                 : "memory");
#else
    __trap();
#endif
}

// Makes the initialised barriers visible to the async proxy (the TMA unit) before use: the
// release of barrier initialisations, and the proxy fence over the block's shared memory (as
// CUTLASS and DeepGEMM each do; both are cheap).
DEVICE void mbar_fence_init() {
#if defined(TM_WGMMA)
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// One arrival on the barrier, releasing the thread's earlier writes (at the CTA's scope) to
// whoever waits for the phase it completes.
DEVICE void mbar_arrive(uint64_t* bar) {
#if defined(TOKENMILL_EMU)
    emu_mbar_arrive(bar);
#elif defined(TM_WGMMA)
    asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar))
                 : "memory");
#endif
}

// Tells the barrier that `bytes` more will come from copies this phase (no arrival).
DEVICE void mbar_expect(uint64_t* bar, unsigned bytes) {
#if defined(TOKENMILL_EMU)
    emu_mbar_expect(bar, bytes);
#elif defined(TM_WGMMA)
    asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)),
                 "r"(bytes)
                 : "memory");
#endif
}

// Waits until the barrier's phase of the given parity has completed (a fresh barrier counts
// its phase of parity 1 as completed, so the first wait with parity 1 passes), acquiring the
// writes its arrivals released (the producer's scales) — at the cluster's scope when CLUSTER,
// for arrivals that come from another block of the cluster.
template <bool CLUSTER = false>
DEVICE void mbar_wait(uint64_t* bar, unsigned parity) {
#if defined(TOKENMILL_EMU)
    emu_mbar_wait(bar, parity);
#elif defined(TM_WGMMA)
    uint32_t done = 0;
    do {
        if constexpr (CLUSTER)
            asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
                         "selp.u32 %0, 1, 0, p;\n}\n"
                         : "=r"(done)
                         : "r"(smem_addr(bar)), "r"(parity)
                         : "memory");
        else
            asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%1], %2;\n"
                         "selp.u32 %0, 1, 0, p;\n}\n"
                         : "=r"(done)
                         : "r"(smem_addr(bar)), "r"(parity)
                         : "memory");
    } while (!done);
#endif
}

// Orders the host's writing of a tensor map in global memory (a copy from the host: system
// scope, as the CUDA programming guide has it) before the TMA unit reads it.
DEVICE void tma_acquire(const uint64_t* map) {
#if defined(TM_WGMMA)
    asm volatile("fence.proxy.tensormap::generic.acquire.sys [%0], 128;\n" ::"l"(map) : "memory");
#endif
}

// The TMA copy of the box at element (x, y) of `map` into shared memory at `dst` (1024-byte
// aligned for the swizzle), its bytes counted on `bar`.
DEVICE void tma_load(unsigned char* dst, const uint64_t* map, int x, int y, uint64_t* bar) {
#if defined(TOKENMILL_EMU)
    emu_tma_load_2d(dst, map, x, y, bar);
#elif defined(TM_WGMMA)
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_addr(dst)),
        "l"(map), "r"(x), "r"(y), "r"(smem_addr(bar))
        : "memory");
#else
    __trap();
#endif
}

// The TMA copy of tma_load multicast to the blocks of the thread block cluster whose rank's bit
// is set in `mask`: the box lands at `dst`'s offset in the shared memory of each, its bytes
// counted on the barrier at `bar`'s offset in each.
DEVICE void tma_load_multicast(unsigned char* dst, const uint64_t* map, int x, int y, uint64_t* bar,
                               uint16_t mask) {
#if defined(TOKENMILL_EMU)
    emu_tma_load_2d_multicast(dst, map, x, y, bar, mask);
#elif defined(TM_WGMMA)
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(smem_addr(dst)),
        "l"(map), "r"(x), "r"(y), "r"(smem_addr(bar)), "h"(mask)
        : "memory");
#else
    __trap();
#endif
}

// The block's rank in its thread block cluster and the cluster's blocks (0 and 1 without one).
DEVICE unsigned cluster_rank() {
#if defined(TOKENMILL_EMU)
    return emu_cluster_ctarank();
#elif defined(TM_WGMMA)
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
#else
    return 0;
#endif
}
DEVICE unsigned cluster_blocks() {
#if defined(TOKENMILL_EMU)
    return emu_cluster_nctarank();
#elif defined(TM_WGMMA)
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(r));
    return r;
#else
    return 1;
#endif
}

// A barrier over every thread of the cluster, releasing each thread's earlier writes (its
// blocks' barriers initialised) to all after it.
DEVICE void cluster_sync() {
#if defined(TOKENMILL_EMU)
    emu_cluster_sync();
#elif defined(TM_WGMMA)
    asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
    __trap();
#endif
}

// One arrival on the barrier at `bar`'s offset in the shared memory of the cluster's block
// `rank` (`mapa`), releasing the thread's earlier reads and writes at the cluster's scope.
DEVICE void mbar_arrive_peer(uint64_t* bar, unsigned rank) {
#if defined(TOKENMILL_EMU)
    emu_mbar_arrive_peer(bar, rank);
#elif defined(TM_WGMMA)
    asm volatile(
        "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
        "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [remote];\n}\n" ::"r"(smem_addr(bar)),
        "r"(rank)
        : "memory");
#else
    __trap();
#endif
}

// The warpgroup's registers per thread after a warp specialisation (`setmaxnreg`, sm_90a; a
// hint the emulation has no use for).
template <int N>
DEVICE void wg_regs_fewer() {
#if defined(TM_WGMMA)
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
DEVICE void wg_regs_more() {
#if defined(TM_WGMMA)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

// The tiles of C a TMA kernel's blocks take in turn: block b takes tiles b, b + gridDim.x, …
// (a persistent grid when there are fewer blocks than tiles: a block's producer copies the next
// tile's first chunks while its consumers store the last tile's C). `count` groups of
// tiles_m × tiles_n tiles of 128 × 128 (the largest group's; a group's tiles past its own rows
// or columns are skipped by every warpgroup alike). Within a group the tiles go in bands of
// TMA_BAND rows of tiles, column after column inside a band, so that the blocks running at once
// share a few of A's row panels and B's column panels in L2 rather than one whole operand.
#define TMA_BAND 8

struct TmaTile {
    int z, r0, c0;
};

DEVICE TmaTile tma_tile(long long t, int tiles_m, int tiles_n) {
    const long long per = (long long)tiles_m * tiles_n, band_tiles = (long long)TMA_BAND * tiles_n;
    const long long z = t / per, rem = t - z * per;
    const long long band = rem / band_tiles, local = rem - band * band_tiles;
    const long long left = tiles_m - band * TMA_BAND, rows = left < TMA_BAND ? left : TMA_BAND;
    return {(int)z, (int)((band * TMA_BAND + local % rows) * 128), (int)(local / rows * 128)};
}

// The GEMM body of the TMA kernels: every tile of C the block takes (tma_tile), each as wg_gemm
// computes one, K in bytes (`elem` per value), with A's and B's chunks copied by the TMA unit
// from the tile's group's tensor maps (`maps`: two per group, A's then B's; boxes at K byte
// 128·kc and row r0 or c0). Block: 384 threads, warpgroups 0 and 1 the consumers, 2 the
// producer. The stages go round across tiles (chunk `it` of the block in stage it % TMA_STAGES),
// so the producer runs up to TMA_STAGES chunks ahead, into the next tile. FP8: the producer's 128
// threads also bring each chunk's scales into the stage (thread p A's for row r0 + p and B's for
// column c0 + p), so that their latency is the producer's, ahead of the products, and the
// consumers hold none in registers; each arrives on the stage's full barrier once they are
// written. The consumers release a stage once the promotion has read its scales (FP8), or once
// the next chunk's products are issued and its own are done (BF16; a tile's last, after its
// products are waited for).
//
// MC = 2: the blocks run in thread block clusters of two, which take tiles in pairs side by
// side along n (the same rows of A: block r of the cluster the columns c0 + 128·r), so that
// each block's producer copies half of A's chunk (64 rows, the map's box) and multicasts it
// into both blocks' stages — A read from L2 once for the two tiles, as DeepGEMM's kernels do.
// A stage is then written by both producers, so a block may refill it only once both blocks'
// consumers are done with it: each consumer warp arrives on the stage's empty barrier in both
// blocks (16 arrivals a phase), and each block's full barrier expects A's two halves and its
// own B. Both blocks take the same pairs and chunks, so their stages and phases stay in step;
// the second tile of a pair past the group's columns still copies its half of A for its peer,
// copies no B and computes nothing. Before the first copy the cluster meets (every block's
// barriers initialised), and before a block's end its producer waits for every arrival the
// other block's consumers owe its barriers.
template <bool FP8, int MC>
DEVICE void wg_tma_gemm(const long long* desc, const uint64_t* maps, const float* sa,
                        long long sa_outer, long long sa_k, int a_blk, const float* sb,
                        long long sb_outer, long long sb_k, int b_blk, float* c, long long ldc,
                        int accumulate, int tiles_m, int tiles_n, int count) {
    DYNAMIC_SHARED(unsigned char, raw);
    unsigned char* sm = raw + ((1024u - (smem_addr(raw) & 1023u)) & 1023u);
    float* scales = reinterpret_cast<float*>(sm + TMA_STAGES * 2 * WG_TILE);  // [stage][256]
    uint64_t* full = reinterpret_cast<uint64_t*>(scales + TMA_STAGES * 256);
    uint64_t* empty = full + TMA_STAGES;
    const int h = threadIdx.x / 128, w = (threadIdx.x % 128) / WARP, lane = threadIdx.x % WARP;
    const int g = lane / 4, t = lane % 4;
    const int elem = FP8 ? 1 : 2;
    // Launched without its clusters, or with clusters other than MC consecutive blocks along x
    // (which the tiles' order below takes them to be).
    if (MC > 1 && cluster_blocks() != MC) __trap();
    const int rank = MC > 1 ? (int)cluster_rank() : 0;
    if (MC > 1 && rank != (int)(blockIdx.x % MC)) __trap();
    // Tiles of C in units of MC side by side, and the units the blocks (clusters) take in turn.
    const int units_n = (tiles_n + MC - 1) / MC;
    const long long units = (long long)count * tiles_m * units_n;
    const long long first = blockIdx.x / MC, step = gridDim.x / MC;
    if (threadIdx.x == 0) {
        for (int s = 0; s < TMA_STAGES; s++) {
            // The producer's arrivals (FP8: each of its threads', with the scales) and the
            // copies' bytes.
            mbar_init(&full[s], FP8 ? 128 : 1);
            mbar_init(&empty[s], 8 * MC);  // one arrival per consumer warp of the cluster
        }
        mbar_fence_init();
    }
    if constexpr (MC > 1) cluster_sync();
    else __syncthreads();
    if (h == 2) {
        wg_regs_fewer<40>();
        const int p = threadIdx.x - 256;
        if (!FP8 && p != 0) return;
        int it = 0, acquired = -1;
        for (long long tt = first; tt < units; tt += step) {
            const TmaTile tile = tma_tile(tt, tiles_m, units_n);
            const long long* d = desc + 8 * (long long)tile.z;
            const int m = (int)d[0], n = (int)d[1], chunks = ((int)d[2] * elem + 127) / 128;
            const int c0 = tile.c0 * MC + 128 * rank;
            if (tile.r0 >= m || tile.c0 * MC >= n) continue;
            const bool mine = c0 < n;  // this block's tile holds columns
            const uint64_t* map = maps + 32 * (long long)tile.z;
            if (p == 0 && tile.z != acquired) {
                tma_acquire(map);
                tma_acquire(map + 16);
                acquired = tile.z;
            }
            for (int kc = 0; kc < chunks; kc++, it++) {
                const int s = it % TMA_STAGES;
                // The consumers (of both blocks, MC = 2) have finished with this stage's chunk
                // it - TMA_STAGES (the first round passes: a fresh barrier's phase of parity 1
                // counts as completed).
                mbar_wait<(MC > 1)>(&empty[s], ((it / TMA_STAGES) & 1) ^ 1);
                if (p == 0) {  // the copies first: they take longest
                    unsigned char* st = sm + s * 2 * WG_TILE;
                    mbar_expect(&full[s], mine ? 2 * WG_TILE : WG_TILE);
                    if constexpr (MC > 1)
                        tma_load_multicast(st + rank * (WG_TILE / MC), map, kc * 128,
                                           tile.r0 + rank * (128 / MC), &full[s],
                                           (uint16_t)((1u << MC) - 1));
                    else
                        tma_load(st, map, kc * 128, tile.r0, &full[s]);
                    if (mine) tma_load(st + WG_TILE, map + 16, kc * 128, c0, &full[s]);
                }
                if constexpr (FP8) {
                    if (mine) {
                        float* sc = scales + s * 256;
                        sc[p] = mma_scale(sa + d[5], a_blk, sa_outer, sa_k, tile.r0 + p, m, kc);
                        sc[128 + p] = mma_scale(sb + d[6], b_blk, sb_outer, sb_k, c0 + p, n, kc);
                    }
                }
                mbar_arrive(&full[s]);  // (releasing the scales written above)
            }
        }
        if constexpr (MC > 1) {
            // The other block's consumers arrive on this block's empty barriers until their
            // last chunk: this block stays until every one of those arrivals is in.
            for (int i = 0; i < TMA_STAGES; i++, it++)
                mbar_wait<true>(&empty[it % TMA_STAGES], ((it / TMA_STAGES) & 1) ^ 1);
        }
        return;
    }
    wg_regs_more<232>();
    // One arrival per warp on the stage's empty barrier (in every block of the cluster).
    auto release = [&](int s) {
        if (lane != 0) return;
        mbar_arrive(&empty[s]);
        if constexpr (MC > 1)
            for (int r = 1; r < MC; r++) mbar_arrive_peer(&empty[s], (unsigned)((rank + r) % MC));
    };
    int it = 0;
    for (long long tt = first; tt < units; tt += step) {
        const TmaTile tile = tma_tile(tt, tiles_m, units_n);
        const long long* d = desc + 8 * (long long)tile.z;
        const int m = (int)d[0], n = (int)d[1], chunks = ((int)d[2] * elem + 127) / 128;
        const int c0 = tile.c0 * MC + 128 * rank;
        if (tile.r0 >= m || tile.c0 * MC >= n) continue;
        if (c0 >= n) {  // (MC = 2) its peer's tile alone holds columns: take part, compute nothing
            for (int kc = 0; kc < chunks; kc++, it++) {
                mbar_wait(&full[it % TMA_STAGES], (it / TMA_STAGES) & 1);
                release(it % TMA_STAGES);
            }
            continue;
        }
        float acc[64], part[64];
#pragma unroll
        for (int i = 0; i < 64; i++) acc[i] = part[i] = 0.0f;
        for (int kc = 0; kc < chunks; kc++, it++) {
            const int s = it % TMA_STAGES;
            const unsigned char* st = sm + s * 2 * WG_TILE;
            const uint32_t at = smem_addr(st) + 64 * h * 128, bt = smem_addr(st + WG_TILE);
            mbar_wait(&full[s], (it / TMA_STAGES) & 1);
            if constexpr (FP8) {
                wg_chunk_e4m3(part, at, bt);
                const float* sc = scales + s * 256;
                const float s_a[2] = {sc[64 * h + 16 * w + g], sc[64 * h + 16 * w + g + 8]};
                wg_promote(
                    acc, part, s_a, [&](int i) { return sc[128 + 8 * (i / 2) + 2 * t + i % 2]; },
                    b_blk);
                // Every lane has read the stage's scales (lanes of a warp need not run in
                // step), then one arrival for the warp.
                __syncwarp();
                release(s);
            } else {
                wg_chunk_bf16(acc, at, bt);
                // The previous chunk's products are done: its stage may be refilled.
                if (kc > 0) release((it - 1) % TMA_STAGES);
            }
        }
        if constexpr (!FP8) {
            wg_wait<0>(acc);
            // The tile's last chunk is done too.
            if (chunks > 0) release((it - 1) % TMA_STAGES);
        }
        wg_store(acc, c + d[7], ldc, tile.r0, c0, m, n, accumulate);
    }
}

// fp8_wgmma_gemm_f32 with the operands copied by the TMA unit from tensor maps: `maps` holds
// two per group (A's, then B's; 128 bytes each, 16 × 64 bits) over the group's codes — its K
// bytes, then its rows —, so `a`'s and `b`'s codes are read only through them. The other
// arguments as fp8_wgmma_gemm_f32's, and the grid of tiles: `count` groups of tiles_m × tiles_n
// (the largest group's rows and columns in 128s). Launch: a grid of blocks in x alone, each
// taking tiles in turn (any number: one per SM for a persistent grid, one per tile); block 384;
// dynamic shared memory TMA_SMEM.
KERNEL void __launch_bounds__(384, 1)
    fp8_tma_gemm_f32(const float* __restrict__ sa, long long sa_outer, long long sa_k, int a_blk,
                     const float* __restrict__ sb, long long sb_outer, long long sb_k, int b_blk,
                     float* __restrict__ c, long long ldc, const long long* __restrict__ desc,
                     int accumulate, const uint64_t* __restrict__ maps, int tiles_m, int tiles_n,
                     int count) {
    wg_tma_gemm<true, 1>(desc, maps, sa, sa_outer, sa_k, a_blk, sb, sb_outer, sb_k, b_blk, c, ldc,
                         accumulate, tiles_m, tiles_n, count);
}

// bf16_wgmma_gemm_f32 with the operands copied by the TMA unit: `maps` as fp8_tma_gemm_f32's
// over the groups' BF16 values (K in bytes: two per value). Launch: as fp8_tma_gemm_f32.
KERNEL void __launch_bounds__(384, 1)
    bf16_tma_gemm_f32(float* __restrict__ c, long long ldc, const long long* __restrict__ desc,
                      int accumulate, const uint64_t* __restrict__ maps, int tiles_m, int tiles_n,
                      int count) {
    wg_tma_gemm<false, 1>(desc, maps, nullptr, 0, 0, 0, nullptr, 0, 0, 0, c, ldc, accumulate,
                          tiles_m, tiles_n, count);
}

// fp8_tma_gemm_f32 in thread block clusters of two that multicast A (wg_tma_gemm, MC = 2): the
// same arguments, A's maps with boxes of 64 rows (half a tile). Launch: as fp8_tma_gemm_f32,
// with clusters of 2 along x (an even number of blocks).
KERNEL void __launch_bounds__(384, 1)
    fp8_tma_mc_gemm_f32(const float* __restrict__ sa, long long sa_outer, long long sa_k,
                        int a_blk, const float* __restrict__ sb, long long sb_outer,
                        long long sb_k, int b_blk, float* __restrict__ c, long long ldc,
                        const long long* __restrict__ desc, int accumulate,
                        const uint64_t* __restrict__ maps, int tiles_m, int tiles_n, int count) {
    wg_tma_gemm<true, 2>(desc, maps, sa, sa_outer, sa_k, a_blk, sb, sb_outer, sb_k, b_blk, c, ldc,
                         accumulate, tiles_m, tiles_n, count);
}

// bf16_tma_gemm_f32 in clusters of two that multicast A, as fp8_tma_mc_gemm_f32.
KERNEL void __launch_bounds__(384, 1)
    bf16_tma_mc_gemm_f32(float* __restrict__ c, long long ldc, const long long* __restrict__ desc,
                         int accumulate, const uint64_t* __restrict__ maps, int tiles_m,
                         int tiles_n, int count) {
    wg_tma_gemm<false, 2>(desc, maps, nullptr, 0, 0, 0, nullptr, 0, 0, 0, c, ldc, accumulate,
                          tiles_m, tiles_n, count);
}
