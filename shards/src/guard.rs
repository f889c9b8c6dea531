//! Third-party decoders on outside bytes: the Parquet reader (provenance tables) and Hugging
//! Face's `tokenizer.json` loader panic on some malformed files (found by fuzzing: negative
//! column offsets, bit widths over 64; an `unwrap` in the decoder section's deserializer).
//! Such a panic is caught and becomes an error naming the file.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`, turning a panic into `Err(its message)`.
pub fn decoding<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}
