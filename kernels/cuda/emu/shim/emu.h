// The CUDA execution model on the CPU, for running tokenmill's kernel sources (kernels/cuda/cu)
// in CI without a GPU: force-included before common.cuh when the sources are compiled as C++.
//
// Every CUDA thread of a block is a fiber (its own stack and registers, ucontext) that the
// launcher (emu.cpp: `tm_emu_run_block`) runs on the calling OS thread, round robin, each until
// it waits at a barrier or returns; blocks run one after another (a cluster's blocks together,
// their threads' fibers in one round robin), so `__shared__` (a function-local static) is the
// block's shared memory — which the kernels that run in clusters do not use, their dynamic
// shared memory being each block's own. `__syncthreads` is a barrier over the
// block, warp shuffles exchange through a per-warp slot array between two barriers over the
// warp, and a thread that returns drops out of both barriers (as an exited thread leaves
// bar.sync on the GPU). Nothing runs between two switches but one fiber, so every store a
// thread made before a barrier is seen by the others after it.
#pragma once
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#define TOKENMILL_EMU 1

struct dim3 {
    unsigned x, y, z;
};

// A barrier over the fibers of a block or a warp: `live` members (those not returned yet),
// `arrived` of them waiting, `gen` counting completed phases.
struct EmuBar {
    int live, arrived;
    unsigned gen;
};

// A thread's asynchronous work in flight: its cp.async copies and wgmma products; and the
// block's shared memory that products in flight read (emu.cpp).
struct EmuAsync;
struct EmuInflight;
struct EmuCluster;

struct EmuBlock {
    dim3 grid, dim, idx;
    EmuBar all;
    EmuBar* warps;
    uint64_t* lanes;
    uint32_t* mma;  // per thread, the 6 fragment registers of an emulated mma
    unsigned char* dyn_smem;
    size_t dyn_bytes;
    EmuAsync* async;  // per thread
    EmuInflight* inflight;
    // Counts the events that may let a waiting thread on (a barrier arrival, a thread's return,
    // an mbarrier's arrival or copy): a memory-barrier wait that sees none in three rounds of
    // every other thread is a deadlock, and aborts. The block's own count, or its cluster's
    // (whose blocks arrive on one another's barriers).
    unsigned long* progress;
    unsigned long own_progress;
    // The thread block cluster the block runs in (null: a launch without clusters, a cluster of
    // one), and the block's rank in it (%cluster_ctarank).
    EmuCluster* cluster;
    unsigned rank;
};

// A thread block cluster: its blocks, run together (their threads' fibers in one round robin),
// by rank; a barrier over all their threads (`barrier.cluster`); their shared count of
// progress.
struct EmuCluster {
    unsigned size;
    EmuBlock* blocks[8];
    EmuBar all;
    unsigned long progress;
};

// Waits until every live member of `b` has arrived (emu.cpp).
void emu_wait(EmuBar& b);

struct EmuThread {
    EmuBlock* block;
    dim3 tid;
    unsigned linear;
    unsigned fiber;  // the thread's index among the fibers run together (its cluster's)
};

extern thread_local EmuThread emu_thread;

#define threadIdx (emu_thread.tid)
#define blockIdx (emu_thread.block->idx)
#define blockDim (emu_thread.block->dim)
#define gridDim (emu_thread.block->grid)

#define KERNEL extern "C"
#define DEVICE static inline
#define __shared__ static
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu_thread.block->dyn_smem)
#define TM_INF (INFINITY)
#define TM_NAN (NAN)

inline void __syncthreads() { emu_wait(emu_thread.block->all); }
inline void __syncwarp(unsigned = 0xffffffffu) {
    emu_wait(emu_thread.block->warps[emu_thread.linear / 32]);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

inline uint32_t __float_as_uint(float x) { return std::bit_cast<uint32_t>(x); }
inline float __uint_as_float(uint32_t x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }

template <typename T>
inline T emu_exchange(T v, unsigned src_lane) {
    EmuBlock* b = emu_thread.block;
    unsigned t = emu_thread.linear, w = t / 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    b->lanes[t] = bits;
    emu_wait(b->warps[w]);
    uint64_t r = b->lanes[w * 32 + (src_lane % 32)];
    emu_wait(b->warps[w]);
    T out;
    std::memcpy(&out, &r, sizeof(T));
    return out;
}

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32) {
    return emu_exchange(v, (emu_thread.linear % 32) ^ (unsigned)lane_mask);
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src_lane, int = 32) {
    return emu_exchange(v, (unsigned)src_lane);
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int = 32) {
    unsigned lane = emu_thread.linear % 32;
    return emu_exchange(v, lane + delta < 32 ? lane + delta : lane);
}

// `mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32` over the calling thread's warp (every
// lane calls it with its fragments; emu.cpp): d += A · B with A 16 × 32 and B 32 × 8 in E4M3, as
// the PTX ISA lays out the fragments of lane l = 4·g + t — A row g in registers a[0] (K 4t..4t+3)
// and a[2] (K 16+4t..), row g + 8 in a[1] and a[3]; B column g in b[0] (K 4t..4t+3) and b[1]
// (K 16+4t..); each register's lowest byte the lowest K —, d[0..1] D[g][2t..2t+1], d[2..3]
// D[g+8][2t..2t+1]. The products are exact; their sum and d's are rounded to FP32 once (the
// tensor cores' own accumulation order and precision are not modelled).
void emu_mma_e4m3_m16n8k32(float* d, const uint32_t* a, const uint32_t* b);
// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` likewise: A 16 × 16 and B 16 × 8 in
// BF16, two values per register (the low half the lower K) — A row g in a[0] (K 2t..2t+1) and
// a[2] (K 8+2t..), row g + 8 in a[1] and a[3]; B column g in b[0] (K 2t..2t+1) and b[1]
// (K 8+2t..) —, d as above; products exact, rounded to FP32 once.
void emu_mma_bf16_m16n8k16(float* d, const uint32_t* a, const uint32_t* b);

// Asynchronous copies (`cp.async.cg.shared.global` of 16 bytes, zero-filled past `src_size`,
// `cp.async.commit_group`, `cp.async.wait_group n`): a copy is made when its thread waits for
// its group, from global memory as it is then, so a kernel that reads the destination before
// the wait reads what was there before.
void emu_cp_async16(void* dst, const void* src, unsigned src_size);
void emu_cp_async_commit();
void emu_cp_async_wait(unsigned n);

// The shared window's address of a pointer into the block's dynamic shared memory (its first
// byte at 0; `__cvta_generic_to_shared`): what matrix descriptors hold.
uint32_t emu_smem_offset(const void* p);

// `wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 d, da, db, scale_d, 1, 1` for the
// calling thread of its warpgroup (blockDim.x a multiple of 128): D (+)= A · Bᵀ, A 64 × 32 and
// B 128 × 32 E4M3 codes in shared memory, K-major, each given by a matrix descriptor — start
// address >> 4 in bits 0–13, stride byte offset (between groups of 8 rows) >> 4 in bits
// 32–45, swizzle mode in bits 62–63 (only 1, the 128-byte swizzle, is modelled: element (i, κ)
// at start + (i / 8)·SBO + (i % 8)·128 + κ, that address's bits 4–6 XORed with its bits 7–9;
// base offset 0) —, d the thread's 64 accumulators as the PTX ISA lays them out: thread
// T = 32·w + 4·g + t holds D[16·w + g + 8·(x / 2)][8·j + 2·t + x % 2] in d[4·j + x]. The
// product is computed when the thread waits for its group (`emu_wgmma_wait`), from shared
// memory as it is then; products exact, each output's sum and d rounded to FP32 once. A
// cp.async into shared memory that a product in flight reads (the 1024-byte swizzle atoms its
// descriptors span) aborts: on a GPU the copy could land before the tensor cores read. So does
// a block whose threads return with products still in flight.
void emu_wgmma_e4m3_m64n128k32(float* d, uint64_t da, uint64_t db, int scale_d);
// `wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 d, da, db, scale_d, 1, 1, 0, 0`
// likewise: A 64 × 16 and B 128 × 16 BF16 values, K-major (no transpose), value κ of a row at
// its bytes 2κ, 2κ + 1 (little-endian) — the same 32 bytes of each row as the E4M3 form.
void emu_wgmma_bf16_m64n128k16(float* d, uint64_t da, uint64_t db, int scale_d);
void emu_wgmma_commit();
void emu_wgmma_wait(unsigned n);

// Memory barriers in shared memory (`mbarrier`, 8 bytes each; the state is the shim's, kept
// by the barrier's shared-memory address): `emu_mbar_init` (`mbarrier.init`: `count` arrivals
// expected per phase), `emu_mbar_arrive` (`mbarrier.arrive`), `emu_mbar_expect`
// (`mbarrier.expect_tx`: that many more bytes of copies expected this phase), and
// `emu_mbar_wait` (`mbarrier.try_wait.parity` until it passes: until the phase of that parity
// has completed — a fresh barrier's phase of parity 1 counts as completed). A phase completes
// when its arrivals are in and its expected bytes have been copied. Aborts on a barrier never
// initialised, more arrivals than expected, or a wait that can never pass (no thread of the
// block does anything for three rounds).
void emu_mbar_init(uint64_t* bar, unsigned count);
void emu_mbar_arrive(uint64_t* bar);
void emu_mbar_expect(uint64_t* bar, unsigned bytes);
void emu_mbar_wait(uint64_t* bar, unsigned parity);

// `cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [dst],
// [map, {x, y}], [bar]`: the TMA copy of the box at element (x, y) of the tensor map `map` (made
// by `tm_emu_tensor_map_encode`: the emulated driver's cuTensorMapEncodeTiled) into shared
// memory at `dst`, row after row of the box (each row of box0 elements), in the map's 128-byte
// swizzle (a shared-memory address's bits 4–6 XORed with its bits 7–9, as the wgmma
// descriptors read it); elements outside the tensor are zeros; the box's bytes complete on
// `bar`. The copy is made when a thread waits on `bar`, from global memory as it is then — so a
// thread that reads the stage before its barrier's phase completes reads what was there
// before —; a copy into shared memory that wgmma products in flight read aborts, at the copy's
// issue and when it lands.
void emu_tma_load_2d(void* dst, const uint64_t* map, int x, int y, uint64_t* bar);

// Thread block clusters (sm_90): `%cluster_ctarank` and `%cluster_nctarank` (0 and 1 without a
// cluster); `barrier.cluster.arrive.release` then `barrier.cluster.wait.acquire`, over every
// thread of the cluster that has not returned; `mbarrier.arrive.release.cluster` on the barrier
// at `bar`'s offset in the shared memory of the cluster's block `rank` (`mapa`); and the TMA
// copy above with `.multicast::cluster`: the same box into the shared memory of every block of
// the cluster whose rank's bit is set in `mask`, at `dst`'s offset, its bytes completing on the
// barrier at `bar`'s offset in each — each copy made when a thread of that block waits on it.
// An arrival or a copy for a block every thread of which has returned aborts (its shared
// memory may be another block's by then on a GPU).
unsigned emu_cluster_ctarank();
unsigned emu_cluster_nctarank();
void emu_cluster_sync();
void emu_mbar_arrive_peer(uint64_t* bar, unsigned rank);
void emu_tma_load_2d_multicast(void* dst, const uint64_t* map, int x, int y, uint64_t* bar,
                               uint16_t mask);

// The emulation's tensor map (`CUtensorMap`, 128 bytes): a 2-D tensor of `elem_bytes`-byte
// elements at `addr`, `dim0` elements per row, `dim1` rows, rows `stride1` bytes apart; boxes of
// box0 × box1 elements; swizzle 128 (bytes) — the only mode modelled. Returns null when
// cuTensorMapEncodeTiled accepts these, else why not (its rules: the address 16-byte aligned,
// dimensions from 1 to 2³², the stride a multiple of 16 below 2⁴⁰ holding a row, box sides
// from 1 to 256, a box row a multiple of 16 bytes and, with the 128-byte swizzle, at most 128).
extern "C" const char* tm_emu_tensor_map_encode(uint64_t* map, unsigned elem_bytes,
                                                const void* addr, uint64_t dim0, uint64_t dim1,
                                                uint64_t stride1, unsigned box0, unsigned box1,
                                                unsigned swizzle);

inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    return std::atomic_ref<unsigned>(*p).fetch_add(v);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
inline int atomicMax(int* p, int v) {
    std::atomic_ref<int> a(*p);
    int old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
    std::atomic_ref<unsigned> a(*p);
    unsigned old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}

// Round-to-nearest single-precision multiply and add that are never contracted into an FMA
// (CUDA's __fmul_rn / __fadd_rn; this emulation compiles with -ffp-contract=off anyway).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __double2float_rn(double x) { return (float)x; }

// A kernel's own abort (`trap`): the launch fails on a GPU; the emulation stops.
[[noreturn]] inline void __trap() {
    std::fprintf(stderr, "tokenmill CUDA emulation: a kernel trapped\n");
    std::abort();
}

// Occupancy hints for the GPU compiler; nothing to do on the CPU.
#define __launch_bounds__(...)
