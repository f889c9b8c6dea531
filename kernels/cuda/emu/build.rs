//! Compiles the CUDA kernel sources (`../cu/*.cu`) as C++20 with the emulation shim
//! (`shim/emu.h`) and the shared helpers (`../cu/common.cuh`) force-included, into one static
//! library the launcher and the tests link; then links the emulated CUDA driver
//! (`driver/driver.cpp` over those kernels, with a table of every kernel by name generated from
//! the sources), cuBLAS (`driver/cublas.cpp`), cuBLASLt (`driver/cublaslt.cpp`) and NCCL
//! between the processes of one machine (`driver/nccl.cpp`) as `libcuda.so`, `libcublas.so`,
//! `libcublasLt.so` and `libnccl.so` in `$OUT_DIR/driver`, which the CUDA backend and the NCCL
//! communicator load like the real ones (`tokenmill_cuda_emu::DRIVER_DIR`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("out dir"));
    let cu = here.join("../cu");
    let shim = here.join("shim");
    let drv = here.join("driver");
    println!("cargo:rerun-if-changed={}", shim.display());
    println!("cargo:rerun-if-changed={}", cu.display());
    println!("cargo:rerun-if-changed={}", drv.display());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&cu)
        .expect("kernels/cuda/cu")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    let emu_build = |b: &mut cc::Build| {
        b.cpp(true)
            .std("c++20")
            .opt_level(2)
            .warnings(false)
            .pic(true)
            .flag("-x")
            .flag("c++")
            .flag("-include")
            .flag(shim.join("emu.h").to_str().expect("utf-8 path"))
            .flag("-include")
            .flag(cu.join("common.cuh").to_str().expect("utf-8 path"))
            .flag("-ffp-contract=off")
            .include(&shim);
    };
    // The shim apart: the kernels alone are compiled with every access's alignment checked.
    let mut shim_build = cc::Build::new();
    emu_build(&mut shim_build);
    shim_build.file(shim.join("emu.cpp"));
    let shim_objs = shim_build.compile_intermediates();
    let mut build = cc::Build::new();
    emu_build(&mut build);
    // A GPU faults on an access whose address is not a multiple of its size (a 16-byte vector
    // load at an 8-byte boundary, say), where the CPU reads it: each access of the kernels is
    // checked, and one that is misaligned stops at an illegal instruction (a trap, no runtime
    // library needed), which the emulated driver names with its kernel.
    build
        .flag("-fsanitize=alignment")
        .flag("-fsanitize-undefined-trap-on-error");
    for s in &sources {
        build.file(s);
    }
    for o in shim_objs {
        build.object(o);
    }
    build.compile("tokenmill_cuda_emu");

    // The driver: every kernel callable by name with cuLaunchKernel's argument array.
    let dispatch = out.join("dispatch.cpp");
    std::fs::write(&dispatch, dispatch_source(&sources)).expect("write dispatch.cpp");
    let mut objs = cc::Build::new();
    emu_build(&mut objs);
    objs.file(&dispatch).file(drv.join("driver.cpp"));
    let driver_objs = objs.compile_intermediates();
    let plain = |b: &mut cc::Build| {
        b.cpp(true)
            .std("c++20")
            .opt_level(2)
            .pic(true)
            .warnings(false);
    };
    let mut blas = cc::Build::new();
    plain(&mut blas);
    blas.file(drv.join("cublas.cpp"));
    let blas_objs = blas.compile_intermediates();
    let mut lt = cc::Build::new();
    plain(&mut lt);
    lt.file(drv.join("cublaslt.cpp"));
    let lt_objs = lt.compile_intermediates();
    let mut nccl = cc::Build::new();
    plain(&mut nccl);
    nccl.file(drv.join("nccl.cpp"));
    let nccl_objs = nccl.compile_intermediates();

    let dir = out.join("driver");
    std::fs::create_dir_all(&dir).expect("driver dir");
    let archive = out.join("libtokenmill_cuda_emu.a");
    link(&dir, "libcuda.so", &driver_objs, Some(&archive));
    link(&dir, "libcublas.so", &blas_objs, None);
    link(&dir, "libcublasLt.so", &lt_objs, None);
    link(&dir, "libnccl.so", &nccl_objs, None);
}

/// Links `objs` (and the whole of `archive`) into the shared library `dir/name` whose soname is
/// `name`, the first file name cudarc asks the dynamic loader for.
fn link(dir: &Path, name: &str, objs: &[PathBuf], archive: Option<&Path>) {
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let mut cmd: Command = compiler.to_command();
    cmd.arg("-shared")
        .arg("-o")
        .arg(dir.join(name))
        .arg(format!("-Wl,-soname,{name}"))
        // Its own kernels, shim and launcher, even in a process that links the emulation's
        // static library too (the emulation tests).
        .arg("-Wl,-Bsymbolic")
        .args(objs);
    if let Some(a) = archive {
        cmd.arg("-Wl,--whole-archive")
            .arg(a)
            .arg("-Wl,--no-whole-archive");
    }
    cmd.arg("-lpthread").arg("-ldl");
    let status = cmd.status().expect("run the linker");
    assert!(status.success(), "linking {name} failed: {cmd:?}");
}

/// A C++ source declaring every kernel of `sources` (its parameter list as written) and a
/// table `tm_emu_kernels` of `{name, call, check, sizes, nargs}`, where `call(params)` calls
/// the kernel with `*(T_i*)params[i]` for each parameter type `T_i` — cuLaunchKernel's
/// convention —, `check(params, ok)` is the index of the first pointer argument that is
/// neither null nor `ok`, or -1 (the emulated driver's check that kernels get device
/// addresses), and `sizes` the `nargs` parameters' sizes (the driver copies the arguments of a
/// launch it runs later, as a GPU's launch does).
fn dispatch_source(sources: &[PathBuf]) -> String {
    let mut decls = String::new();
    let mut table = String::new();
    let mut count = 0;
    for path in sources {
        let src = std::fs::read_to_string(path).expect("read a kernel source");
        for (name, params) in kernel_decls(&src) {
            decls.push_str(&format!("KERNEL void {name}({params});\n"));
            table.push_str(&format!(
                "    {{\"{name}\", [](void** p) {{ tm_invoke(&{name}, p); }}, \
                 [](void** p, bool (*ok)(const void*)) {{ return tm_check(&{name}, p, ok); }}, \
                 tm_sizes(&{name}), tm_nargs(&{name})}},\n"
            ));
            count += 1;
        }
    }
    format!(
        "// Generated by kernels/cuda/emu/build.rs from kernels/cuda/cu/*.cu.\n\
         #include <cstddef>\n#include <type_traits>\n#include <utility>\n\n{decls}\n\
         template <class... A, std::size_t... I>\n\
         static void tm_call(void (*f)(A...), void** p, std::index_sequence<I...>) {{\n\
         \x20   f(*static_cast<A*>(p[I])...);\n}}\n\
         template <class... A>\n\
         static void tm_invoke(void (*f)(A...), void** p) {{\n\
         \x20   tm_call(f, p, std::index_sequence_for<A...>{{}});\n}}\n\
         template <class T>\n\
         static bool tm_arg_ok(void* slot, bool (*ok)(const void*)) {{\n\
         \x20   if constexpr (std::is_pointer_v<T>) {{\n\
         \x20       T v = *static_cast<T*>(slot);\n\
         \x20       return v == nullptr || ok((const void*)v);\n\
         \x20   }} else {{\n\
         \x20       return true;\n\
         \x20   }}\n}}\n\
         template <class... A, std::size_t... I>\n\
         static int tm_check_at(void (*)(A...), void** p, bool (*ok)(const void*),\n\
         \x20                      std::index_sequence<I...>) {{\n\
         \x20   int bad = -1;\n\
         \x20   ((bad < 0 && !tm_arg_ok<A>(p[I], ok) ? (bad = (int)I) : 0), ...);\n\
         \x20   return bad;\n}}\n\
         template <class... A>\n\
         static int tm_check(void (*f)(A...), void** p, bool (*ok)(const void*)) {{\n\
         \x20   return tm_check_at(f, p, ok, std::index_sequence_for<A...>{{}});\n}}\n\n\
         template <class... A>\n\
         struct TmSizes {{\n\
         \x20   static constexpr unsigned v[sizeof...(A) + 1] = {{(unsigned)sizeof(A)..., 0u}};\n}};\n\
         template <class... A>\n\
         static const unsigned* tm_sizes(void (*)(A...)) {{ return TmSizes<A...>::v; }}\n\
         template <class... A>\n\
         static int tm_nargs(void (*)(A...)) {{ return (int)sizeof...(A); }}\n\n\
         struct TmKernel {{\n    const char* name;\n    void (*call)(void**);\n\
         \x20   int (*check)(void**, bool (*)(const void*));\n\
         \x20   const unsigned* sizes;\n    int nargs;\n}};\n\
         extern \"C\" const TmKernel tm_emu_kernels[] = {{\n{table}}};\n\
         extern \"C\" const std::size_t tm_emu_kernel_count = {count};\n"
    )
}

// `kernel_decls`: the kernels a source defines, shared with the crate (kernels/cuda/src).
include!("../src/decls.rs");
