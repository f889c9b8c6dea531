//! Third-party decoders run on hostile bytes. The Parquet reader and the Arrow IPC schema
//! decoder under it panic on some malformed files (found by fuzzing: negative column offsets,
//! bit widths over 64, a zero divisor, unknown IPC types); such a panic is caught here and
//! becomes an error naming the file, so one bad input cannot bring a whole build down.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`, turning a panic into `Err(its message)`.
pub fn decoding<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(decoding(|| 7), Ok(7));
        let r: Result<(), String> = decoding(|| panic!("bad bit width {}", 65));
        assert_eq!(r, Err("bad bit width 65".to_string()));
    }
}
