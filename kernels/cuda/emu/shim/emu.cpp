// The block and thread bookkeeping of the CPU emulation (see emu.h): a block's CUDA threads
// as fibers on the calling OS thread. Called through a C ABI by the Rust launcher (src/lib.rs)
// and the emulated driver (driver/driver.cpp).
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

#include "emu.h"

thread_local EmuThread emu_thread;

namespace {

// Each fiber's stack; 256 KiB as the GPU's per-thread local memory is far smaller, with a
// guard page below it so an overflow faults instead of writing into the next stack.
constexpr size_t kStack = 256 << 10;
constexpr size_t kGuard = 4096;

#if defined(__x86_64__)
// A fiber switch without glibc's swapcontext, which makes a system call for the signal mask
// on every switch (70 % of an emulated training step's time): the callee-saved registers,
// MXCSR and the x87 control word pushed on the stack being left, its stack pointer stored in
// `*from`, and the same popped from the stack `to`. A new fiber's stack is laid out as if it
// had switched away just before entering `fiber_main` (see `tm_emu_run_block`).
extern "C" void tm_emu_switch(void** from, void* to);
asm(R"(
    .text
    .globl tm_emu_switch
    .hidden tm_emu_switch
    .type tm_emu_switch, @function
tm_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tm_emu_switch, .-tm_emu_switch
)");

struct Context {
    void* sp;
};
#else
struct Context {
    ucontext_t uc;
};
#endif

struct Fiber {
    Context ctx;
    dim3 tid;
    bool done;
};

struct Run {
    Context sched;
    Fiber* cur;
    int prefer;  // a fiber to run next (a memory barrier's waiter whose phase completed), or -1
    void (*fn)(void*);
    void* arg;
};

thread_local Run* emu_run = nullptr;

// Saves the running context in `from` and resumes `to`.
inline void jump(Context& from, Context& to) {
#if defined(__x86_64__)
    tm_emu_switch(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
}

// The stacks, kept per OS thread from launch to launch (the pages a kernel touched stay).
std::vector<char*>& stacks(size_t n) {
    thread_local std::vector<char*> pool;
    while (pool.size() < n) {
        void* m = mmap(nullptr, kStack + kGuard, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED || mprotect(m, kGuard, PROT_NONE) != 0) {
            std::perror("tokenmill CUDA emulation: a fiber stack");
            std::abort();
        }
        pool.push_back(static_cast<char*>(m) + kGuard);
    }
    return pool;
}

void yield() { jump(emu_run->cur->ctx, emu_run->sched); }

void drop(EmuBar& b) {
    (*emu_thread.block->progress)++;
    b.live--;
    if (b.arrived > 0 && b.arrived == b.live) {
        b.arrived = 0;
        b.gen++;
    }
}

void fiber_main() {
    emu_run->fn(emu_run->arg);
    EmuBlock* b = emu_thread.block;
    drop(b->warps[emu_thread.linear / 32]);
    drop(b->all);
    if (b->cluster) drop(b->cluster->all);
    emu_run->cur->done = true;
#if defined(__x86_64__)
    // Never resumed: the scheduler makes a new stack frame for the block's next run.
    jump(emu_run->cur->ctx, emu_run->sched);
    __builtin_unreachable();
#endif
    // (ucontext: returning resumes the scheduler through uc_link.)
}

}  // namespace

void emu_wait(EmuBar& b) {
    (*emu_thread.block->progress)++;
    unsigned g = b.gen;
    if (++b.arrived == b.live) {
        b.arrived = 0;
        b.gen++;
        return;
    }
    while (b.gen == g) yield();
}

namespace {

// An E4M3FN code's value (bias 7, subnormals, S.1111.111 NaN, no infinities).
double e4m3_value(uint32_t c) {
    uint32_t e = (c >> 3) & 15, m = c & 7;
    if (e == 15 && m == 7) return NAN;
    double v = e == 0 ? std::ldexp((double)m, -9) : std::ldexp((double)(8 + m), (int)e - 10);
    return (c & 0x80) ? -v : v;
}

}  // namespace

namespace {

// One warp's mma: every lane's fragments exchanged through the block's per-thread slots, then
// each lane's four outputs d[x] += Σ_k A[g + 8·(x / 2)][k] · B[k][2t + x % 2], the products
// exact in double and rounded to FP32 once. `value(reg, k)`: element k of a fragment register.
template <typename A, typename B>
void warp_mma(float* d, const uint32_t* a, const uint32_t* b, unsigned kdim, A at_a, B at_b) {
    EmuBlock* blk = emu_thread.block;
    unsigned t = emu_thread.linear, w = t / 32, lane = t % 32;
    uint32_t* mine = blk->mma + (size_t)t * 6;
    for (int i = 0; i < 4; i++) mine[i] = a[i];
    mine[4] = b[0];
    mine[5] = b[1];
    emu_wait(blk->warps[w]);  // every lane's fragments are in
    const uint32_t* frag = blk->mma + (size_t)w * 32 * 6;
    unsigned g = lane / 4, q = lane % 4;
    for (unsigned x = 0; x < 4; x++) {
        unsigned r = g + 8 * (x / 2), n = 2 * q + x % 2;
        double s = 0.0;
        for (unsigned k = 0; k < kdim; k++) s += at_a(frag, r, k) * at_b(frag, k, n);
        d[x] = (float)((double)d[x] + s);
    }
    emu_wait(blk->warps[w]);  // every lane has read before any writes again
}

}  // namespace

void emu_mma_e4m3_m16n8k32(float* d, const uint32_t* a, const uint32_t* b) {
    auto byte = [](uint32_t reg, unsigned k) { return (reg >> (8 * (k % 4))) & 0xff; };
    // A[r][k]: lane 4·(r % 8) + (k % 16) / 4, register 2·(k / 16) + r / 8.
    auto at_a = [&](const uint32_t* frag, unsigned r, unsigned k) {
        unsigned l = (r % 8) * 4 + (k % 16) / 4;
        return e4m3_value(byte(frag[l * 6 + 2 * (k / 16) + r / 8], k));
    };
    // B[k][n]: lane 4·n + (k % 16) / 4, register k / 16.
    auto at_b = [&](const uint32_t* frag, unsigned k, unsigned n) {
        unsigned l = n * 4 + (k % 16) / 4;
        return e4m3_value(byte(frag[l * 6 + 4 + k / 16], k));
    };
    warp_mma(d, a, b, 32, at_a, at_b);
}

void emu_mma_bf16_m16n8k16(float* d, const uint32_t* a, const uint32_t* b) {
    auto half = [](uint32_t reg, unsigned k) {
        uint32_t bits = (reg >> (16 * (k % 2))) & 0xffff;
        float v;
        uint32_t f = bits << 16;
        std::memcpy(&v, &f, 4);
        return (double)v;
    };
    // A[r][k]: lane 4·(r % 8) + (k % 8) / 2, register 2·(k / 8) + r / 8.
    auto at_a = [&](const uint32_t* frag, unsigned r, unsigned k) {
        unsigned l = (r % 8) * 4 + (k % 8) / 2;
        return half(frag[l * 6 + 2 * (k / 8) + r / 8], k);
    };
    // B[k][n]: lane 4·n + (k % 8) / 2, register k / 8.
    auto at_b = [&](const uint32_t* frag, unsigned k, unsigned n) {
        unsigned l = n * 4 + (k % 8) / 2;
        return half(frag[l * 6 + 4 + k / 8], k);
    };
    warp_mma(d, a, b, 16, at_a, at_b);
}

struct EmuCopy {
    unsigned char* dst;
    const unsigned char* src;
    unsigned size;
    unsigned group;
};

struct EmuWgmma {
    float* d;
    uint64_t da, db;
    int scale_d;
    bool bf16;
    unsigned group;
};

struct EmuAsync {
    std::vector<EmuCopy> copies;
    unsigned copy_groups = 0;  // committed
    std::vector<EmuWgmma> products;
    unsigned product_groups = 0;
};

// A TMA copy waiting on its memory barrier: the box at (x, y) of a tensor map into shared
// memory at offset `dst`.
struct EmuTma {
    uint64_t map[16];
    uint64_t dst;
    int x, y;
};

// A memory barrier: arrivals expected per phase, still to come this phase, bytes of copies
// expected and not yet made (may go below zero for a moment, as on a GPU), completed phases,
// and the copies that complete on it.
struct EmuMbar {
    int expected, pending;
    long long tx;
    unsigned phase;
    std::vector<EmuTma> copies;
    int waiter;  // the last thread that waited on the barrier in vain, or -1
};

// The block's asynchronous state shared by its threads: the shared-memory ranges [lo, hi) its
// products in flight read, each with the number of products (of any thread) reading it; its
// memory barriers by shared-memory offset.
struct EmuInflight {
    std::map<std::pair<uint64_t, uint64_t>, int> ranges;
    std::map<uint64_t, EmuMbar> mbars;
};

namespace {

[[noreturn]] void emu_fail(const char* what) {
    std::fprintf(stderr, "tokenmill CUDA emulation: %s\n", what);
    std::abort();
}

EmuAsync& my_async() { return emu_thread.block->async[emu_thread.linear]; }

// A matrix descriptor's start address and stride byte offset (bytes); the modes it may hold
// are checked here.
struct Desc {
    uint64_t start, sbo;
};

Desc decode(uint64_t desc) {
    if ((desc >> 62) != 1) emu_fail("wgmma: only the 128-byte swizzle is modelled");
    if (((desc >> 49) & 7) != 0) emu_fail("wgmma: a base offset is not modelled");
    return {(desc & 0x3fff) << 4, ((desc >> 32) & 0x3fff) << 4};
}

// Byte κ of row i of a K-major operand in shared memory at descriptor `desc`.
unsigned char desc_byte(uint64_t desc, unsigned i, unsigned kappa) {
    EmuBlock* b = emu_thread.block;
    auto [start, sbo] = decode(desc);
    uint64_t at = start + (i / 8) * sbo + (i % 8) * 128 + kappa;
    at ^= ((at >> 7) & 7) << 4;
    if (at >= b->dyn_bytes) emu_fail("wgmma: a descriptor past the dynamic shared memory");
    return b->dyn_smem[at];
}

// Element κ of row i: an E4M3 code, or a BF16 value from two bytes.
double desc_value(uint64_t desc, unsigned i, unsigned kappa, bool bf16) {
    if (!bf16) return e4m3_value(desc_byte(desc, i, kappa));
    uint32_t bits = (uint32_t)desc_byte(desc, i, 2 * kappa) |
                    ((uint32_t)desc_byte(desc, i, 2 * kappa + 1) << 8);
    return (double)std::bit_cast<float>(bits << 16);
}

// The shared memory a descriptor of `rows` rows spans: from its first 1024-byte swizzle atom
// to the end of the atom of its last group of 8 rows.
std::pair<uint64_t, uint64_t> desc_span(uint64_t desc, unsigned rows) {
    auto [start, sbo] = decode(desc);
    uint64_t lo = start & ~uint64_t(1023);
    return {lo, lo + (rows / 8 - 1) * sbo + 1024};
}

// Aborts if [at, at + bytes) of block b's shared memory is read by wgmma products in flight.
void refuse_inflight(EmuBlock* b, uint64_t at, uint64_t bytes, const char* what) {
    for (const auto& [span, n] : b->inflight->ranges)
        if (at < span.second && at + bytes > span.first) {
            std::fprintf(stderr, "tokenmill CUDA emulation: %s into shared memory [%llu, %llu) that a wgmma in flight reads\n",
                         what, (unsigned long long)at, (unsigned long long)(at + bytes));
            std::abort();
        }
}

void hold(const EmuWgmma& p, int by) {
    auto& r = emu_thread.block->inflight->ranges;
    for (auto span : {desc_span(p.da, 64), desc_span(p.db, 128)})
        if ((r[span] += by) == 0) r.erase(span);
}

void run_product(const EmuWgmma& p) {
    hold(p, -1);
    unsigned th = emu_thread.linear % 128, w = th / 32, lane = th % 32, g = lane / 4, t = lane % 4;
    unsigned kdim = p.bf16 ? 16 : 32;
    for (unsigned j = 0; j < 16; j++)
        for (unsigned x = 0; x < 4; x++) {
            unsigned r = 16 * w + g + 8 * (x / 2), n = 8 * j + 2 * t + x % 2;
            double s = 0.0;
            for (unsigned k = 0; k < kdim; k++)
                s += desc_value(p.da, r, k, p.bf16) * desc_value(p.db, n, k, p.bf16);
            float& d = p.d[4 * j + x];
            d = (float)((p.scale_d ? (double)d : 0.0) + s);
        }
}

void issue_product(float* d, uint64_t da, uint64_t db, int scale_d, bool bf16) {
    if (emu_thread.block->dim.x % 128) emu_fail("wgmma: blockDim.x is not a multiple of 128");
    EmuAsync& a = my_async();
    a.products.push_back({d, da, db, scale_d, bf16, a.product_groups});
    hold(a.products.back(), 1);
}

}  // namespace

void emu_cp_async16(void* dst, const void* src, unsigned src_size) {
    EmuBlock* b = emu_thread.block;
    auto* d = static_cast<unsigned char*>(dst);
    if (d < b->dyn_smem || d + 16 > b->dyn_smem + b->dyn_bytes)
        emu_fail("cp.async: a destination outside the dynamic shared memory");
    if (reinterpret_cast<uintptr_t>(dst) % 16 || (src_size && reinterpret_cast<uintptr_t>(src) % 16))
        emu_fail("cp.async: 16 bytes from and to 16-byte aligned addresses");
    refuse_inflight(b, (uint64_t)(d - b->dyn_smem), 16, "cp.async");
    EmuAsync& a = my_async();
    a.copies.push_back({d, static_cast<const unsigned char*>(src), src_size, a.copy_groups});
}

void emu_cp_async_commit() { my_async().copy_groups++; }

void emu_cp_async_wait(unsigned n) {
    EmuAsync& a = my_async();
    size_t done = 0;
    for (; done < a.copies.size() && a.copies[done].group + n < a.copy_groups; done++) {
        const EmuCopy& c = a.copies[done];
        std::memset(c.dst, 0, 16);
        if (c.size) std::memcpy(c.dst, c.src, c.size);
    }
    a.copies.erase(a.copies.begin(), a.copies.begin() + done);
}

uint32_t emu_smem_offset(const void* p) {
    EmuBlock* b = emu_thread.block;
    auto* c = static_cast<const unsigned char*>(p);
    if (c < b->dyn_smem || c > b->dyn_smem + b->dyn_bytes)
        emu_fail("a shared-memory address outside the dynamic shared memory");
    return (uint32_t)(c - b->dyn_smem);
}

void emu_wgmma_e4m3_m64n128k32(float* d, uint64_t da, uint64_t db, int scale_d) {
    issue_product(d, da, db, scale_d, false);
}

void emu_wgmma_bf16_m64n128k16(float* d, uint64_t da, uint64_t db, int scale_d) {
    issue_product(d, da, db, scale_d, true);
}

void emu_wgmma_commit() { my_async().product_groups++; }

void emu_wgmma_wait(unsigned n) {
    EmuAsync& a = my_async();
    size_t done = 0;
    for (; done < a.products.size() && a.products[done].group + n < a.product_groups; done++)
        run_product(a.products[done]);
    a.products.erase(a.products.begin(), a.products.begin() + done);
    // `.sync.aligned`: the warp's threads leave the wait together, each with its products done
    // (the lanes of a warp cannot drift apart here as the emulation's threads otherwise could:
    // a lane that arrives on a barrier for its warp speaks for every lane).
    emu_wait(emu_thread.block->warps[emu_thread.linear / 32]);
}

namespace {

constexpr uint64_t kMapMagic = 0x31554d4550414d54ull;  // "TMAPEMU1"

// The barrier at shared-memory offset `at` of block b.
EmuMbar& mbar_in(EmuBlock* b, uint64_t at) {
    auto& m = b->inflight->mbars;
    auto it = m.find(at);
    if (at % 8 || it == m.end()) emu_fail("mbarrier: a barrier never initialised (or misaligned)");
    return it->second;
}

EmuMbar& mbar_at(uint64_t* bar) { return mbar_in(emu_thread.block, emu_smem_offset(bar)); }

// Completes the barrier's phase if its arrivals and bytes are in.
void settle(EmuMbar& b) {
    if (b.pending == 0 && b.tx == 0) {
        b.phase++;
        b.pending = b.expected;
        (*emu_thread.block->progress)++;
        // Its waiter runs next, before the thread that completed the phase goes on: on a GPU
        // it may well, and so the completing thread's asynchronous work still pending (the
        // products of a stage released too early) meets the waiter's next step (that stage's
        // next copy) — which the emulation refuses.
        if (b.waiter >= 0) emu_run->prefer = b.waiter;
        b.waiter = -1;
    }
}

// Makes a TMA copy: the box, row after row, into shared memory in the 128-byte swizzle; zeros
// outside the tensor. Returns its bytes.
long long tma_copy(const EmuTma& c) {
    EmuBlock* b = emu_thread.block;
    const uint64_t* m = c.map;
    auto* base = reinterpret_cast<const unsigned char*>(m[1]);
    uint64_t dim0 = m[2], dim1 = m[3], stride = m[4], box0 = m[5], box1 = m[6], es = m[7];
    uint64_t pitch = box0 * es, bytes = pitch * box1;
    refuse_inflight(b, c.dst, bytes, "a TMA copy landing");
    if (c.dst + bytes > b->dyn_bytes) emu_fail("TMA: a box past the dynamic shared memory");
    for (uint64_t r = 0; r < box1; r++) {
        long long y = (long long)c.y + (long long)r;
        for (uint64_t j = 0; j < pitch; j++) {
            long long x = (long long)c.x + (long long)(j / es);
            bool in = y >= 0 && (uint64_t)y < dim1 && x >= 0 && (uint64_t)x < dim0;
            uint64_t at = c.dst + r * pitch + j;
            at ^= ((at >> 7) & 7) << 4;
            b->dyn_smem[at] = in ? base[(uint64_t)y * stride + (uint64_t)x * es + j % es] : 0;
        }
    }
    return (long long)bytes;
}

}  // namespace

extern "C" const char* tm_emu_tensor_map_encode(uint64_t* map, unsigned elem_bytes,
                                                const void* addr, uint64_t dim0, uint64_t dim1,
                                                uint64_t stride1, unsigned box0, unsigned box1,
                                                unsigned swizzle) {
    if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4) return "an element of 1, 2 or 4 bytes";
    if (reinterpret_cast<uintptr_t>(addr) % 16) return "the global address is not 16-byte aligned";
    if (dim0 == 0 || dim1 == 0 || dim0 > (1ull << 32) || dim1 > (1ull << 32))
        return "a dimension outside 1 ..= 2^32";
    if (stride1 % 16 || stride1 >= (1ull << 40)) return "the stride is not a multiple of 16 below 2^40";
    if (stride1 < dim0 * elem_bytes) return "the stride is shorter than a row";
    if (box0 == 0 || box1 == 0 || box0 > 256 || box1 > 256) return "a box side outside 1 ..= 256";
    if (box0 * elem_bytes % 16) return "a box row is not a multiple of 16 bytes";
    if (swizzle != 128) return "only the 128-byte swizzle is modelled";
    if (box0 * elem_bytes > 128) return "a box row longer than the 128-byte swizzle";
    for (int i = 0; i < 16; i++) map[i] = 0;
    map[0] = kMapMagic;
    map[1] = reinterpret_cast<uint64_t>(addr);
    map[2] = dim0;
    map[3] = dim1;
    map[4] = stride1;
    map[5] = box0;
    map[6] = box1;
    map[7] = elem_bytes;
    map[8] = swizzle;
    return nullptr;
}

void emu_mbar_init(uint64_t* bar, unsigned count) {
    uint64_t at = emu_smem_offset(bar);
    if (at % 8) emu_fail("mbarrier.init: a barrier not 8-byte aligned");
    if (count == 0 || count >= (1u << 20)) emu_fail("mbarrier.init: a count outside 1 ..= 2^20 - 1");
    EmuMbar& b = emu_thread.block->inflight->mbars[at];
    if (!b.copies.empty()) emu_fail("mbarrier.init: a barrier with copies in flight");
    b = EmuMbar{(int)count, (int)count, 0, 0, {}, -1};
    (*emu_thread.block->progress)++;
}

void emu_mbar_arrive(uint64_t* bar) {
    EmuMbar& b = mbar_at(bar);
    if (b.pending == 0) emu_fail("mbarrier.arrive: more arrivals than the barrier expects");
    b.pending--;
    (*emu_thread.block->progress)++;
    settle(b);
    // An arrival by a thread with wgmma products in flight (a consumer releasing a stage) lets
    // the others run now, as a GPU's warps would: a thread waiting on this barrier goes on
    // while those products are still pending. A thread with none (a producer) goes on issuing
    // copies, so it runs as far ahead as its barriers let it.
    if (!my_async().products.empty()) yield();
}

void emu_mbar_expect(uint64_t* bar, unsigned bytes) {
    EmuMbar& b = mbar_at(bar);
    b.tx += bytes;
    (*emu_thread.block->progress)++;
}

void emu_mbar_wait(uint64_t* bar, unsigned parity) {
    EmuBlock* blk = emu_thread.block;
    unsigned long seen = *blk->progress;
    for (int idle = 0;;) {
        EmuMbar& b = mbar_at(bar);  // (the table may have grown while this thread waited)
        if (!b.copies.empty()) {
            std::vector<EmuTma> copies;
            copies.swap(b.copies);
            for (const EmuTma& c : copies) b.tx -= tma_copy(c);
            (*blk->progress)++;
            settle(b);
        }
        if ((b.phase & 1) != (parity & 1)) return;
        b.waiter = (int)emu_thread.fiber;
        yield();
        if (*blk->progress != seen) {
            seen = *blk->progress;
            idle = 0;
        } else if (++idle >= 3) {
            emu_fail("mbarrier wait: no thread of the block (or its cluster) can go on (a deadlock)");
        }
    }
}

void emu_tma_load_2d(void* dst, const uint64_t* map, int x, int y, uint64_t* bar) {
    if (map[0] != kMapMagic) emu_fail("TMA: not a tensor map made by cuTensorMapEncodeTiled");
    uint64_t at = emu_smem_offset(dst);
    if (at % 128) emu_fail("TMA: a shared-memory destination not 128-byte aligned");
    refuse_inflight(emu_thread.block, at, map[5] * map[6] * map[7], "a TMA copy");
    EmuMbar& b = mbar_at(bar);
    EmuTma c{};
    std::memcpy(c.map, map, sizeof c.map);
    c.dst = at;
    c.x = x;
    c.y = y;
    b.copies.push_back(c);
}

unsigned emu_cluster_ctarank() { return emu_thread.block->rank; }

unsigned emu_cluster_nctarank() {
    EmuCluster* c = emu_thread.block->cluster;
    return c ? c->size : 1;
}

void emu_cluster_sync() {
    EmuCluster* c = emu_thread.block->cluster;
    if (c) emu_wait(c->all);
    else emu_wait(emu_thread.block->all);
}

namespace {

// The cluster's block of rank `rank`; aborts when there is none, or when every thread of it has
// returned (on a GPU its shared memory may then be another block's: a block must stay until
// the others are done with its barriers and shared memory).
EmuBlock* peer(unsigned rank, const char* what) {
    EmuCluster* c = emu_thread.block->cluster;
    unsigned size = c ? c->size : 1;
    if (rank >= size) {
        std::fprintf(stderr, "tokenmill CUDA emulation: %s: rank %u outside a cluster of %u\n", what,
                     rank, size);
        std::abort();
    }
    EmuBlock* b = c ? c->blocks[rank] : emu_thread.block;
    if (b->all.live == 0) {
        std::fprintf(stderr, "tokenmill CUDA emulation: %s: block %u of the cluster has ended\n", what,
                     rank);
        std::abort();
    }
    return b;
}

}  // namespace

void emu_mbar_arrive_peer(uint64_t* bar, unsigned rank) {
    EmuBlock* to = peer(rank, "mbarrier.arrive.shared::cluster");
    EmuMbar& b = mbar_in(to, emu_smem_offset(bar));
    if (b.pending == 0) emu_fail("mbarrier.arrive: more arrivals than the barrier expects");
    b.pending--;
    (*emu_thread.block->progress)++;
    settle(b);
    if (!my_async().products.empty()) yield();
}

void emu_tma_load_2d_multicast(void* dst, const uint64_t* map, int x, int y, uint64_t* bar,
                               uint16_t mask) {
    if (map[0] != kMapMagic) emu_fail("TMA: not a tensor map made by cuTensorMapEncodeTiled");
    uint64_t at = emu_smem_offset(dst), bar_at = emu_smem_offset(bar);
    if (at % 128) emu_fail("TMA: a shared-memory destination not 128-byte aligned");
    if (mask == 0) emu_fail("TMA multicast: an empty mask");
    for (unsigned r = 0; r < 16; r++) {
        if (!(mask >> r & 1)) continue;
        EmuBlock* to = peer(r, "TMA multicast");
        refuse_inflight(to, at, map[5] * map[6] * map[7], "a TMA multicast copy");
        EmuTma c{};
        std::memcpy(c.map, map, sizeof c.map);
        c.dst = at;
        c.x = x;
        c.y = y;
        mbar_in(to, bar_at).copies.push_back(c);
    }
}

extern "C" void* tm_emu_block_new(unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                  unsigned by, unsigned bz, unsigned ix, unsigned iy,
                                  unsigned iz, size_t dyn_smem) {
    unsigned threads = bx * by * bz;
    unsigned nwarps = (threads + 31) / 32;
    EmuBlock* b = new EmuBlock;
    b->grid = {gx, gy, gz};
    b->dim = {bx, by, bz};
    b->idx = {ix, iy, iz};
    b->all = {(int)threads, 0, 0};
    b->warps = new EmuBar[nwarps];
    for (unsigned w = 0; w < nwarps; w++) {
        unsigned n = threads - w * 32 < 32 ? threads - w * 32 : 32;
        b->warps[w] = {(int)n, 0, 0};
    }
    b->lanes = new uint64_t[nwarps * 32]();
    b->mma = new uint32_t[nwarps * 32 * 6]();
    b->dyn_smem = new unsigned char[dyn_smem > 0 ? dyn_smem : 1]();
    b->dyn_bytes = dyn_smem;
    b->async = new EmuAsync[threads];
    b->inflight = new EmuInflight;
    b->own_progress = 0;
    b->progress = &b->own_progress;
    b->cluster = nullptr;
    b->rank = 0;
    return b;
}

extern "C" void tm_emu_block_free(void* p) {
    EmuBlock* b = static_cast<EmuBlock*>(p);
    delete[] b->warps;
    delete[] b->lanes;
    delete[] b->mma;
    delete[] b->dyn_smem;
    // A product still in flight when its thread returned would write registers that no
    // longer exist: on a GPU, undefined.
    if (!b->inflight->ranges.empty()) emu_fail("wgmma: a product left in flight at a thread's end");
    // Likewise a TMA copy nobody waited for would land in shared memory no longer the block's.
    for (const auto& [at, bar] : b->inflight->mbars)
        if (!bar.copies.empty()) emu_fail("TMA: a copy left in flight at the block's end");
    delete[] b->async;
    delete b->inflight;
    delete b;
}

namespace {

// Runs every CUDA thread of the `count` blocks as a fiber calling `fn(arg)`, round robin on this
// OS thread, each until it waits at a barrier or returns; returns when all have returned.
void run_blocks(EmuBlock** blocks, unsigned count, void (*fn)(void*), void* arg) {
    unsigned per = blocks[0]->dim.x * blocks[0]->dim.y * blocks[0]->dim.z;
    unsigned n = per * count;
    std::vector<char*>& st = stacks(n);
    std::vector<Fiber> f(n);
    Run run{};
    run.fn = fn;
    run.arg = arg;
    Run* outer = emu_run;
    emu_run = &run;
#if defined(__x86_64__)
    unsigned mxcsr_fpcw[2] = {0, 0};
    asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr_fpcw[0]), "=m"(mxcsr_fpcw[1]));
#else
    // One getcontext (a system call, for the signal mask) for all: each fiber's context is a
    // copy of it with its own stack.
    ucontext_t proto;
    getcontext(&proto);
#endif
    for (unsigned i = 0; i < n; i++) {
#if defined(__x86_64__)
        // From the top of the stack down: a return address slot for `fiber_main` (which never
        // returns), `fiber_main` for `ret`, six callee-saved registers (zeros), MXCSR and the
        // x87 control word — so `fiber_main` starts with the stack as after a call.
        auto* top = reinterpret_cast<uint64_t*>(st[i] + kStack);
        uint64_t* sp = top - 9;
        for (int r = 0; r < 9; r++) sp[r] = 0;
        sp[0] = (uint64_t)(mxcsr_fpcw[0] & 0xffffffffu) | ((uint64_t)(mxcsr_fpcw[1] & 0xffff) << 32);
        sp[7] = reinterpret_cast<uint64_t>(&fiber_main);
        f[i].ctx.sp = sp;
#else
        f[i].ctx.uc = proto;
        f[i].ctx.uc.uc_stack.ss_sp = st[i];
        f[i].ctx.uc.uc_stack.ss_size = kStack;
        f[i].ctx.uc.uc_link = &run.sched.uc;
        makecontext(&f[i].ctx.uc, fiber_main, 0);
#endif
        EmuBlock* b = blocks[i / per];
        unsigned l = i % per;
        f[i].tid = {l % b->dim.x, (l / b->dim.x) % b->dim.y, l / (b->dim.x * b->dim.y)};
        f[i].done = false;
    }
    run.prefer = -1;
    unsigned left = n;
    auto step = [&](unsigned i) {
        run.cur = &f[i];
        emu_thread = {blocks[i / per], f[i].tid, i % per, i};
        jump(run.sched, f[i].ctx);
        if (f[i].done) left--;
    };
    while (left > 0) {
        for (unsigned i = 0; i < n; i++) {
            if (f[i].done) continue;
            step(i);
            // A memory barrier's waiter whose phase the step completed runs at once.
            while (run.prefer >= 0) {
                unsigned j = (unsigned)run.prefer;
                run.prefer = -1;
                if (!f[j].done) step(j);
            }
        }
    }
    emu_thread.block = nullptr;
    emu_run = outer;
}

}  // namespace

extern "C" void tm_emu_run_block(void* p, void (*fn)(void*), void* arg) {
    EmuBlock* b = static_cast<EmuBlock*>(p);
    run_blocks(&b, 1, fn, arg);
}

// Runs the `count` blocks at `p` (made by tm_emu_block_new, at most 8, of one shape) as one
// thread block cluster, ranks in order: their threads' fibers together, round robin, so that
// each block's threads may wait on what the others' do.
extern "C" void tm_emu_run_cluster(void** p, unsigned count, void (*fn)(void*), void* arg) {
    if (count == 0 || count > 8) emu_fail("a cluster of 1 to 8 blocks");
    EmuCluster c{};
    c.size = count;
    auto** blocks = reinterpret_cast<EmuBlock**>(p);
    int threads = 0;
    for (unsigned r = 0; r < count; r++) {
        c.blocks[r] = blocks[r];
        blocks[r]->cluster = &c;
        blocks[r]->rank = r;
        blocks[r]->progress = &c.progress;
        threads += blocks[r]->all.live;
    }
    c.all = {threads, 0, 0};
    run_blocks(blocks, count, fn, arg);
    for (unsigned r = 0; r < count; r++) {
        blocks[r]->cluster = nullptr;
        blocks[r]->progress = &blocks[r]->own_progress;
    }
}
