//! Every kernel compiles with NVRTC for Hopper (sm_90a), Ampere (sm_80) and Blackwell
//! (sm_100a) on this machine, GPU or not, and every kernel the sources define is in the cubin.
//! NVRTC comes from the CUDA toolkit or the `nvidia-cuda-nvrtc` wheel (`.ci/run` installs it
//! and sets `TOKENMILL_CUDA_LIB`); without it this test fails and says how to get it.

use tokenmill_cuda::{nvrtc, source};

#[test]
fn every_kernel_compiles_for_hopper_ampere_and_blackwell_without_warnings() {
    let src = source::program();
    let names = source::kernel_names();
    assert!(names.len() >= 2, "kernels found: {names:?}");
    for arch in nvrtc::CI_ARCHS {
        let opts: Vec<String> = vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".into(),
            "-lineinfo".into(),
            "--fmad=false".into(),
            "--diag-suppress=177".into(),
        ];
        let (cubin, log) =
            nvrtc::compile_uncached(&src, arch, &opts).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert!(log.is_empty(), "{arch}: NVRTC warnings:\n{log}");
        assert_eq!(&cubin[..4], b"\x7fELF", "{arch}: a cubin is an ELF image");
        for name in &names {
            // The symbol table holds each kernel's unmangled name (extern "C").
            let needle = name.as_bytes();
            assert!(
                cubin
                    .windows(needle.len() + 1)
                    .any(|w| &w[..needle.len()] == needle && w[needle.len()] == 0),
                "{arch}: kernel {name} is not in the cubin"
            );
        }
    }
}

#[test]
fn a_kernel_that_does_not_compile_reports_nvrtcs_log_with_file_and_line() {
    let src = format!(
        "{}\n#line 1 \"broken.cu\"\nKERNEL void broken(float* x) {{ x[0] = undefined_name; }}\n",
        source::COMMON
    );
    let err = nvrtc::compile_uncached(&src, "sm_90a", &["--gpu-architecture=sm_90a".into()])
        .expect_err("must not compile");
    let msg = err.to_string();
    assert!(
        msg.contains("broken.cu(1)") && msg.contains("undefined_name"),
        "{msg}"
    );
}

#[test]
fn the_cache_returns_the_same_cubin() {
    let dir = std::env::temp_dir().join(format!("tm-cuda-cache-{}", std::process::id()));
    // SAFETY-free: the variable is read by this process's compile calls only.
    #[allow(unsafe_code)]
    // SAFETY: tests in this binary do not read TOKENMILL_CUDA_CACHE concurrently except this one.
    unsafe {
        std::env::set_var("TOKENMILL_CUDA_CACHE", &dir)
    };
    let src = source::program();
    let a = nvrtc::compile(&src, "sm_80").expect("compile");
    let b = nvrtc::compile(&src, "sm_80").expect("cached");
    assert!(!a.cached && b.cached);
    assert_eq!(a.cubin, b.cubin);
    // A truncated or foreign cache file is not loaded: it is compiled again and replaced.
    let path = nvrtc::cache_path(&src, "sm_80").expect("path");
    for bad in [&a.cubin[..a.cubin.len() / 2], b"not a cubin".as_slice()] {
        std::fs::write(&path, bad).unwrap();
        let c = nvrtc::compile(&src, "sm_80").expect("recompiled");
        assert!(!c.cached);
        assert_eq!(c.cubin, a.cubin);
        assert_eq!(std::fs::read(&path).unwrap(), a.cubin);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The wgmma kernel's instructions (cu/wgmma.cu, `TM_WGMMA`) are compiled in for Hopper's
/// sm_90a and for nothing else (Blackwell has no wgmma; the kernel traps there, and the backend
/// does not launch it): so the sm_90a cubin CI builds holds the real `wgmma.mma_async`, checked
/// by ptxas, not the trap.
#[test]
fn the_wgmma_instructions_are_compiled_for_sm_90a_only() {
    let src = format!(
        "{}\n#line 1 \"probe.cu\"\n#if !defined(TM_WGMMA)\n#error wgmma is not compiled in\n#endif\n",
        source::program()
    );
    for (arch, wgmma) in [("sm_90a", true), ("sm_100a", false)] {
        let opts = vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()];
        match nvrtc::compile_uncached(&src, arch, &opts) {
            Ok(_) => assert!(wgmma, "{arch}: TM_WGMMA is defined"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    !wgmma && msg.contains("wgmma is not compiled in"),
                    "{arch}: {msg}"
                );
            }
        }
    }
}

/// ptxas's resource report for sm_90a: our tensor-core GEMMs keep their accumulators, scales
/// and fragments in registers — the wgmma kernels and the BF16 mma.sync one spill nothing to
/// local memory; the FP8 mma.sync one, with 128 accumulators and a warp's 24 fragment
/// registers beside them, at most 16 bytes (352 when it held the next chunk in registers
/// instead of copying it by cp.async) — no wgmma is serialized (ptxas warns when it must
/// wait for one before the next issues) and no `setmaxnreg` ignored.
/// The program compiled for sm_90a as the backend compiles it, with ptxas's resource report:
/// the cubin and NVRTC's log, made once for the tests that read them.
fn hopper() -> &'static (Vec<u8>, String) {
    static BUILD: std::sync::OnceLock<(Vec<u8>, String)> = std::sync::OnceLock::new();
    BUILD.get_or_init(|| {
        let opts = vec![
            "--gpu-architecture=sm_90a".into(),
            "--std=c++17".into(),
            "--fmad=false".into(),
            "--diag-suppress=177".into(),
            "--ptxas-options=-v".into(),
        ];
        nvrtc::compile_uncached(&source::program(), "sm_90a", &opts).expect("compile")
    })
}

#[test]
fn the_tensor_core_kernels_spill_no_registers() {
    let log = &hopper().1;
    for (kernel, most) in [
        ("fp8_wgmma_gemm_f32", 0),
        ("bf16_wgmma_gemm_f32", 0),
        ("fp8_tma_gemm_f32", 0),
        ("bf16_tma_gemm_f32", 0),
        ("fp8_tma_mc_gemm_f32", 0),
        ("bf16_tma_mc_gemm_f32", 0),
        ("fp8_mma_gemm_f32", 16),
        ("bf16_mma_gemm_f32", 0),
    ] {
        let at = log
            .find(&format!("Function properties for {kernel}\n"))
            .unwrap_or_else(|| panic!("no report for {kernel}:\n{log}"));
        let report: Vec<&str> = log[at..].lines().take(3).collect();
        eprintln!("{}", report.join("\n"));
        // "ptxas . N bytes stack frame, S bytes spill stores, L bytes spill loads"
        let bytes = |what: &str| -> u64 {
            let line = report[1];
            let end = line
                .find(what)
                .unwrap_or_else(|| panic!("{kernel}: {line}"));
            let start = line[..end].trim_end().rfind(' ').map_or(0, |i| i + 1);
            line[start..end].trim().parse().expect("a byte count")
        };
        let (stores, loads) = (bytes(" bytes spill stores"), bytes(" bytes spill loads"));
        assert!(stores <= most && loads <= most, "{kernel}: {report:?}");
        let used = report[2]
            .split("Used ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("{kernel}: {report:?}"));
        // The BF16 mma.sync kernel (72 KiB of shared memory, 256 threads) fits two blocks on a
        // multiprocessor while it takes at most 128 registers (65,536 / 512); its epilogue
        // reads C in two halves to stay there (all at once took 168).
        if kernel == "bf16_mma_gemm_f32" {
            assert!(
                used <= 128,
                "{kernel}: {used} registers: one block a multiprocessor"
            );
        }
        // The TMA kernels' `setmaxnreg` split (the producer warpgroup down to 40, the two
        // consumers up to 232) must fit what the block was launched with: 128·40 + 256·232 =
        // 64,512 = 384·168. Fewer at launch and `setmaxnreg.inc` would wait forever on a GPU.
        if kernel.contains("_tma_") {
            assert_eq!(384 * used, 128 * 40 + 256 * 232, "{kernel}: {report:?}");
        }
    }
    assert!(!log.contains("serialized"), "{log}");
    // Nor is a register hint of the TMA kernels dropped (ptxas warns "setmaxnreg ignored" where
    // it cannot keep one).
    assert!(!log.contains("setmaxnreg"), "{log}");
}

/// The GEMMs' epilogues, in the machine code ptxas makes for sm_90a: a thread that adds its
/// results to C reads all of its values of C (or half of them, where registers are short)
/// before it writes the first. Read, add and write value by value — what the code said until
/// 2026-12-07 — made 64 reads of global memory one after another per thread, each waiting for
/// the write before it (nothing told the compiler they were apart): tens of thousands of cycles
/// per tile when accumulating, as long as a whole tile's products at K = 8192. Counted in
/// `cuobjdump -sass` (the `nvidia-cuda-cuobjdump` and `nvidia-cuda-nvdisasm` wheels; `.ci/run`
/// installs them and sets `TOKENMILL_CUDA_BIN`; without them this test fails and says how to get
/// them) as the global reads of C (`LDG`, not the read-only `LDG.E.CONSTANT` of operands and
/// scales, nor `cp.async`'s `LDGSTS`) followed by a global write (`STG`) in the kernel's code.
/// `fp8_gemm_f32` and `grouped_gemm_promoted_f32` read C into shared memory before their
/// products and always did: they are in the list so that they stay so.
#[test]
fn the_gemms_read_c_before_they_write_it() {
    let runs = read_runs(false);
    for (kernel, most) in [
        ("fp8_tma_gemm_f32", 1),
        ("bf16_tma_gemm_f32", 1),
        ("fp8_tma_mc_gemm_f32", 1),
        ("bf16_tma_mc_gemm_f32", 1),
        ("fp8_wgmma_gemm_f32", 1),
        ("bf16_wgmma_gemm_f32", 1),
        ("fp8_mma_gemm_f32", 1),
        // In two halves of its fragments' rows (two blocks a multiprocessor: see above).
        ("bf16_mma_gemm_f32", 2),
        ("fp8_gemm_f32", 1),
        ("grouped_gemm_promoted_f32", 1),
        // In two halves of the rows (the thread's 64 products take half its registers).
        ("grouped_gemm_forms_f32", 2),
    ] {
        let (pairs, reads) = runs
            .get(kernel)
            .copied()
            .unwrap_or_else(|| panic!("{kernel} is not in the disassembly"));
        eprintln!("{kernel}: {reads} global reads, {pairs} runs of them before a write");
        assert!(
            reads > 0,
            "{kernel}: no global read found: is the count still right?"
        );
        assert!(
            pairs <= most,
            "{kernel}: {pairs} runs of reads of C before writes (at most {most})"
        );
    }
}

/// AdamW issues every read of a pass (kind, g, m, v and p of its four elements) before its
/// first write: one run of reads before writes in its loop. Element by element, as until
/// 2026-12-07, each element's kind was read and tested before the rest, and p read after m
/// and v were written: three trips to memory one after another per element, 16 runs in the
/// code. Counted with the read-only loads (`LDG.E.CONSTANT`: kind and g), in the disassembly
/// of the gemm test above.
#[test]
fn the_optimizer_step_reads_a_pass_before_it_writes() {
    let runs = read_runs(true);
    let (pairs, reads) = runs["adamw_f32"];
    eprintln!("adamw_f32: {reads} global reads, {pairs} runs of them before a write");
    assert_eq!(reads, 20, "adamw_f32: 5 reads of each of 4 elements");
    assert_eq!(pairs, 1, "adamw_f32: {pairs} runs of reads before writes");
}

/// `cuobjdump -sass` of the sm_90a cubin, made once.
fn hopper_sass() -> &'static str {
    static SASS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SASS.get_or_init(|| {
        let bin = std::env::var_os("TOKENMILL_CUDA_BIN").map(std::path::PathBuf::from);
        let tool = |name: &str| bin.as_ref().map_or(name.into(), |d| d.join(name));
        let cubin = &hopper().0;
        let path = std::env::temp_dir().join(format!("tm-sass-{}.cubin", std::process::id()));
        std::fs::write(&path, cubin).unwrap();
        let mut cmd = std::process::Command::new(tool("cuobjdump"));
        if let Some(d) = &bin {
            // cuobjdump runs nvdisasm from its PATH.
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![d.clone()];
            dirs.extend(std::env::split_paths(&path));
            cmd.env("PATH", std::env::join_paths(dirs).unwrap());
        }
        let out = cmd.arg("-sass").arg(&path).output().unwrap_or_else(|e| {
            panic!(
                "cuobjdump: {e}: `pip install --target ~/.cache/tokenmill/cudabin \
                 nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86` and `export \
                 TOKENMILL_CUDA_BIN=~/.cache/tokenmill/cudabin/nvidia/cu13/bin`"
            )
        });
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "cuobjdump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// Per kernel of [`hopper_sass`]: (the runs of global reads that a global write (`STG`)
/// follows, the global reads). Reads are `LDG`, not `cp.async`'s `LDGSTS` and `LDGDEPBAR`, and
/// the read-only `LDG.E.CONSTANT` only with `constant_too`.
fn read_runs(constant_too: bool) -> std::collections::HashMap<String, (usize, usize)> {
    let mut runs: std::collections::HashMap<String, (usize, usize)> = Default::default();
    let (mut kernel, mut last_read) = (String::new(), false);
    for line in hopper_sass().lines() {
        if let Some(name) = line.split("Function : ").nth(1) {
            kernel = name.trim().to_string();
            last_read = false;
            continue;
        }
        let op = line.split("*/").nth(1).unwrap_or("").trim_start();
        // A predicate guard first (`@P0 STG.E …`, `@!P1 LDG.E …`).
        let op = if op.starts_with('@') {
            op.split_once(' ').map_or("", |(_, rest)| rest)
        } else {
            op
        };
        let entry = runs.entry(kernel.clone()).or_default();
        let read = op.starts_with("LDG")
            && !op.starts_with("LDGSTS")
            && !op.starts_with("LDGDEPBAR")
            && (constant_too || !op.contains(".CONSTANT"));
        if read {
            last_read = true;
            entry.1 += 1;
        } else if op.starts_with("STG") {
            if last_read {
                entry.0 += 1;
            }
            last_read = false;
        }
    }
    runs
}
