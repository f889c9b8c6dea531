//! Compiling the kernels with NVRTC for one GPU architecture, to a cubin (machine code: no JIT
//! at load), cached on disk by a hash of the source, the options and NVRTC's version.

use std::ffi::{CStr, CString, c_char};
use std::path::PathBuf;

use cudarc::nvrtc::sys;

use crate::error::{Error, Result};
use crate::libs;

/// The architectures CI compiles for: Hopper with its architecture-specific features
/// (wgmma/TMA: `sm_90a`), Ampere, and Blackwell.
pub const CI_ARCHS: &[&str] = &["sm_90a", "sm_80", "sm_100a"];

/// A compiled module.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The target (`sm_90a`).
    pub arch: String,
    /// The cubin.
    pub cubin: Vec<u8>,
    /// NVRTC's log (warnings), empty when clean.
    pub log: String,
    /// Whether it came from the disk cache.
    pub cached: bool,
}

/// The NVRTC target for a device of compute capability `(major, minor)`: the `a` variant on
/// Hopper and Blackwell (architecture-specific instructions), plain `sm_XY` elsewhere.
pub fn arch_for(major: i32, minor: i32) -> String {
    if major >= 9 {
        format!("sm_{major}{minor}a")
    } else {
        format!("sm_{major}{minor}")
    }
}

/// NVRTC's version `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    libs::nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    #[allow(unsafe_code)]
    // SAFETY: two valid out-pointers; NVRTC is loaded (checked above).
    let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(r, "nvrtcVersion")?;
    Ok((major, minor))
}

fn check(r: sys::nvrtcResult, op: &str) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Compile {
            arch: String::new(),
            log: format!("{op}: {r:?}"),
        })
    }
}

fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "-lineinfo".into(),
        // No contraction of a·b + c into FMA unless written: the emulation compiles with
        // -ffp-contract=off, and the CPU references do not contract either.
        "--fmad=false".into(),
        // Unused helpers of common.cuh are not worth a warning.
        "--diag-suppress=177".into(),
    ]
}

fn cache_dir() -> PathBuf {
    std::env::var_os("TOKENMILL_CUDA_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("tokenmill/cuda"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/tokenmill/cuda"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("tokenmill-cuda"))
}

/// Whether `b` is a whole 64-bit ELF image: the magic, and the section header table (at the end
/// of NVRTC's cubins) inside the file — a truncated file fails.
fn whole_elf(b: &[u8]) -> bool {
    if b.len() < 64 || !b.starts_with(b"\x7fELF") || b[4] != 2 {
        return false;
    }
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes")) as u64;
    let end = u64_at(0x28).saturating_add(u16_at(0x3A).saturating_mul(u16_at(0x3C)));
    end > 0 && end <= b.len() as u64
}

/// The cache file of `src` compiled for `arch` by this NVRTC.
pub fn cache_path(src: &str, arch: &str) -> Result<PathBuf> {
    let (vmaj, vmin) = version()?;
    let opts = options(arch);
    let key =
        xxhash_rust::xxh3::xxh3_64(format!("{vmaj}.{vmin}\0{}\0{src}", opts.join("\0")).as_bytes());
    Ok(cache_dir().join(format!("kernels-{arch}-{key:016x}.cubin")))
}

/// Compiles `src` for `arch`, or takes the cubin from the disk cache.
pub fn compile(src: &str, arch: &str) -> Result<Compiled> {
    let opts = options(arch);
    let path = cache_path(src, arch)?;
    // A cached cubin is used when it is an ELF image (a torn or foreign file is recompiled).
    if let Ok(cubin) = std::fs::read(&path)
        && whole_elf(&cubin)
    {
        return Ok(Compiled {
            arch: arch.into(),
            cubin,
            log: String::new(),
            cached: true,
        });
    }
    let (cubin, log) = compile_uncached(src, arch, &opts)?;
    // Atomic: a temporary file renamed into place; a failed cache write is only a warning.
    if let Some(dir) = path.parent() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let ok = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, &cubin))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = ok {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the cubin");
        }
    }
    Ok(Compiled {
        arch: arch.into(),
        cubin,
        log,
        cached: false,
    })
}

/// Compiles without the cache: the cubin and NVRTC's log.
pub fn compile_uncached(src: &str, arch: &str, opts: &[String]) -> Result<(Vec<u8>, String)> {
    libs::nvrtc()?;
    let csrc = CString::new(src).map_err(|_| Error::Compile {
        arch: arch.into(),
        log: "the source holds a NUL byte".into(),
    })?;
    let name = CString::new("tokenmill_kernels.cu").expect("no NUL");
    let copts: Vec<CString> = opts
        .iter()
        .map(|o| CString::new(o.as_str()).expect("options hold no NUL"))
        .collect();
    let ptrs: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    #[allow(unsafe_code)]
    // SAFETY: `csrc` and `name` are NUL-terminated and outlive the call; no headers are passed.
    let r = unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            csrc.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    check(r, "nvrtcCreateProgram")?;
    struct Prog(sys::nvrtcProgram);
    impl Drop for Prog {
        fn drop(&mut self) {
            #[allow(unsafe_code)]
            // SAFETY: the program was created by nvrtcCreateProgram and is destroyed once.
            unsafe {
                sys::nvrtcDestroyProgram(&mut self.0);
            }
        }
    }
    let prog = Prog(prog);
    #[allow(unsafe_code)]
    // SAFETY: `ptrs` holds `ptrs.len()` valid NUL-terminated strings alive for the call.
    let r = unsafe { sys::nvrtcCompileProgram(prog.0, ptrs.len() as i32, ptrs.as_ptr()) };
    let log = program_log(prog.0);
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Compile {
            arch: arch.into(),
            log: format!("{r:?}\n{log}"),
        });
    }
    let mut size = 0usize;
    #[allow(unsafe_code)]
    // SAFETY: a compiled program and a valid out-pointer.
    let r = unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) };
    check(r, "nvrtcGetCUBINSize")?;
    let mut cubin = vec![0u8; size];
    #[allow(unsafe_code)]
    // SAFETY: `cubin` has the size NVRTC reported.
    let r = unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast()) };
    check(r, "nvrtcGetCUBIN")?;
    Ok((cubin, log))
}

fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    #[allow(unsafe_code)]
    // SAFETY: a created program and a valid out-pointer.
    if unsafe { sys::nvrtcGetProgramLogSize(prog, &mut size) } != sys::nvrtcResult::NVRTC_SUCCESS
        || size <= 1
    {
        return String::new();
    }
    let mut buf = vec![0u8; size];
    #[allow(unsafe_code)]
    // SAFETY: `buf` has the size NVRTC reported, NUL included.
    unsafe {
        sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr().cast());
    }
    CStr::from_bytes_until_nul(&buf)
        .map(|s| s.to_string_lossy().trim().to_string())
        .unwrap_or_default()
}
