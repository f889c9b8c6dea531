// The block and thread bookkeeping of the CPU emulation (see emu.h), called by the Rust
// launcher through a C ABI.
#include "emu.h"

thread_local EmuThread emu_thread;

extern "C" void* tm_emu_block_new(unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                  unsigned by, unsigned bz, unsigned ix, unsigned iy,
                                  unsigned iz, size_t dyn_smem) {
    unsigned threads = bx * by * bz;
    unsigned nwarps = (threads + 31) / 32;
    EmuBlock* b = new EmuBlock;
    b->grid = {gx, gy, gz};
    b->dim = {bx, by, bz};
    b->idx = {ix, iy, iz};
    b->all = new std::barrier<>((std::ptrdiff_t)threads);
    b->warps = new std::barrier<>*[nwarps];
    for (unsigned w = 0; w < nwarps; w++) {
        unsigned n = threads - w * 32 < 32 ? threads - w * 32 : 32;
        b->warps[w] = new std::barrier<>((std::ptrdiff_t)n);
    }
    b->lanes = new uint64_t[nwarps * 32]();
    b->dyn_smem = new unsigned char[dyn_smem > 0 ? dyn_smem : 1]();
    return b;
}

extern "C" void tm_emu_block_free(void* p) {
    EmuBlock* b = static_cast<EmuBlock*>(p);
    unsigned threads = b->dim.x * b->dim.y * b->dim.z;
    for (unsigned w = 0; w < (threads + 31) / 32; w++) delete b->warps[w];
    delete[] b->warps;
    delete b->all;
    delete[] b->lanes;
    delete[] b->dyn_smem;
    delete b;
}

extern "C" void tm_emu_thread_enter(void* p, unsigned tx, unsigned ty, unsigned tz) {
    EmuBlock* b = static_cast<EmuBlock*>(p);
    emu_thread.block = b;
    emu_thread.tid = {tx, ty, tz};
    emu_thread.linear = tx + b->dim.x * (ty + b->dim.y * tz);
}

extern "C" void tm_emu_thread_exit() {
    EmuBlock* b = emu_thread.block;
    b->warps[emu_thread.linear / 32]->arrive_and_drop();
    b->all->arrive_and_drop();
    emu_thread.block = nullptr;
}
