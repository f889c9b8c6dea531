//! The kernel sources, embedded in the binary: `cu/common.cuh` (shared helpers) followed by
//! every `cu/*.cu`, compiled as one NVRTC program so one module holds every kernel. The same
//! files are compiled as C++ by the CPU emulation (`kernels/cuda/emu`), whose tests run each
//! kernel against the CPU reference.

/// The shared helpers, prepended to the kernels.
pub const COMMON: &str = include_str!("../cu/common.cuh");

include!(concat!(env!("OUT_DIR"), "/sources.rs"));

/// The whole program: the helpers, then each file under a `#line` directive so NVRTC's log
/// names the file and line.
pub fn program() -> String {
    let mut s = String::with_capacity(
        COMMON.len() + FILES.iter().map(|(_, f)| f.len() + 64).sum::<usize>(),
    );
    s.push_str("#line 1 \"common.cuh\"\n");
    s.push_str(COMMON);
    for (name, src) in FILES {
        s.push_str(&format!("\n#line 1 \"{name}\"\n"));
        s.push_str(src);
    }
    s
}

/// Names of the kernels defined in the sources (`KERNEL void [__launch_bounds__(…)] name(`),
/// in file order.
pub fn kernel_names() -> Vec<String> {
    FILES
        .iter()
        .flat_map(|(_, src)| crate::decls::kernel_decls(src))
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kernel_is_found_with_or_without_launch_bounds() {
        let names = super::kernel_names();
        for k in [
            "swiglu_fwd_f32",
            "fp8_gemm_f32",
            "grouped_gemm_forms_f32",
            "grouped_gemm_promoted_f32",
            "attention_fwd_f32",
        ] {
            assert!(names.iter().any(|n| n == k), "{k} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("__")), "{names:?}");
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "kernel names must be unique");
    }
}
