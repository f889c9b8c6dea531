//! Messages to stderr from places that must not allocate: the guarded heap (`guard.rs`) and
//! the fault handler (`fault.rs`).

/// `n` in base `radix` (10 or 16) into the end of `buf`; the digits' slice.
pub(crate) fn digits(mut n: usize, radix: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n % radix];
        n /= radix;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Writes the parts to stderr, unbuffered (each part one `write`, async-signal-safe).
pub(crate) fn say(parts: &[&[u8]]) {
    for part in parts {
        // SAFETY: writes `part`'s bytes, alive for the call, to the standard error descriptor.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}
