#!/usr/bin/env python3
"""A mutation audit of the CUDA kernels' emulation tests.

Each entry changes one place in kernels/cuda/cu/*.cu that only a test can defend (a vector
path's condition, an edge predicate, NaN handling, a tie order, an accumulate flag), runs the
emulation's kernel suite (`cargo test -p tokenmill-cuda-emu`, about 2 minutes a change on
2 cores), and restores the source. `expect` says what should happen:

  killed      a test fails or traps (SIGILL: the alignment check; SIGSEGV: a read past a
              buffer's end, into the guard of the tests' heap, `src/guard.rs`)
  equivalent  the change cannot alter a result (the reason is in docs/gpu.md)
  backend     the kernel suite cannot see it; the guarded emulated driver under the backend
              stops it (`cargo test -p tokenmill-cuda --test emulated`). No entry now: the one
              that was (`mma_load` reading rows past m, which changes no value) faults in the
              kernel suite since its buffers end at guards

Prints one row per change and exits non-zero when a change expected to be killed survives.
Usage: python3 kernels/cuda/emu/mutants.py [index ...]   (from the repository root; set
CARGO_TARGET_DIR as for the tests). Not part of CI: the whole list takes over an hour.
"""
import os
import subprocess
import sys
import time

CU = os.path.join("kernels", "cuda", "cu")

# (name, file in kernels/cuda/cu, text, replacement, expect)
MUTANTS = [
    ('fp8_gemm vec ignores k%16', 'gemm.cu', 'const bool vec = (k & 15) == 0 && tm_aligned16(a)', 'const bool vec = tm_aligned16(a)', 'killed'),
    ('grouped vec_a ignores k%4', 'gemm.cu', 'const bool vec_a = (k & 3) == 0 && tm_aligned16(a);', 'const bool vec_a = tm_aligned16(a);', 'killed'),
    ('grouped vec_b ignores stride%4', 'gemm.cu', '(k & 3) == 0 && (stride & 3) == 0 && tm_aligned16(b)', '(k & 3) == 0 && tm_aligned16(b)', 'killed'),
    ('grouped vec_c ignores ldc%4', 'gemm.cu', 'const bool vec_c = (ldc & 3) == 0 && tm_aligned16(C);', 'const bool vec_c = tm_aligned16(C);', 'killed'),
    ('grouped C edge col+3<nr', 'gemm.cu', 'if (r < mr && vec_c && col + 3 < nr) {\n                        const tm_float4 q', 'if (r < mr && vec_c && col < nr) {\n                        const tm_float4 q', 'equivalent'),
    ('permute vec ignores d%4', 'moe.cu', 'const bool vec = (d & 3) == 0 && tm_aligned16(x) && tm_aligned16(xp);', 'const bool vec = tm_aligned16(x) && tm_aligned16(xp);', 'killed'),
    ('unpermute vec ignores d%4', 'moe.cu', 'const bool vec = (d & 3) == 0 && tm_aligned16(yp) && tm_aligned16(y);', 'const bool vec = tm_aligned16(yp) && tm_aligned16(y);', 'killed'),
    ('attention vec ignores d%4', 'attention.cu', 'const bool vec = (d & 3) == 0 && tm_aligned16(g);', 'const bool vec = tm_aligned16(g);', 'killed'),
    ('moe offsets negative expert kept', 'moe.cu', 'if (x < 0 || x >= experts) slot_rows[i] = -1;', 'if (x >= experts) slot_rows[i] = -1;', 'killed'),
    ('ce target out of vocab', 'loss.cu', 'losses[r] = t == CE_IGNORE ? 0.0f : (t < (unsigned int)vocab ? l - row[t] : TM_NAN);', 'losses[r] = t == CE_IGNORE ? 0.0f : l - row[t];', 'killed'),
    ('strided accumulate ignored', 'strided.cu', 'dst[to] = accumulate ? __fadd_rn(dst[to], src[from]) : src[from];', 'dst[to] = src[from];', 'killed'),
    ('rmsnorm bwd accumulate ignored', 'norm.cu', 'dxr[j] = accumulate ? dxr[j] + g : g;', 'dxr[j] = g;', 'killed'),
    ('topk tie by index reversed', 'topk.cu', '    return ia < ib;\n}', '    return ia > ib;\n}', 'killed'),
    ('topk NaN order reversed', 'topk.cu', 'if (an != bn) return bn;', 'if (an != bn) return an;', 'killed'),
    ('route group score top-1 only', 'topk.cu', 'if (i2 >= 0) sum += v2;', '', 'killed'),
    ('route norm always', 'topk.cu', 'denom = norm_topk ? denom + 1e-20f : 1.0f;', 'denom = denom + 1e-20f;', 'killed'),
    ('adamw decays plain too', 'optim.cu', 'if (k == 1) pi *= decay;', 'if (k != 2) pi *= decay;', 'killed'),
    ('adamw bf16 m not rounded', 'optim.cu', '        mi = round_bf16(mi);\n', '', 'killed'),
    ('rope inverse ignored', 'rope.cu', 'if (inverse) s = -s;', '', 'killed'),
    ('rope pos not mod seq', 'rope.cu', 'int pos = (int)(t % seq);', 'int pos = (int)(t % (seq + 1));', 'killed'),
    ('gather scale ignored', 'rows.cu', 'for (int c = threadIdx.x; c < d; c += blockDim.x) to[c] = __fmul_rn(g, from[c]);', 'for (int c = threadIdx.x; c < d; c += blockDim.x) to[c] = from[c] + 0.0f * g;', 'killed'),
    ('ce grad target term dropped', 'loss.cu', 'if ((unsigned int)j == t) v -= g;', '', 'killed'),
    ('route_bwd no zeroing', 'topk.cu', 'for (int i = lane; i < experts; i += WARP) d[i] = 0.0f;', '', 'killed'),
    ('mma K tail not zeroed', 'mma.cu', 'bool ok = r0 + r < rows && kb < k;', 'bool ok = r0 + r < rows;', 'killed'),
    ('mma rows tail not zeroed', 'mma.cu', 'bool ok = r0 + r < rows && kb < k;', 'bool ok = kb < k;', 'killed'),
    ('tile_amax NaN ignored', 'quant.cu', 'amax = fmaxf(amax, tm_isfinite(v) ? fabsf(v) : TM_INF);', 'amax = fmaxf(amax, fabsf(v));', 'killed'),
    ('lt_scale inf not 1', 'quant.cu', 'return amax == 0.0f || amax == TM_INF ? 1.0f : amax / E4M3_MAX;', 'return amax == 0.0f ? 1.0f : amax / E4M3_MAX;', 'killed'),
    ('fake quant bad tile not NaN', 'quant.cu', 'dst[at] = amax == 0.0f ? v : bad ? TM_NAN : e4m3_to_f32(f32_to_e4m3(v / s)) * s;', 'dst[at] = amax == 0.0f ? v : e4m3_to_f32(f32_to_e4m3(v / s)) * s;', 'equivalent'),
    ('quantize NaN not flagged', 'quant.cu', '            if (tm_isnan(v)) nan = 1.0f;\n', '', 'killed'),
    ('quantize NaN not counted', 'quant.cu', 'if (!finite || nan != 0.0f) atomicAdd(bad_tiles, 1u);', 'if (!finite) atomicAdd(bad_tiles, 1u);', 'killed'),
    ('lt rows bad codes not NaN', 'quant.cu', 'codes[o * ld + j] = bad ? (uint8_t)0x7f : f32_to_e4m3(v / s);', 'codes[o * ld + j] = f32_to_e4m3(v / s);', 'killed'),
    ('lt panel bad codes not NaN', 'quant.cu', 'bytes[ol][j] = s < 0.0f ? (uint8_t)0x7f : f32_to_e4m3(v / s);', 'bytes[ol][j] = f32_to_e4m3(v / s);', 'killed'),
    ('lt panel NaN ignored', 'quant.cu', 'm = fmaxf(m, tm_isfinite(v) ? fabsf(v) : TM_INF);', 'm = fmaxf(m, fabsf(v));', 'killed'),
    ('wg_store accumulate ignored', 'wgmma.cu', '            if (accumulate) v = {__fadd_rn(old[2 * j + y].x, v.x), __fadd_rn(old[2 * j + y].y, v.y)};\n', '', 'killed'),
    ('tm_pairs ignores ldc parity', 'common.cuh', 'return (ldc & 1) == 0 && (reinterpret_cast<unsigned long long>(c) & 7ull) == 0;', 'return (reinterpret_cast<unsigned long long>(c) & 7ull) == 0;', 'killed'),
    ('tm_pairs always', 'common.cuh', 'return (ldc & 1) == 0 && (reinterpret_cast<unsigned long long>(c) & 7ull) == 0;', 'return true;', 'killed'),
    ("fused CE reads any target", "loss.cu", "const bool inside = t < (unsigned int)vocab;",
     "const bool inside = true;", "killed"),
    ('route_bwd fold drops a last term', 'topk.cu', 'for (int l = 0; l < n; l++) acc', 'for (int l = 0; l + 1 < n; l++) acc', 'killed'),
    ('route_bwd fold in reverse lane order', 'topk.cu', '__shfl_sync(FULL_MASK, v, l)', '__shfl_sync(FULL_MASK, v, n - 1 - l)', 'killed'),
    ('route_bwd no syncwarp after gates', 'topk.cu', "        __syncwarp();  // lane 0's gate updates", "        // lane 0's gate updates", 'killed'),
    ('route_bwd gates on every lane', 'topk.cu', '        if (lane == 0) {\n            const int* sel', '        {\n            const int* sel', 'killed'),
]


def run(path, old, new):
    src = open(path).read()
    if src.count(old) != 1:
        return "stale", 0.0  # the source changed: the entry needs updating
    start = time.time()
    try:
        open(path, "w").write(src.replace(old, new))
        r = subprocess.run(
            ["cargo", "test", "-q", "-p", "tokenmill-cuda-emu", "--no-fail-fast"],
            capture_output=True,
            text=True,
        )
    finally:
        open(path, "w").write(src)
    return ("survived" if r.returncode == 0 else "killed"), time.time() - start


def main():
    chosen = {int(a) for a in sys.argv[1:]}
    bad = 0
    print(f"{'#':>3}  {'change':<36} {'expect':<10} {'result':<9} {'s':>5}")
    for i, (name, f, old, new, expect) in enumerate(MUTANTS):
        if chosen and i not in chosen:
            continue
        result, secs = run(os.path.join(CU, f), old, new)
        ok = result == "killed" if expect == "killed" else result != "stale"
        bad += not ok
        flag = "" if ok else "  <- not as expected"
        print(f"{i:>3}  {name:<36} {expect:<10} {result:<9} {secs:>5.0f}{flag}", flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
