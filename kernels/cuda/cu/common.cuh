// Shared device helpers for tokenmill's CUDA kernels, prepended to every kernel file.
//
// Conventions, so that one source compiles with NVRTC for the GPU and, as C++, for the CPU
// emulation of the CUDA execution model (`kernels/cuda/emu`, which runs every kernel in CI):
// - no #include (NVRTC gets no header path; the formats below are our own bit arithmetic);
// - kernels are `KERNEL void name(...)` (`extern "C" __global__`: unmangled, unique names);
// - helpers are `DEVICE` (static inline device functions);
// - dynamic shared memory through `DYNAMIC_SHARED(T, name)`, static shared as `__shared__`;
// - warp operations over full warps only (block sizes are multiples of 32);
// - fp32 arithmetic, FMA written as `fmaf` where it matters, no fast-math intrinsics.

#ifndef TOKENMILL_EMU
#define KERNEL extern "C" __global__
#define DEVICE static __device__ __forceinline__
// One declaration of the dynamic shared memory for the whole program (every file is compiled
// into one module, and a declaration inside a static helper would conflict with one in a kernel).
extern __shared__ __align__(16) unsigned char tm_dynamic_smem[];
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(tm_dynamic_smem)
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned short uint16_t;
typedef unsigned char uint8_t;
typedef unsigned long long uint64_t;
typedef long long int64_t;
#define TM_INF __int_as_float(0x7f800000)
#define TM_NAN __int_as_float(0x7fc00000)
#endif

#define WARP 32
#define FULL_MASK 0xffffffffu

DEVICE int tm_min(int a, int b) { return a < b ? a : b; }
DEVICE int tm_max(int a, int b) { return a > b ? a : b; }
DEVICE bool tm_isnan(float x) { return x != x; }
DEVICE bool tm_isfinite(float x) { return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u; }

// Sum over the 32 lanes of a warp; every lane gets the result.
DEVICE float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Maximum over the 32 lanes of a warp; every lane gets the result.
DEVICE float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds 32 floats of shared memory, reused after the call returns.
DEVICE float block_sum(float v, float* scratch) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Maximum over the block, as block_sum.
DEVICE float block_max(float v, float* scratch) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -TM_INF;
    return warp_max(v);
}

// f32 -> bf16 bits, round to nearest even; NaN stays a quiet NaN (kernels/src/bf16.rs).
DEVICE uint16_t f32_to_bf16(float x) {
    uint32_t b = __float_as_uint(x);
    if (tm_isnan(x)) return (uint16_t)((b >> 16) | 0x0040u);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

DEVICE float bf16_to_f32(uint16_t h) { return __uint_as_float(((uint32_t)h) << 16); }

DEVICE float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// f32 -> FP8 E4M3FN code (bias 7, max 448, no infinities, NaN = 0x7f), round to nearest
// even, saturating to ±448; NaN stays NaN. The same codes as `Fp8Format::E4M3.encode_saturating`.
DEVICE uint8_t f32_to_e4m3(float x) {
    uint32_t b = __float_as_uint(x);
    uint8_t sign = (uint8_t)((b >> 24) & 0x80u);
    uint32_t a = b & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7f;          // NaN
    if (a >= 0x43e00000u) return sign | 0x7e;         // >= 448 (and inf): saturate
    if (a < 0x3c800000u) {                            // < 2^-6: subnormal, multiples of 2^-9
        float m = __uint_as_float(a) * 512.0f;        // exact
        // round half to even on an integer in [0, 8]
        float f = floorf(m);
        float r = m - f;
        uint32_t n = (uint32_t)f;
        if (r > 0.5f || (r == 0.5f && (n & 1u))) n += 1;
        return sign | (uint8_t)n;                     // n == 8 is the first normal: code 0x08
    }
    // normal: keep 3 mantissa bits with round to nearest even on the f32 bits
    uint32_t lsb = (a >> 20) & 1u;
    uint32_t r = a + 0x7ffffu + lsb;
    r &= 0xfff00000u;
    if (r >= 0x43e00000u) return sign | 0x7e;         // rounded up to 480: saturate to 448
    uint32_t e = (r >> 23) - 127 + 7;                 // biased E4M3 exponent, 1..15
    uint32_t m = (r >> 20) & 7u;
    return sign | (uint8_t)((e << 3) | m);
}

// FP8 E4M3FN code -> f32.
DEVICE float e4m3_to_f32(uint8_t c) {
    uint32_t sign = ((uint32_t)c & 0x80u) << 24;
    uint32_t e = ((uint32_t)c >> 3) & 0xfu, m = (uint32_t)c & 7u;
    if (e == 15 && m == 7) return __uint_as_float(sign | 0x7fc00000u);
    float v;
    if (e == 0) v = (float)m * 0.001953125f;          // m · 2^-9
    else v = __uint_as_float(((e - 7 + 127) << 23) | (m << 20));
    return __uint_as_float(__float_as_uint(v) | sign);
}

// f32 with its mantissa truncated to `bits` bits (the FP8 tensor-core accumulator model of
// kernels/src/cpu/lowp.rs); non-finite values pass through.
DEVICE float truncate_mantissa(float x, int bits) {
    if (!tm_isfinite(x)) return x;
    uint32_t drop = 23 - (uint32_t)bits;
    return __uint_as_float(__float_as_uint(x) & ~((1u << drop) - 1u));
}

// 16-byte vectors (CUDA's float4 / uint4 under our own names, so that the CPU emulation needs
// no vector types): a load or store through one is a single 128-bit access on the GPU, and
// its address must be 16-byte aligned.
struct alignas(16) tm_float4 { float x, y, z, w; };
struct alignas(16) tm_uint4 { uint32_t x, y, z, w; };

// True when `p` is 16-byte aligned (a tm_float4 / tm_uint4 access is allowed).
DEVICE bool tm_aligned16(const void* p) { return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0; }

// Two adjacent floats (CUDA's float2): a single 64-bit access on the GPU, 8-byte aligned.
struct alignas(8) tm_float2 { float x, y; };

// The tensor-core GEMMs' results go to C in pairs of adjacent columns (col, col + 1) of a row,
// col even: a pair is one 8-byte access when C's start is 8-byte aligned and its rows hold an
// even number of floats (`tm_pairs`), else two 4-byte ones; the parts outside m × n are
// neither read (zeros) nor written.
DEVICE bool tm_pairs(const float* c, long long ldc) {
    return (ldc & 1) == 0 && (reinterpret_cast<unsigned long long>(c) & 7ull) == 0;
}
DEVICE tm_float2 tm_pair_load(const float* c, long long ldc, int r, int col, int m, int n,
                              bool pairs) {
    tm_float2 v = {0.0f, 0.0f};
    if (r >= m || col >= n) return v;
    const float* p = c + (long long)r * ldc + col;
    if (pairs && col + 1 < n) return *reinterpret_cast<const tm_float2*>(p);
    v.x = p[0];
    if (col + 1 < n) v.y = p[1];
    return v;
}
DEVICE void tm_pair_store(float* c, long long ldc, int r, int col, int m, int n, bool pairs,
                          tm_float2 v) {
    if (r >= m || col >= n) return;
    float* p = c + (long long)r * ldc + col;
    if (pairs && col + 1 < n) {
        *reinterpret_cast<tm_float2*>(p) = v;
        return;
    }
    p[0] = v.x;
    if (col + 1 < n) p[1] = v.y;
}

// The scale of outer index i (rows beyond `outer`: 0) in chunk kc of cuBLASLt's block-scaled
// FP8 layouts (quant.cu's fp8_quantize_lt_f32; read by mma.cu's and wgmma.cu's GEMMs): per
// 1 × 128 tile (blk 0) or per 128 × 128 block (blk 1), at base + (i or i / 128) · s_outer + kc · s_k.
DEVICE float mma_scale(const float* base, int blk, long long s_outer, long long s_k, int i,
                       int outer, int kc) {
    if (i >= outer) return 0.0f;
    long long o = blk ? i / 128 : i;
    return base[o * s_outer + (long long)kc * s_k];
}

// Asynchronous copies from global to shared memory (`cp.async`, sm_80 and later; mma.cu's and
// wgmma.cu's operand pipelines). In the CPU emulation each copy is made when its thread waits
// for its group (shim/emu.h).
// The shared-memory address (the shared window's offset) of a pointer into shared memory.
DEVICE uint32_t smem_addr(const void* p) {
#if defined(TOKENMILL_EMU)
    return emu_smem_offset(p);
#else
    return (uint32_t)__cvta_generic_to_shared(p);
#endif
}

// An asynchronous copy of 16 bytes from global to shared memory; zeros where !valid (src is
// not read then).
DEVICE void cp_async16(unsigned char* dst, const unsigned char* src, bool valid) {
#if defined(TOKENMILL_EMU)
    emu_cp_async16(dst, src, valid ? 16u : 0u);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
#else
    __trap();
#endif
}

// Closes the thread's group of asynchronous copies.
DEVICE void cp_async_commit() {
#if defined(TOKENMILL_EMU)
    emu_cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of the thread's groups of copies are in flight.
template <int N>
DEVICE void cp_async_wait() {
#if defined(TOKENMILL_EMU)
    emu_cp_async_wait(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
