//! `tokenmill-fuzz seeds OUT`: writes every target's seed corpus, built from the real files of
//! `../shared/data` (`TOKENMILL_TEST_DATA` overrides), under `OUT/<target>/`.
//! `tokenmill-fuzz run TARGET FILE...`: runs a target on files (a crash AFL found, replayed
//! with a backtrace). `tokenmill-fuzz list`: the targets.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for t in tokenmill_fuzz::TARGETS {
                println!("{:<11} {}", t.name, t.what);
            }
        }
        Some("seeds") if args.len() == 2 => {
            let seeds = tokenmill_fuzz::seeds::build(&tokenmill_tests::data_dir());
            let out = PathBuf::from(&args[1]);
            if let Err(e) = tokenmill_fuzz::seeds::write(&seeds, &out) {
                eprintln!("{}: {e}", out.display());
                return ExitCode::FAILURE;
            }
            for (t, list) in &seeds {
                println!("{t:<11} {} seeds", list.len());
            }
        }
        Some("run") if args.len() >= 3 => {
            let Some(target) = tokenmill_fuzz::target(&args[1]) else {
                eprintln!("no fuzz target `{}` (tokenmill-fuzz list)", args[1]);
                return ExitCode::FAILURE;
            };
            for f in &args[2..] {
                if let Err(e) = tokenmill_fuzz::run_file(target, f.as_ref()) {
                    eprintln!("{f}: {e}");
                    return ExitCode::FAILURE;
                }
                println!("{f}: ok");
            }
        }
        _ => {
            eprintln!("usage: tokenmill-fuzz list | seeds OUT | run TARGET FILE...");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
