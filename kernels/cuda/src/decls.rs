// The kernels a CUDA source defines. Shared by the crate (`source::kernel_names`, as the module
// `decls`) and the emulation's build script (kernels/cuda/emu/build.rs `include!`s this file to
// declare each kernel with its parameter list), so both read the sources the same way.

/// Each `KERNEL void [__launch_bounds__(..)] name(params)` at the start of a line of `src`, in
/// order: its name and its parameter list with `//` comments removed.
pub fn kernel_decls(src: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in src.match_indices("KERNEL void") {
        if i > 0 && src.as_bytes()[i - 1] != b'\n' {
            continue;
        }
        let mut rest = src[i + "KERNEL void".len()..].trim_start();
        if let Some(r) = rest.strip_prefix("__launch_bounds__") {
            rest = r.split_once(')').map_or("", |(_, r)| r).trim_start();
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let Some(open) = rest.find('(') else { continue };
        let Some(close) = rest[open..].find(')') else {
            continue;
        };
        let params: String = rest[open + 1..open + close]
            .lines()
            .map(|l| l.split("//").next().unwrap_or("").trim())
            .collect::<Vec<_>>()
            .join(" ");
        if !name.is_empty() {
            out.push((name, params));
        }
    }
    out
}
