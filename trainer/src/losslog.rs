//! The per-document loss table of a run: one row per document span per training step, in
//! zstd-compressed Parquet files `RUN/losses/seq-FIRST-LAST.parquet`, each covering the log's
//! training lines `FIRST..=LAST` (`seq` counts the training lines of `log.jsonl`, superseded
//! ones included, so a rollback appends and never rewrites).
//!
//! `log.jsonl` keeps a step's scalars; this table keeps what grows with the batch — at
//! DeepSeek-V3's 15,360 samples per step, tens of thousands of spans. Measured on the
//! quickstart run (1000 steps, 10,873 spans): 25.9 bytes per span with the files' metadata,
//! against 63.5 for the same values as JSON arrays in the log. `tokenmill trace --step` reads
//! the one file holding the step; `--doc` filters the table by (shard, document) without
//! replaying a batch; `tokenmill sql RUN` queries it as the table `losses`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, Float32Array, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef, UInt32Type, UInt64Type};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// One document span of one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossRow {
    /// Ordinal of the step's line among the log's training lines.
    pub seq: u64,
    /// The step.
    pub step: u64,
    /// Sample in the batch.
    pub sample: u32,
    /// Span in the sample.
    pub span: u32,
    /// The document's shard (ordinal in the manifest).
    pub shard: u32,
    /// The document's index in its shard.
    pub doc: u64,
    /// First token of the span in the document.
    pub doc_offset: u64,
    /// Tokens of the span in the sample.
    pub tokens: u32,
    /// Targets counted in the loss.
    pub targets: u32,
    /// Mean loss of those targets (NaN without one).
    pub loss: f32,
    /// Where the token losses peak: the target's token position in the document.
    pub peak_token: Option<u64>,
    /// The loss at that peak.
    pub peak_loss: Option<f32>,
    /// Mean loss of the whole sample.
    pub sample_loss: f32,
}

/// The table's Arrow schema.
pub fn schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let u64f = |n: &str, null| Field::new(n, DataType::UInt64, null);
        let u32f = |n: &str| Field::new(n, DataType::UInt32, false);
        Arc::new(Schema::new(vec![
            u64f("seq", false),
            u64f("step", false),
            u32f("sample"),
            u32f("span"),
            u32f("shard"),
            u64f("doc", false),
            u64f("doc_offset", false),
            u32f("tokens"),
            u32f("targets"),
            Field::new("loss", DataType::Float32, false),
            u64f("peak_token", true),
            Field::new("peak_loss", DataType::Float32, true),
            Field::new("sample_loss", DataType::Float32, false),
        ]))
    })
    .clone()
}

fn to_batch(rows: &[LossRow]) -> RecordBatch {
    let u64c = |f: &dyn Fn(&LossRow) -> u64| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<UInt64Array>())
    };
    let u32c = |f: &dyn Fn(&LossRow) -> u32| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<UInt32Array>())
    };
    let cols: Vec<ArrayRef> = vec![
        u64c(&|r| r.seq),
        u64c(&|r| r.step),
        u32c(&|r| r.sample),
        u32c(&|r| r.span),
        u32c(&|r| r.shard),
        u64c(&|r| r.doc),
        u64c(&|r| r.doc_offset),
        u32c(&|r| r.tokens),
        u32c(&|r| r.targets),
        Arc::new(rows.iter().map(|r| r.loss).collect::<Float32Array>()),
        Arc::new(rows.iter().map(|r| r.peak_token).collect::<UInt64Array>()),
        Arc::new(rows.iter().map(|r| r.peak_loss).collect::<Float32Array>()),
        Arc::new(rows.iter().map(|r| r.sample_loss).collect::<Float32Array>()),
    ];
    RecordBatch::try_new(schema(), cols).expect("columns match the schema")
}

fn pq_err(path: &Path, e: impl Into<ParquetError>) -> Error {
    Error::LossTable {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Writes `rows` to `path` atomically (temp file, fsync, rename).
fn write(path: &Path, rows: &[LossRow]) -> Result<()> {
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_created_by("tokenmill".into())
        .build();
    let mut w = ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| pq_err(&tmp, e))?;
    for chunk in rows.chunks(64 * 1024) {
        w.write(&to_batch(chunk)).map_err(|e| pq_err(&tmp, e))?;
    }
    let file = w.into_inner().map_err(|e| pq_err(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a loss file, checking its schema.
pub fn read(path: &Path) -> Result<Vec<LossRow>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| pq_err(path, e))?
        .build()
        .map_err(|e| pq_err(path, e))?;
    let want = schema();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| pq_err(path, e))?;
        for f in want.fields() {
            let ok = batch
                .schema()
                .field_with_name(f.name())
                .is_ok_and(|g| g.data_type() == f.data_type());
            if !ok {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "loss table: column `{}` missing or not {}",
                        f.name(),
                        f.data_type()
                    ),
                ));
            }
        }
        let col = |n: &str| batch.column_by_name(n).expect("checked");
        let u64c = |n: &str| col(n).as_primitive::<UInt64Type>().clone();
        let u32c = |n: &str| col(n).as_primitive::<UInt32Type>().clone();
        let f32c = |n: &str| col(n).as_primitive::<Float32Type>().clone();
        let (seq, step, doc, off, pt) = (
            u64c("seq"),
            u64c("step"),
            u64c("doc"),
            u64c("doc_offset"),
            u64c("peak_token"),
        );
        let (sample, span, shard, tokens, targets) = (
            u32c("sample"),
            u32c("span"),
            u32c("shard"),
            u32c("tokens"),
            u32c("targets"),
        );
        let (loss, pl, sl) = (f32c("loss"), f32c("peak_loss"), f32c("sample_loss"));
        for i in 0..batch.num_rows() {
            rows.push(LossRow {
                seq: seq.value(i),
                step: step.value(i),
                sample: sample.value(i),
                span: span.value(i),
                shard: shard.value(i),
                doc: doc.value(i),
                doc_offset: off.value(i),
                tokens: tokens.value(i),
                targets: targets.value(i),
                loss: loss.value(i),
                peak_token: pt.is_valid(i).then(|| pt.value(i)),
                peak_loss: pl.is_valid(i).then(|| pl.value(i)),
                sample_loss: sl.value(i),
            });
        }
    }
    Ok(rows)
}

/// The loss files of a run directory: (first seq, last seq, path), in order.
pub fn files(run: &Path) -> Result<Vec<(u64, u64, PathBuf)>> {
    let dir = run.join("losses");
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    for e in rd {
        let p = e.map_err(|e| Error::io(&dir, e))?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(range) = name
            .strip_prefix("seq-")
            .and_then(|n| n.strip_suffix(".parquet"))
        else {
            continue;
        };
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
            out.push((a, b, p));
        }
    }
    out.sort();
    Ok(out)
}

/// The rows of training line `seq` of the run (empty when it logged none).
pub fn rows_of(run: &Path, seq: u64) -> Result<Vec<LossRow>> {
    let files = files(run)?;
    let Some((_, _, path)) = files.iter().find(|(a, b, _)| (*a..=*b).contains(&seq)) else {
        let have = match (files.first(), files.last()) {
            (Some(a), Some(b)) => format!("lines {}..={}", a.0, b.1),
            _ => "no loss file".into(),
        };
        return Err(Error::Data(format!(
            "{}: no per-document losses for training line {seq} (it holds {have})",
            run.join("losses").display()
        )));
    };
    let mut rows = read(path)?;
    rows.retain(|r| r.seq == seq);
    Ok(rows)
}

/// Buffers rows and writes them a file at a time.
#[derive(Debug)]
pub struct LossWriter {
    run: PathBuf,
    buf: Vec<LossRow>,
    first: Option<u64>,
    last: u64,
    /// Training lines per file.
    pub every: u64,
}

impl LossWriter {
    /// A writer for `run`, continuing after training line `next_seq − 1`: files of lines at or
    /// beyond it (from an interrupted run) are cut back, so a resume never duplicates rows.
    pub fn open(run: &Path, next_seq: u64, every: u64) -> Result<Self> {
        let dir = run.join("losses");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        for (a, b, p) in files(run)? {
            if a >= next_seq {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            } else if b >= next_seq {
                let mut rows = read(&p)?;
                rows.retain(|r| r.seq < next_seq);
                let last = rows.iter().map(|r| r.seq).max().unwrap_or(a);
                write(&dir.join(name(a, last)), &rows)?;
                if name(a, last) != name(a, b) {
                    std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                }
            }
        }
        Ok(LossWriter {
            run: run.to_path_buf(),
            buf: Vec::new(),
            first: None,
            last: 0,
            every: every.max(1),
        })
    }

    /// Adds the rows of training line `seq`; writes a file every `every` lines.
    pub fn push(&mut self, seq: u64, rows: impl IntoIterator<Item = LossRow>) -> Result<()> {
        self.first.get_or_insert(seq);
        self.last = seq;
        self.buf.extend(rows);
        if seq + 1 - self.first.expect("set") >= self.every {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered lines (if any) to their file.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(first) = self.first.take() {
            let path = self.run.join("losses").join(name(first, self.last));
            write(&path, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

fn name(first: u64, last: u64) -> String {
    format!("seq-{first:010}-{last:010}.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, span: u32) -> LossRow {
        LossRow {
            seq,
            step: seq,
            sample: 0,
            span,
            shard: 1,
            doc: seq * 10 + span as u64,
            doc_offset: 3,
            tokens: 64,
            targets: if span == 0 { 0 } else { 63 },
            loss: if span == 0 { f32::NAN } else { 2.5 },
            peak_token: (span != 0).then_some(40),
            peak_loss: (span != 0).then_some(9.0),
            sample_loss: 2.5,
        }
    }

    #[test]
    fn rows_round_trip_and_a_resume_cuts_the_table_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LossWriter::open(dir.path(), 0, 4).unwrap();
        for seq in 0..10 {
            w.push(seq, [row(seq, 0), row(seq, 1)]).unwrap();
        }
        w.flush().unwrap();
        let f = files(dir.path()).unwrap();
        assert_eq!(
            f.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
            vec![(0, 3), (4, 7), (8, 9)]
        );
        let got = rows_of(dir.path(), 5).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].loss.is_nan() && got[0].peak_token.is_none());
        assert_eq!(got[1], row(5, 1));
        // A resume at line 6: lines 6.. go, the file holding 4..=7 is cut to 4..=5.
        let mut w = LossWriter::open(dir.path(), 6, 4).unwrap();
        let f = files(dir.path()).unwrap();
        assert_eq!(
            f.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
            vec![(0, 3), (4, 5)]
        );
        w.push(6, [row(6, 1)]).unwrap();
        w.flush().unwrap();
        assert_eq!(rows_of(dir.path(), 6).unwrap(), vec![row(6, 1)]);
        let e = rows_of(dir.path(), 99).unwrap_err().to_string();
        assert!(e.contains("line 99") && e.contains("0..=6"), "{e}");
    }
}
