// The emulated driver's entry points that the other emulated libraries (cuBLAS, cuBLASLt,
// NCCL) call, looked up in the process: they are loaded beside the emulated libcuda.so.
#pragma once

#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace tm_emu_link {

template <typename F>
F driver_fn(const char* name) {
    void* h = dlopen("libcuda.so", RTLD_NOW | RTLD_NOLOAD);
    return h ? (F)dlsym(h, name) : nullptr;
}

// 1 when [p, p + bytes) lies inside one device (or managed) allocation, 0 when it does not,
// -1 without the emulated driver.
inline int device_range(const void* p, size_t bytes) {
    typedef int (*Check)(unsigned long long, size_t);
    static Check check = driver_fn<Check>("tm_emu_device_range");
    if (!check) return -1;
    return check((unsigned long long)(uintptr_t)p, bytes) == 0 ? 1 : 0;
}

// The device's queue run (the driver holds the streams' work until the host waits), as
// stream order wants before work done at once (the emulated NCCL's).
inline void flush() {
    typedef void (*Flush)();
    static Flush f = driver_fn<Flush>("tm_emu_flush");
    if (f) f();
}

// `f` queued as `stream`'s next work (run at once without the emulated driver).
inline void defer(void* stream, std::function<void()> f) {
    typedef void (*Defer)(void*, void (*)(void*), void*);
    static Defer d = driver_fn<Defer>("tm_emu_defer");
    if (!d) {
        f();
        return;
    }
    d(
        stream,
        [](void* c) {
            auto* g = static_cast<std::function<void()>*>(c);
            (*g)();
            delete g;
        },
        new std::function<void()>(std::move(f)));
}

// Whether a kernel or library may be handed address p: a device, managed or page-locked
// allocation's, or any with pageable access (true without the emulated driver).
inline bool reachable(const void* p) {
    typedef int (*Reachable)(const void*);
    static Reachable r = driver_fn<Reachable>("tm_emu_reachable");
    return !r || r(p) == 1;
}

}  // namespace tm_emu_link
