//! The `tokenmill` command line as a library: one module per command in [`commands`] (each its
//! clap `Args` and a `run`), the benchmarks in [`bench`], and where the Python peers that
//! benchmarks and tests run side by side are found ([`peers`]). The binary (`main.rs`) only
//! parses and dispatches; the work is done by the `tokenmill-pipelines` library and the stage
//! crates below it.

#![deny(unsafe_code)]

pub mod alloc;
pub mod bench;
pub mod commands;
pub mod peers;

/// An error and its causes on one line, each cause added unless the message already says it
/// (errors that name a file often print their source too).
pub fn error_message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg
}
