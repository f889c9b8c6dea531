//! The campaign binary: `cargo afl fuzz -i SEEDS -o OUT -- tokenmill-fuzz-afl TARGET`
//! (see `fuzz/run.sh`). Built with `cargo afl build --features afl`, which instruments every
//! crate for AFL++'s coverage feedback on the stable toolchain.

fn main() {
    let name = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TOKENMILL_FUZZ_TARGET").ok())
        .unwrap_or_default();
    let Some(target) = tokenmill_fuzz::target(&name) else {
        let names: Vec<&str> = tokenmill_fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!(
            "usage: tokenmill-fuzz-afl TARGET, one of {}",
            names.join(", ")
        );
        std::process::exit(2);
    };
    // Without afl's abort-on-panic hook: a panic that tokenmill catches and reports (the
    // Parquet decoder's, see tokenmill_ingest::guard) is an answer; one that escapes the
    // target is still a crash (afl aborts when the closure unwinds).
    afl::fuzz_nohook!(|data: &[u8]| {
        (target.run)(data);
    });
}
