//! File checksums (xxh3-64) and tokenizer identity hashes (sha256).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};

/// xxh3-64 of a whole file, streamed in 1 MiB blocks.
pub fn xxh3_file(path: &Path) -> Result<u64> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(h.digest());
        }
        h.update(&buf[..n]);
    }
}

/// Lower-case hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}
