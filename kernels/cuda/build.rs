//! Embeds every kernel source of `cu/` (the list is generated, so a new file is compiled and
//! checked without touching the Rust side).

use std::path::PathBuf;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let cu = here.join("cu");
    println!("cargo:rerun-if-changed={}", cu.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cu)
        .expect("kernels/cuda/cu")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();
    let mut out = String::from(
        "/// Every kernel file: (name, source).\npub const FILES: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().expect("file name").to_string_lossy();
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            f.display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("out dir")).join("sources.rs");
    std::fs::write(dest, out).expect("write sources.rs");
}
