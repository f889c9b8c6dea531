//! Compiles the CUDA kernel sources (`../cu/*.cu`) as C++20 with the emulation shim
//! (`shim/emu.h`) and the shared helpers (`../cu/common.cuh`) force-included, into one static
//! library the launcher and the tests link.

use std::path::PathBuf;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let cu = here.join("../cu");
    let shim = here.join("shim");
    println!("cargo:rerun-if-changed={}", shim.display());
    println!("cargo:rerun-if-changed={}", cu.display());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&cu)
        .expect("kernels/cuda/cu")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .warnings(false)
        .flag("-x")
        .flag("c++")
        .flag("-include")
        .flag(shim.join("emu.h").to_str().expect("utf-8 path"))
        .flag("-include")
        .flag(cu.join("common.cuh").to_str().expect("utf-8 path"))
        .flag("-ffp-contract=off")
        .include(&shim);
    for s in &sources {
        build.file(s);
    }
    build.file(shim.join("emu.cpp"));
    build.compile("tokenmill_cuda_emu");
}
