// A CUDA driver on the CPU: the part of the driver API that cudarc and tokenmill's CUDA
// backend (kernels/cuda/src) call, over the emulated kernels (kernels/cuda/cu compiled as C++
// with shim/emu.h). Linked by build.rs into `libcuda.so` (soname `libcuda.so`, the first name
// cudarc asks the loader for), so the backend's own Rust code — uploads, launches with their
// argument lists, grid shapes and shared-memory sizes, downloads, events — runs unchanged in
// CI, and its results can be compared with the CPU backend's.
//
// What it models: one device of compute capability 9.0 with a Hopper's launch limits (1,024
// threads per block, 48 KiB of dynamic shared memory unless the kernel opted in, 227 KiB at
// most), a memory of TOKENMILL_CUDA_EMU_MEMORY bytes (default 8 GiB) whose exhaustion is
// CUDA_ERROR_OUT_OF_MEMORY, and copies checked against the allocation they touch. Device
// memory is host memory. The streams' work is asynchronous, as on a GPU: a launch, a memset,
// a copy that does not involve pageable host memory, a stream-ordered free, an event's time
// stamp and the emulated cuBLAS and cuBLASLt GEMMs are queued and run, in the order they were
// asked for, when the host waits for the device (a synchronisation, a copy to pageable
// memory, a synchronous free), so a host that reads a result before waiting for it reads what
// was there before, as it would on a GPU (streams share one queue; events only stamp times).
// With TOKENMILL_CUDA_EMU_PAGEABLE=1 it reports pageable memory access (HMM), which it has:
// kernels handed host addresses read and write the host's memory. With
// TOKENMILL_CUDA_EMU_FAULT=<kernel> every launch of that kernel fails with
// CUDA_ERROR_ILLEGAL_INSTRUCTION. cuLaunchKernelEx takes thread block clusters along x (the
// cluster's blocks run together, shim/emu.cpp). The kernel image NVRTC
// compiled for the device is checked to be a cubin and its functions are looked up by name
// among the emulated kernels. Each device allocation lies at the end of its own pages, with
// 1 MiB of address space no access may touch on either side, the rest of its last 256 bytes
// filled with a known value, and once freed its pages stay inaccessible for a while: a kernel
// that reads or writes up to 1 MiB past its buffer's pages or before them, or a freed buffer,
// faults at once and the driver names the kernel and the allocation's size; a write into the
// rest of the last 256 bytes is found after the launch, and named; and the kernels are
// compiled with the alignment of their typed accesses checked (build.rs), so a misaligned one,
// which a GPU faults on, stops at an illegal instruction that the driver names. What it cannot
// model: speed, concurrency between streams, reads past a buffer's end inside its last 256
// bytes, accesses before its start inside its first page or farther than 1 MiB from it, and
// any of these in managed, page-locked or (HMM) host memory.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <map>
#include <vector>
#include <mutex>
#include <string>

#include <cerrno>
#include <deque>

#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

extern "C" {
void* tm_emu_block_new(unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, size_t);
void tm_emu_block_free(void*);
void tm_emu_run_block(void*, void (*)(void*), void*);
void tm_emu_run_cluster(void**, unsigned, void (*)(void*), void*);

struct TmKernel {
    const char* name;
    void (*call)(void**);
    int (*check)(void**, bool (*)(const void*));
    const unsigned* sizes;
    int nargs;
};
extern const TmKernel tm_emu_kernels[];
extern const size_t tm_emu_kernel_count;
}

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum : int {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_ILLEGAL_INSTRUCTION = 715,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

namespace {

constexpr int kMaxDefaultSmem = 48 << 10;
constexpr int kMaxOptinSmem = 232448;  // 227 KiB, as on sm_90
constexpr int kMultiprocessors = 132;   // an H100 SXM's
constexpr char kName[] = "tokenmill CUDA emulator (CPU, sm_90 limits)";

std::mutex g_lock;
bool g_init = false;
int g_ctx_tag, g_module_tag;
thread_local void* g_current = nullptr;
std::map<CUdeviceptr, size_t> g_allocs;  // device pointer -> bytes
size_t g_used = 0;

// The pages of each device allocation (cuMemAlloc): [base, base + len), kGuard bytes of
// address space no access may touch at either end (nothing is committed for them), the
// allocation at the end of the pages between (its start 256-byte aligned as CUDA's are), the
// bytes from its end to the next multiple of 256 holding kCanary. A freed allocation's pages
// are released and made inaccessible, kept so (the last kQuarantine of them) so that a use
// after the free faults and is named, and its address space is not handed out again meanwhile.
struct Mapping {
    uintptr_t base;
    size_t len, bytes;
};
std::map<CUdeviceptr, Mapping> g_mappings;
std::deque<std::pair<CUdeviceptr, Mapping>> g_freed;
constexpr size_t kGuard = 1 << 20;
constexpr size_t kQuarantine = 4096;
constexpr unsigned char kCanary = 0x5C;
// The kernel whose grid is running and the thread running it, for the fault handler's
// message (null between grids).
std::atomic<const char*> g_kernel{nullptr};
std::atomic<long> g_kernel_tid{0};

size_t page_size() {
    static const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

// A device allocation of `bytes` (callers hold g_lock), or null.
void* map_device(size_t bytes) {
    const size_t page = page_size(), span = (bytes + 255) / 256 * 256;
    const size_t data = (span + page - 1) / page * page, len = data + 2 * kGuard;
    void* base = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        std::fprintf(stderr, "emulated CUDA driver: mmap of %zu bytes: %s\n", len,
                     std::strerror(errno));
        return nullptr;
    }
    unsigned char* pages = static_cast<unsigned char*>(base) + kGuard;
    if (mprotect(pages, data, PROT_READ | PROT_WRITE) != 0) {
        std::fprintf(stderr, "emulated CUDA driver: mprotect: %s\n", std::strerror(errno));
        munmap(base, len);
        return nullptr;
    }
    unsigned char* p = pages + data - span;
    std::memset(p + bytes, kCanary, span - bytes);
    g_mappings[(CUdeviceptr)(uintptr_t)p] = Mapping{(uintptr_t)base, len, bytes};
    return p;
}

// Frees a device allocation of map_device (callers hold g_lock): its pages released and made
// inaccessible, the oldest quarantined allocation's address space returned.
void unmap_device(CUdeviceptr p) {
    auto it = g_mappings.find(p);
    if (it == g_mappings.end()) return;
    const Mapping m = it->second;
    g_mappings.erase(it);
    void* pages = (void*)(m.base + kGuard);
    const size_t data = m.len - 2 * kGuard;
    if (madvise(pages, data, MADV_DONTNEED) != 0 || mprotect(pages, data, PROT_NONE) != 0)
        std::fprintf(stderr, "emulated CUDA driver: releasing a freed allocation: %s\n",
                     std::strerror(errno));
    g_freed.emplace_back(p, m);
    if (g_freed.size() > kQuarantine) {
        const Mapping old = g_freed.front().second;
        g_freed.pop_front();
        if (munmap((void*)old.base, old.len) != 0)
            std::fprintf(stderr, "emulated CUDA driver: munmap: %s\n", std::strerror(errno));
    }
}

// The fault handler's message, built without the C library's formatting: the handler runs on
// the thread's alternate signal stack, which Rust makes a few KiB (so that its own handler can
// report a stack overflow), too little for printf's frames.
struct Message {
    char text[512];
    size_t len = 0;
    Message& operator<<(const char* s) {
        while (*s && len + 1 < sizeof text) text[len++] = *s++;
        return *this;
    }
    Message& operator<<(size_t v) {
        char d[24];
        int n = 0;
        do d[n++] = (char)('0' + v % 10); while ((v /= 10) && n < 24);
        while (n && len + 1 < sizeof text) text[len++] = d[--n];
        return *this;
    }
    Message& hex(uintptr_t v) {
        *this << "0x";
        for (int i = 60; i >= 0; i -= 4) {
            const unsigned d = (unsigned)(v >> i) & 15u;
            if (len + 1 < sizeof text) text[len++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        }
        return *this;
    }
    [[noreturn]] void abort() {
        ssize_t ignored = write(2, text, len);
        (void)ignored;
        std::abort();
    }
};

// Faults: an access to a device allocation's guard (which allocation, how far past its end or
// before its start; by the kernel running on this thread, else by a copy or library call) or
// to a freed one, which is said and aborts; on the thread running a kernel's grid, a trap at an
// illegal instruction (`ud2`: a misaligned access, the kernels' alignment being checked,
// build.rs), said and aborts, and any other fault named with its kernel and address. Then the
// fault goes to the handler there was before (Rust's, which reports a stack overflow, or the
// default). The handler reads the maps without their lock: a fault while another thread
// allocates may be misreported.
struct sigaction g_old_segv, g_old_ill;
void on_fault(int sig, siginfo_t* info, void* ctx) {
    const uintptr_t a = (uintptr_t)info->si_addr;
    const bool ours = g_kernel_tid.load() == (long)syscall(SYS_gettid);
    const char* k = ours ? g_kernel.load() : nullptr;
    if (k && sig == SIGILL && info->si_code == ILL_ILLOPN &&
        reinterpret_cast<const unsigned char*>(a)[0] == 0x0f &&
        reinterpret_cast<const unsigned char*>(a)[1] == 0x0b) {
        Message msg;
        msg << "emulated CUDA driver: kernel " << k
            << " made an access whose address is not a multiple of its size (a GPU faults: "
               "misaligned address)\n";
        msg.abort();
    }
    if (sig == SIGSEGV) {
        Message msg;
        msg << "emulated CUDA driver: " << (k ? "kernel " : "a copy or library call")
            << (k ? k : "");
        for (const auto& [p, m] : g_mappings) {
            if (a < m.base || a >= m.base + m.len) continue;
            if (a < m.base + kGuard)
                msg << " touched the byte " << (size_t)(p - a) << " bytes before the start of";
            else if (a >= m.base + m.len - kGuard)
                // The offset from the start, then from the end: "byte 400, 0 past the end" is
                // the first byte after a 400-byte allocation.
                msg << " touched byte " << (size_t)(a - p) << ", " << (size_t)(a - (p + m.bytes))
                    << " past the end, of";
            else
                break;
            msg << " a device allocation of " << m.bytes
                << " bytes (a GPU would read or write another buffer there, or fault)\n";
            msg.abort();
        }
        for (const auto& [p, m] : g_freed) {
            if (a < m.base || a >= m.base + m.len) continue;
            msg << " touched a device allocation of " << m.bytes << " bytes after its free\n";
            msg.abort();
        }
        if (k) {
            msg << " faulted at address ";
            msg.hex(a) << " (outside every device allocation's guard)\n";
            ssize_t ignored = write(2, msg.text, msg.len);
            (void)ignored;
        }
    }
    const struct sigaction& old = sig == SIGILL ? g_old_ill : g_old_segv;
    if (old.sa_flags & SA_SIGINFO) {
        old.sa_sigaction(sig, info, ctx);
    } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
        old.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);  // the fault recurs on return and ends the process
    }
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        page_size();  // its static set here, not first in the handler
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGILL, &sa, &g_old_ill);
    });
}

// The pointers a launch's arguments hold (collected through the kernel's argument check).
thread_local std::vector<const void*>* g_collected = nullptr;
bool collect(const void* p) {
    g_collected->push_back(p);
    return true;
}

// After kernel `k`'s grid has run: the rest of the last 256 bytes of every device allocation
// its arguments point into must still hold kCanary; otherwise something wrote past the end of
// a buffer (on a GPU, into whatever lies there) — the kernel, or work queued before it that
// used the buffer (an emulated library's GEMM, say) —, and the driver says so and aborts.
void check_overrun(const TmKernel* k, void** params) {
    std::vector<const void*> ptrs;
    g_collected = &ptrs;
    k->check(params, collect);
    g_collected = nullptr;
    std::lock_guard<std::mutex> g(g_lock);
    for (const void* q : ptrs) {
        const CUdeviceptr a = (CUdeviceptr)(uintptr_t)q;
        auto it = g_allocs.upper_bound(a);
        if (it == g_allocs.begin()) continue;
        --it;
        if (a > it->first + it->second || !g_mappings.count(it->first)) continue;
        const unsigned char* p = (const unsigned char*)(uintptr_t)it->first;
        const size_t bytes = it->second, span = (bytes + 255) / 256 * 256;
        size_t last = 0;
        for (size_t i = bytes; i < span; i++)
            if (p[i] != kCanary) last = i - bytes + 1;
        if (last == 0) continue;
        std::fprintf(stderr,
                     "emulated CUDA driver: the %zu bytes past the end of a device allocation of "
                     "%zu bytes at %p were written, found after kernel %s ran (written by it, or "
                     "by work queued before it that used the buffer)\n",
                     last, bytes, (const void*)p, k->name);
        std::fflush(stderr);
        std::abort();
    }
}
// Managed allocations (cuMemAllocManaged): host memory both sides may touch, as on a GPU with
// concurrent managed access; not counted against the device's memory (a real GPU
// oversubscribes it by migrating pages).
std::map<CUdeviceptr, size_t> g_managed;

// Whether the device reports managed memory (TOKENMILL_CUDA_EMU_MANAGED=0 says it has none)
// and concurrent access to it (=serial says it has managed memory without it).
bool managed_memory() {
    const char* v = std::getenv("TOKENMILL_CUDA_EMU_MANAGED");
    return !(v && std::strcmp(v, "0") == 0);
}
bool concurrent_managed() {
    const char* v = std::getenv("TOKENMILL_CUDA_EMU_MANAGED");
    return managed_memory() && !(v && std::strcmp(v, "serial") == 0);
}

// The device's queue: the work of every stream, in the order it was asked for, run when the
// host waits for the device (`flush`: synchronisations, copies to or from pageable memory,
// synchronous frees, the emulated NCCL's calls), so a host that reads, changes or frees a buffer a queued
// kernel, copy or GEMM uses before it waited sees what a GPU would let it see. A wait for a
// non-blocking stream (one that waits for no other: the managed allocator's) runs that
// stream's work only, so the rest stays queued; any other wait runs everything before it.
struct Work {
    void* stream;
    std::function<void()> f;
};
std::mutex g_queue_lock;
std::vector<Work> g_queue;
std::mutex g_run;  // one flush at a time: a second waits until the first has run the queue
std::map<void*, unsigned> g_streams;  // streams made by cuStreamCreate -> their flags

// Runs the queued work of stream `only` (in order), or all of it when `only` is null.
void run_queue(void* only) {
    std::lock_guard<std::mutex> run(g_run);
    for (;;) {
        std::vector<Work> work;
        {
            std::lock_guard<std::mutex> g(g_queue_lock);
            if (!only) {
                work.swap(g_queue);
            } else {
                std::vector<Work> rest;
                for (Work& w : g_queue) (w.stream == only ? work : rest).push_back(std::move(w));
                g_queue.swap(rest);
            }
        }
        if (work.empty()) return;
        for (Work& w : work) w.f();
    }
}

void flush() { run_queue(nullptr); }

// A wait for stream `s`: its own work when it is non-blocking, else everything queued.
void flush_stream(void* s) {
    bool own = false;
    {
        std::lock_guard<std::mutex> g(g_queue_lock);
        auto it = g_streams.find(s);
        own = it != g_streams.end() && (it->second & 1u);  // CU_STREAM_NON_BLOCKING
    }
    run_queue(own ? s : nullptr);
}

void defer(void* stream, std::function<void()> f) {
    std::lock_guard<std::mutex> g(g_queue_lock);
    g_queue.push_back({stream, std::move(f)});
}

// A copy done when the queue reaches it: it reads `src` then, not now.
void defer_copy(void* stream, void* dst, const void* src, size_t bytes) {
    defer(stream, [=] { std::memmove(dst, src, bytes); });
}

size_t total_memory() {
    static size_t total = [] {
        const char* v = std::getenv("TOKENMILL_CUDA_EMU_MEMORY");
        return v ? (size_t)std::strtoull(v, nullptr, 10) : (size_t)8 << 30;
    }();
    return total;
}

struct Function {
    const TmKernel* kernel;
    int max_dynamic_smem = kMaxDefaultSmem;
};
std::map<std::string, Function*> g_functions;

struct Event {
    std::chrono::steady_clock::time_point at;
};

// Whether [p, p + bytes) lies inside one allocation (callers hold g_lock).
bool inside_of(const std::map<CUdeviceptr, size_t>& m, CUdeviceptr p, size_t bytes) {
    auto it = m.upper_bound(p);
    if (it == m.begin()) return false;
    --it;
    return p >= it->first && p + bytes <= it->first + it->second;
}

// ... of device memory or of managed memory, which copies and memsets take as well.
bool inside(CUdeviceptr p, size_t bytes) {
    return inside_of(g_allocs, p, bytes) || inside_of(g_managed, p, bytes);
}

// Page-locked host allocations (cuMemHostAlloc): mapped for the device, so kernels may take them.
std::map<CUdeviceptr, size_t> g_pinned;

// Whether the device reports pageable memory access (HMM: kernels may take any host address).
bool pageable() {
    const char* v = std::getenv("TOKENMILL_CUDA_EMU_PAGEABLE");
    return v && std::strcmp(v, "1") == 0;
}

// Whether a kernel or library may be handed address p: one inside (or one past the end of) a
// device, managed or page-locked allocation — or any, with pageable access. A real GPU faults
// on the others (an illegal address), which the CPU running these kernels would not.
bool reachable(const void* p) {
    if (pageable()) return true;
    CUdeviceptr a = (CUdeviceptr)(uintptr_t)p;
    std::lock_guard<std::mutex> g(g_lock);
    for (const auto* m : {&g_allocs, &g_managed, &g_pinned}) {
        auto it = m->upper_bound(a);
        if (it != m->begin() && a <= std::prev(it)->first + std::prev(it)->second) return true;
    }
    return false;
}

// Whether host memory [p, p + bytes) is managed or page-locked memory: a copy to or from it
// is asynchronous (only pageable host memory makes a copy wait).
bool async_host(const void* p, size_t bytes) {
    if (bytes == 0) return false;
    std::lock_guard<std::mutex> g(g_lock);
    CUdeviceptr a = (CUdeviceptr)(uintptr_t)p;
    return inside_of(g_managed, a, bytes) || inside_of(g_pinned, a, bytes);
}

CUresult check(CUdeviceptr p, size_t bytes) {
    if (bytes == 0) return CUDA_SUCCESS;
    std::lock_guard<std::mutex> g(g_lock);
    return inside(p, bytes) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// One grid: block after block (or cluster after cluster of `cluster` blocks along x, run
// together), each block's CUDA threads as fibers (shim/emu.cpp), each block's bookkeeping
// (barriers, warp lanes, dynamic shared memory) made fresh.
struct Grid {
    unsigned g[3], b[3];
    size_t smem;
    const TmKernel* k;
    void** params;
    unsigned cluster = 1;
};

void call_kernel(void* arg) {
    Grid* gr = static_cast<Grid*>(arg);
    gr->k->call(gr->params);
}

std::mutex g_launch;  // one grid at a time: `__shared__` variables are process-wide statics

void run_grid(Grid& gr) {
    std::lock_guard<std::mutex> one(g_launch);
    for (unsigned bz = 0; bz < gr.g[2]; bz++)
        for (unsigned by = 0; by < gr.g[1]; by++)
            for (unsigned bx = 0; bx < gr.g[0]; bx += gr.cluster) {
                void* blocks[8];
                for (unsigned r = 0; r < gr.cluster; r++)
                    blocks[r] = tm_emu_block_new(gr.g[0], gr.g[1], gr.g[2], gr.b[0], gr.b[1],
                                                 gr.b[2], bx + r, by, bz, gr.smem);
                if (gr.cluster == 1) tm_emu_run_block(blocks[0], call_kernel, &gr);
                else tm_emu_run_cluster(blocks, gr.cluster, call_kernel, &gr);
                for (unsigned r = 0; r < gr.cluster; r++) tm_emu_block_free(blocks[r]);
            }
}

const char* error_name(CUresult r) {
    switch (r) {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
        case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
        case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case CUDA_ERROR_ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
        case CUDA_ERROR_ILLEGAL_INSTRUCTION: return "CUDA_ERROR_ILLEGAL_INSTRUCTION";
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
        case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
        default: return nullptr;
    }
}

}  // namespace

#define API extern "C" __attribute__((visibility("default")))

API CUresult cuInit(unsigned) {
    install_fault_handler();
    g_init = true;
    return CUDA_SUCCESS;
}
API CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return CUDA_SUCCESS;
}
API CUresult cuGetErrorName(CUresult r, const char** s) {
    *s = error_name(r);
    return *s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
API CUresult cuGetErrorString(CUresult r, const char** s) { return cuGetErrorName(r, s); }

API CUresult cuDeviceGetCount(int* n) {
    if (!g_init) return CUDA_ERROR_NOT_INITIALIZED;
    *n = 1;
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (!g_init) return CUDA_ERROR_NOT_INITIALIZED;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (len <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::strncpy(name, kName, (size_t)len - 1);
    name[len - 1] = 0;
    return CUDA_SUCCESS;
}
API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = total_memory();
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    switch (attr) {
        case 1: *v = 1024; break;                 // max threads per block
        case 2: case 3: *v = 1024; break;         // max block dim x, y
        case 4: *v = 64; break;                   // max block dim z
        case 5: *v = 2147483647; break;           // max grid dim x
        case 6: case 7: *v = 65535; break;        // max grid dim y, z
        case 8: *v = kMaxDefaultSmem; break;      // shared memory per block
        case 10: *v = 32; break;                  // warp size
        case 16: *v = kMultiprocessors; break;    // multiprocessors
        case 41: *v = 1; break;                   // unified addressing
        case 75: *v = 9; break;                   // compute capability major
        case 76: *v = 0; break;                   // minor
        case 97: *v = kMaxOptinSmem; break;       // shared memory per block, opt-in
        case 115: *v = 1; break;                  // memory pools (cuMemAllocAsync)
        case 88:                                  // pageable memory access (HMM): kernels
            // here do reach host memory; reported when TOKENMILL_CUDA_EMU_PAGEABLE=1, so
            // that both of the backend's memory modes run (without it, a kernel handed a host
            // address fails, as on a GPU).
            *v = pageable() ? 1 : 0;
            break;
        case 83: *v = managed_memory() ? 1 : 0; break;      // managed memory
        case 89: *v = concurrent_managed() ? 1 : 0; break;  // concurrent managed access
        default: *v = 0;                          // host page tables, ...
    }
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice d) {
    if (!g_init) return CUDA_ERROR_NOT_INITIALIZED;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *ctx = &g_ctx_tag;
    return CUDA_SUCCESS;
}
API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
API CUresult cuCtxSetCurrent(void* ctx) {
    if (ctx != nullptr && ctx != &g_ctx_tag) return CUDA_ERROR_INVALID_CONTEXT;
    g_current = ctx;
    return CUDA_SUCCESS;
}
API CUresult cuCtxGetCurrent(void** ctx) {
    *ctx = g_current;
    return CUDA_SUCCESS;
}
API CUresult cuCtxGetDevice(CUdevice* d) {
    *d = 0;
    return CUDA_SUCCESS;
}
API CUresult cuCtxSynchronize() {
    flush();
    return CUDA_SUCCESS;
}

// For the emulated NCCL: the queue run before its work, which it does at once.
API void tm_emu_flush() { flush(); }

// For the emulated cuBLAS and cuBLASLt: `run(ctx)` queued as `stream`'s next work.
API void tm_emu_defer(void* stream, void (*run)(void*), void* ctx) {
    defer(stream, [=] { run(ctx); });
}

// For the emulated cuBLAS: 1 when a kernel may be handed address p (`reachable`).
API int tm_emu_reachable(const void* p) { return reachable(p) ? 1 : 0; }

// For the emulated NCCL (nccl.cpp): CUDA_SUCCESS when [p, p + bytes) lies inside one device
// allocation (or bytes is 0), as a real NCCL's buffers must.
API CUresult tm_emu_device_range(CUdeviceptr p, size_t bytes) { return check(p, bytes); }

// cuTensorMapEncodeTiled for the TMA kernels: two dimensions of 1-, 2- or 4-byte elements, no
// interleave, the 128-byte swizzle (the only one the emulation models), zeros out of bounds, the
// driver's rules on addresses, dimensions, strides and boxes (shim/emu.cpp), unit element
// strides; and the tensor inside one device, managed or page-locked allocation (any memory with
// pageable access), where a GPU's copies would fault. Anything else is CUDA_ERROR_INVALID_VALUE
// (or CUDA_ERROR_NOT_SUPPORTED for what is not modelled), with the reason on stderr.
API CUresult cuTensorMapEncodeTiled(void* map, int dtype, unsigned rank, void* addr,
                                    const uint64_t* dims, const uint64_t* strides,
                                    const unsigned* box, const unsigned* estrides, int interleave,
                                    int swizzle, int l2, int oob) {
    auto refuse = [](CUresult r, const char* why) {
        std::fprintf(stderr, "emulated CUDA driver: cuTensorMapEncodeTiled: %s\n", why);
        return r;
    };
    if (!map || !addr || !dims || !box || !estrides || (rank > 1 && !strides))
        return refuse(CUDA_ERROR_INVALID_VALUE, "a null argument");
    if (reinterpret_cast<uintptr_t>(map) % 64) return refuse(CUDA_ERROR_INVALID_VALUE, "the map is not 64-byte aligned");
    // CU_TENSOR_MAP_DATA_TYPE_UINT8 0, UINT16 1, UINT32 2, BFLOAT16 9.
    unsigned es = dtype == 0 ? 1 : dtype == 1 || dtype == 9 ? 2 : dtype == 2 ? 4 : 0;
    if (es == 0) return refuse(CUDA_ERROR_NOT_SUPPORTED, "an element type not modelled");
    if (rank != 2) return refuse(CUDA_ERROR_NOT_SUPPORTED, "a rank other than 2 is not modelled");
    if (interleave != 0) return refuse(CUDA_ERROR_NOT_SUPPORTED, "interleaving is not modelled");
    if (swizzle != 3) return refuse(CUDA_ERROR_NOT_SUPPORTED, "only the 128-byte swizzle is modelled");
    if (oob != 0) return refuse(CUDA_ERROR_NOT_SUPPORTED, "only zeros out of bounds are modelled");
    if (l2 < 0 || l2 > 3) return refuse(CUDA_ERROR_INVALID_VALUE, "an L2 promotion outside 0 ..= 3");
    if (estrides[0] != 1 || estrides[1] != 1)
        return refuse(CUDA_ERROR_NOT_SUPPORTED, "element strides other than 1 are not modelled");
    if (const char* why = tm_emu_tensor_map_encode(static_cast<uint64_t*>(map), es, addr, dims[0],
                                                   dims[1], strides[0], box[0], box[1], 128))
        return refuse(CUDA_ERROR_INVALID_VALUE, why);
    if (!pageable()) {
        CUdeviceptr a = (CUdeviceptr)(uintptr_t)addr;
        size_t bytes = (size_t)(strides[0] * (dims[1] - 1) + dims[0] * es);
        std::lock_guard<std::mutex> g(g_lock);
        if (!inside(a, bytes) && !inside_of(g_pinned, a, bytes))
            return refuse(CUDA_ERROR_INVALID_VALUE,
                          "the tensor is not inside one device allocation (a GPU's copies would fault)");
    }
    return CUDA_SUCCESS;
}

API CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    std::lock_guard<std::mutex> g(g_lock);
    *total = total_memory();
    *free_bytes = total_memory() - g_used;
    return CUDA_SUCCESS;
}
API CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> g(g_lock);
    if (bytes > total_memory() - g_used) return CUDA_ERROR_OUT_OF_MEMORY;
    void* m = map_device(bytes);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    // Fresh device memory holds whatever was there: not zeros, so a kernel that reads what it
    // did not write shows it.
    std::memset(m, 0xA5, bytes);
    *p = (CUdeviceptr)(uintptr_t)m;
    g_allocs[*p] = bytes;
    g_used += bytes;
    return CUDA_SUCCESS;
}
API CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, void*) { return cuMemAlloc_v2(p, bytes); }
// Managed memory: refused without a context current on the calling thread, as the driver does
// (an allocator that serves any thread must bind the context in each).
API CUresult cuMemAllocManaged(CUdeviceptr* p, size_t bytes, unsigned flags) {
    if (!managed_memory()) return CUDA_ERROR_NOT_SUPPORTED;
    if (bytes == 0 || (flags != 1 && flags != 2)) return CUDA_ERROR_INVALID_VALUE;
    if (g_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
    void* m = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    std::memset(m, 0xA5, bytes);  // not zeros, as for cuMemAlloc
    std::lock_guard<std::mutex> g(g_lock);
    *p = (CUdeviceptr)(uintptr_t)m;
    g_managed[*p] = bytes;
    return CUDA_SUCCESS;
}
API CUresult cuMemFree_v2(CUdeviceptr p) {
    flush();
    std::lock_guard<std::mutex> g(g_lock);
    if (auto m = g_managed.find(p); m != g_managed.end()) {
        g_managed.erase(m);
        std::free((void*)(uintptr_t)p);
        return CUDA_SUCCESS;
    }
    auto it = g_allocs.find(p);
    if (it == g_allocs.end()) return CUDA_ERROR_INVALID_VALUE;
    g_used -= it->second;
    g_allocs.erase(it);
    unmap_device(p);
    return CUDA_SUCCESS;
}
// In stream order: freed when the queue gets there (the work queued before may still use it),
// not at the call, which does not wait.
API CUresult cuMemFreeAsync(CUdeviceptr p, void* st) {
    {
        std::lock_guard<std::mutex> g(g_lock);
        if (g_allocs.find(p) == g_allocs.end() && g_managed.find(p) == g_managed.end())
            return CUDA_ERROR_INVALID_VALUE;
    }
    defer(st, [p] {
        std::lock_guard<std::mutex> g(g_lock);
        if (auto m = g_managed.find(p); m != g_managed.end()) {
            g_managed.erase(m);
            std::free((void*)(uintptr_t)p);
        } else if (auto it = g_allocs.find(p); it != g_allocs.end()) {
            g_used -= it->second;
            g_allocs.erase(it);
            unmap_device(p);
        }
    });
    return CUDA_SUCCESS;
}
API CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    *p = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!*p) return CUDA_ERROR_OUT_OF_MEMORY;
    std::lock_guard<std::mutex> g(g_lock);
    g_pinned[(CUdeviceptr)(uintptr_t)*p] = bytes;
    return CUDA_SUCCESS;
}
API CUresult cuMemFreeHost(void* p) {
    flush();
    {
        std::lock_guard<std::mutex> g(g_lock);
        g_pinned.erase((CUdeviceptr)(uintptr_t)p);
    }
    std::free(p);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
    flush();
    if (CUresult r = check(dst, bytes)) return r;
    std::memcpy((void*)(uintptr_t)dst, src, bytes);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, void* st) {
    if (CUresult r = check(dst, bytes)) return r;
    if (async_host(src, bytes)) {
        defer_copy(st, (void*)(uintptr_t)dst, src, bytes);
        return CUDA_SUCCESS;
    }
    // From pageable memory the driver stages the bytes before it returns; the device memory
    // is written when the stream gets there.
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes);
    defer(st, [=] { std::memcpy((void*)(uintptr_t)dst, staged->data(), bytes); });
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
    flush();
    if (CUresult r = check(src, bytes)) return r;
    std::memcpy(dst, (const void*)(uintptr_t)src, bytes);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, void* st) {
    if (CUresult r = check(src, bytes)) return r;
    if (async_host(dst, bytes)) {
        defer_copy(st, dst, (const void*)(uintptr_t)src, bytes);
        return CUDA_SUCCESS;
    }
    // Into pageable memory the call returns once the copy is done: after the work before it.
    flush_stream(st);
    std::memcpy(dst, (const void*)(uintptr_t)src, bytes);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    flush();
    if (CUresult r = check(src, bytes)) return r;
    if (CUresult r = check(dst, bytes)) return r;
    std::memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, bytes);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, void* st) {
    if (CUresult r = check(src, bytes)) return r;
    if (CUresult r = check(dst, bytes)) return r;
    defer_copy(st, (void*)(uintptr_t)dst, (const void*)(uintptr_t)src, bytes);
    return CUDA_SUCCESS;
}
API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    flush();
    if (CUresult r = check(dst, n)) return r;
    std::memset((void*)(uintptr_t)dst, v, n);
    return CUDA_SUCCESS;
}
API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void* st) {
    if (CUresult r = check(dst, n)) return r;
    defer(st, [=] { std::memset((void*)(uintptr_t)dst, v, n); });
    return CUDA_SUCCESS;
}

API CUresult cuStreamCreate(void** s, unsigned flags) {
    *s = new int(0);
    std::lock_guard<std::mutex> g(g_queue_lock);
    g_streams[*s] = flags;
    return CUDA_SUCCESS;
}
API CUresult cuStreamDestroy_v2(void* s) {
    flush_stream(s);  // its work is done first
    {
        std::lock_guard<std::mutex> g(g_queue_lock);
        g_streams.erase(s);
    }
    delete static_cast<int*>(s);
    return CUDA_SUCCESS;
}
API CUresult cuStreamSynchronize(void* s) {
    flush_stream(s);
    return CUDA_SUCCESS;
}
API CUresult cuStreamQuery(void* s) {
    flush_stream(s);
    return CUDA_SUCCESS;
}
// A stream waiting for an event: the queue runs in the order work was asked for, so work on
// the legacy stream or a blocking one already comes after the event's record; a non-blocking
// stream, whose wait runs its own work only, first has everything before it run.
API CUresult cuStreamWaitEvent(void* s, void*, unsigned) {
    bool own = false;
    {
        std::lock_guard<std::mutex> g(g_queue_lock);
        auto it = g_streams.find(s);
        own = it != g_streams.end() && (it->second & 1u);
    }
    if (own) flush();
    return CUDA_SUCCESS;
}
API CUresult cuEventCreate(void** e, unsigned) {
    *e = new Event{std::chrono::steady_clock::now()};
    return CUDA_SUCCESS;
}
// Deleted after the queued work (a record of it may be queued), without waiting for it.
API CUresult cuEventDestroy_v2(void* e) {
    Event* ev = static_cast<Event*>(e);
    defer(nullptr, [ev] { delete ev; });
    return CUDA_SUCCESS;
}
// Stamped when the queue reaches it, as a GPU stamps an event when the stream does.
API CUresult cuEventRecord(void* e, void* st) {
    Event* ev = static_cast<Event*>(e);
    defer(st, [ev] { ev->at = std::chrono::steady_clock::now(); });
    return CUDA_SUCCESS;
}
API CUresult cuEventSynchronize(void*) {
    flush();
    return CUDA_SUCCESS;
}
API CUresult cuEventQuery(void*) {
    flush();
    return CUDA_SUCCESS;
}
API CUresult cuEventElapsedTime(float* ms, void* a, void* b) {
    flush();
    *ms = std::chrono::duration<float, std::milli>(static_cast<Event*>(b)->at -
                                                   static_cast<Event*>(a)->at)
              .count();
    return CUDA_SUCCESS;
}
API CUresult cuEventElapsedTime_v2(float* ms, void* a, void* b) { return cuEventElapsedTime(ms, a, b); }

API CUresult cuModuleLoadData(void** module, const void* image) {
    // NVRTC's output for a real architecture is an ELF cubin; anything else is not an image
    // this device could load.
    if (!image || std::memcmp(image, "\x7f" "ELF", 4) != 0) return CUDA_ERROR_INVALID_IMAGE;
    *module = &g_module_tag;
    return CUDA_SUCCESS;
}
API CUresult cuModuleUnload(void*) { return CUDA_SUCCESS; }
API CUresult cuModuleGetFunction(void** f, void* module, const char* name) {
    if (module != &g_module_tag) return CUDA_ERROR_INVALID_HANDLE;
    std::lock_guard<std::mutex> g(g_lock);
    auto found = g_functions.find(name);
    if (found == g_functions.end()) {
        for (size_t i = 0; i < tm_emu_kernel_count; i++)
            if (std::strcmp(tm_emu_kernels[i].name, name) == 0)
                found = g_functions.emplace(name, new Function{&tm_emu_kernels[i]}).first;
    }
    if (found == g_functions.end()) return CUDA_ERROR_NOT_FOUND;
    *f = found->second;
    return CUDA_SUCCESS;
}
API CUresult cuFuncSetAttribute(void* f, int attr, int v) {
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (attr == 8) {  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        if (v < 0 || v > kMaxOptinSmem) return CUDA_ERROR_INVALID_VALUE;
        static_cast<Function*>(f)->max_dynamic_smem = v;
    }
    return CUDA_SUCCESS;
}
API CUresult cuFuncGetAttribute(int* v, int attr, void* f) {
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    *v = attr == 0 ? 1024 : attr == 8 ? static_cast<Function*>(f)->max_dynamic_smem : 0;
    return CUDA_SUCCESS;
}

namespace {

// cuLaunchKernel and cuLaunchKernelEx: the grid in clusters of `cluster` blocks along x.
CUresult launch(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                unsigned bz, unsigned smem, void* st, void** params, void** extra,
                unsigned cluster) {
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (extra) return CUDA_ERROR_NOT_SUPPORTED;
    Function* fn = static_cast<Function*>(f);
    unsigned long long threads = (unsigned long long)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || gx > 2147483647u)
        return CUDA_ERROR_INVALID_VALUE;
    if (threads == 0 || bx > 1024 || by > 1024 || bz > 64 || threads > 1024)
        return CUDA_ERROR_INVALID_VALUE;
    if ((int)smem > fn->max_dynamic_smem) return CUDA_ERROR_INVALID_VALUE;
    // TOKENMILL_CUDA_EMU_FAULT=<kernel>: launching that kernel fails as an instruction the
    // device does not have would (for the device check's isolated probes).
    if (const char* fault = std::getenv("TOKENMILL_CUDA_EMU_FAULT");
        fault && std::strcmp(fault, fn->kernel->name) == 0) {
        std::fprintf(stderr, "emulated CUDA driver: %s faults (TOKENMILL_CUDA_EMU_FAULT)\n",
                     fn->kernel->name);
        return CUDA_ERROR_ILLEGAL_INSTRUCTION;
    }
    if (int bad = fn->kernel->check(params, reachable); bad >= 0) {
        std::fprintf(stderr,
                     "emulated CUDA driver: %s's argument %d is not a device address (a GPU "
                     "would fault on it)\n",
                     fn->kernel->name, bad);
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    }
    // The arguments are copied now (the caller may reuse its storage once the call
    // returns, as cuLaunchKernel allows), each at a 16-byte aligned offset.
    const TmKernel* k = fn->kernel;
    struct Launch {
        std::vector<unsigned char> bytes;
        std::vector<void*> params;
        Grid grid;
    };
    auto l = std::make_shared<Launch>();
    std::vector<size_t> at((size_t)k->nargs);
    size_t end = 0;
    for (int i = 0; i < k->nargs; i++) {
        at[(size_t)i] = end;
        end += (k->sizes[i] + 15) / 16 * 16;
    }
    l->bytes.resize(end + 16);
    unsigned char* base = l->bytes.data();
    base += (16 - (uintptr_t)base % 16) % 16;
    for (int i = 0; i < k->nargs; i++) {
        std::memcpy(base + at[(size_t)i], params[i], k->sizes[i]);
        l->params.push_back(base + at[(size_t)i]);
    }
    l->grid = Grid{{gx, gy, gz}, {bx, by, bz}, smem, k, l->params.data(), cluster};
    defer(st, [l] {
        g_kernel_tid.store((long)syscall(SYS_gettid));
        g_kernel.store(l->grid.k->name);
        run_grid(l->grid);
        g_kernel.store(nullptr);
        check_overrun(l->grid.k, l->grid.params);
    });
    return CUDA_SUCCESS;
}

// CUlaunchConfig and CUlaunchAttribute as cuda.h lays them out (the attribute's value a
// 64-byte union; the cluster dimension its first three unsigned).
struct LaunchAttribute {
    int id;
    char pad[4];
    union {
        unsigned dim[3];
        char bytes[64];
    } value;
};
struct LaunchConfig {
    unsigned gx, gy, gz, bx, by, bz, smem;
    void* stream;
    LaunchAttribute* attrs;
    unsigned nattrs;
};
constexpr int kAttrClusterDimension = 4;  // CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION

// The cluster size a launch configuration asks for (1 without the attribute); 0 when the
// emulation does not take it: clusters along x alone, of at most 8 blocks (the portable size),
// no other attribute.
unsigned cluster_of(const LaunchConfig& c) {
    unsigned size = 1;
    for (unsigned i = 0; i < c.nattrs; i++) {
        const LaunchAttribute& a = c.attrs[i];
        if (a.id != kAttrClusterDimension) return 0;
        if (a.value.dim[1] != 1 || a.value.dim[2] != 1) return 0;
        size = a.value.dim[0];
    }
    return size <= 8 ? size : 0;
}

}  // namespace

API CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                            unsigned by, unsigned bz, unsigned smem, void* st, void** params,
                            void** extra) {
    return launch(f, gx, gy, gz, bx, by, bz, smem, st, params, extra, 1);
}

API CUresult cuLaunchKernelEx(const LaunchConfig* c, void* f, void** params, void** extra) {
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    unsigned cluster = cluster_of(*c);
    if (cluster == 0 || c->gx % cluster) return CUDA_ERROR_INVALID_VALUE;
    return launch(f, c->gx, c->gy, c->gz, c->bx, c->by, c->bz, c->smem, c->stream, params, extra,
                  cluster);
}

// As many clusters as the device's multiprocessors hold at once, one block each (the emulation
// does not model more than one block of these kernels per multiprocessor).
API CUresult cuOccupancyMaxActiveClusters(int* n, void* f, const LaunchConfig* c) {
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (!c || !n) return CUDA_ERROR_INVALID_VALUE;
    unsigned cluster = cluster_of(*c);
    if (cluster == 0) return CUDA_ERROR_INVALID_VALUE;
    *n = (int)(kMultiprocessors / cluster);
    return CUDA_SUCCESS;
}
