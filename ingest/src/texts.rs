//! Whole texts of input files, in memory: for training a tokenizer on a corpus or timing the
//! tokenizer on it (not for builds, which stream).

use std::path::PathBuf;

use arrow::array::AsArray;

use crate::error::Result;
use crate::reader::{DocumentReader, ReadConfig};

/// The `text` of every document of `inputs`, in order (documents without text are left out).
pub fn read_texts(inputs: &[PathBuf], opts: &ReadConfig) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for p in inputs {
        for b in &mut DocumentReader::open(p, opts)? {
            let b = b?;
            let col = b
                .column_by_name("text")
                .expect("document schema has text")
                .as_string::<i32>();
            texts.extend(col.iter().flatten().map(str::to_string));
        }
    }
    Ok(texts)
}
