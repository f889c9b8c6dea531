//! Bucket records `(key_hi, key_lo, doc)` partitioned by key, held in memory up to a budget and
//! spilled to one file per partition beyond it; read back one partition at a time, sorted.
//! Memory is bounded by the budget plus one partition, whatever the corpus size.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One record: 24 bytes.
pub type Record = [u64; 3];

/// Bucket records in partitions, in memory up to a budget and in spill files beyond it.
#[derive(Debug)]
pub struct BucketSpill {
    dir: PathBuf,
    parts: Vec<Vec<Record>>,
    files: Vec<Option<BufWriter<File>>>,
    in_memory: usize,
    budget_records: usize,
    spilled_bytes: u64,
    /// Bytes written to each partition's file.
    part_bytes: Vec<u64>,
}

impl BucketSpill {
    /// Partitions `partitions`; spill files go to `dir` (created).
    pub fn new(dir: &Path, partitions: usize, budget_bytes: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(BucketSpill {
            dir: dir.to_path_buf(),
            parts: vec![Vec::new(); partitions],
            files: (0..partitions).map(|_| None).collect(),
            in_memory: 0,
            budget_records: (budget_bytes / 24).max(1),
            spilled_bytes: 0,
            part_bytes: vec![0; partitions],
        })
    }

    fn path(&self, p: usize) -> PathBuf {
        self.dir.join(format!("part-{p:05}.bin"))
    }

    /// Adds a record to the partition of its key; spills every partition when the budget is
    /// reached.
    pub fn push(&mut self, r: Record) -> Result<()> {
        let p =
            (xxhash_rust::xxh3::xxh3_64(&r[1].to_le_bytes()) % self.parts.len() as u64) as usize;
        self.parts[p].push(r);
        self.in_memory += 1;
        if self.in_memory >= self.budget_records {
            self.spill_all()?;
        }
        Ok(())
    }

    /// Writes every record held in memory to the partition files.
    pub fn spill_all(&mut self) -> Result<()> {
        for p in 0..self.parts.len() {
            if self.parts[p].is_empty() {
                continue;
            }
            let path = self.path(p);
            if self.files[p].is_none() {
                let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
                self.files[p] = Some(BufWriter::with_capacity(1 << 16, f));
            }
            let w = self.files[p].as_mut().expect("opened");
            for r in self.parts[p].drain(..) {
                for v in r {
                    w.write_all(&v.to_le_bytes())
                        .map_err(|e| Error::io(&path, e))?;
                }
                self.spilled_bytes += 24;
                self.part_bytes[p] += 24;
            }
        }
        self.in_memory = 0;
        Ok(())
    }

    /// Spills every record and flushes the partition files: the records are all on disk, in
    /// `dir/part-NNNNN.bin` ([`read_partition_file`] reads one back).
    pub fn seal(&mut self) -> Result<()> {
        self.spill_all()?;
        for (p, w) in self.files.iter_mut().enumerate() {
            if let Some(w) = w {
                let path = self.dir.join(format!("part-{p:05}.bin"));
                w.flush().map_err(|e| Error::io(&path, e))?;
                w.get_ref().sync_all().map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Bytes written to each partition's file so far.
    pub fn partition_bytes(&self) -> &[u64] {
        &self.part_bytes
    }

    /// Bytes written to disk so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    /// Calls `f` with each partition's records, sorted, one partition in memory at a time.
    pub fn for_each_partition(self, f: impl FnMut(&[Record]) -> Result<()>) -> Result<u64> {
        Self::merge_partitions(vec![self], f)
    }

    /// Like [`BucketSpill::for_each_partition`] over several spills with the same partitioning
    /// (one per input task): partition `p` of all of them together. Returns the bytes spilled.
    pub fn merge_partitions(
        mut spills: Vec<BucketSpill>,
        mut f: impl FnMut(&[Record]) -> Result<()>,
    ) -> Result<u64> {
        let partitions = spills.first().map_or(0, |s| s.parts.len());
        assert!(
            spills.iter().all(|s| s.parts.len() == partitions),
            "spills partitioned alike"
        );
        let mut spilled = 0;
        for s in &mut spills {
            for w in s.files.iter_mut().flatten() {
                w.flush().map_err(|e| Error::io(&s.dir, e))?;
            }
            spilled += s.spilled_bytes;
        }
        for p in 0..partitions {
            let mut recs = Vec::new();
            for s in &mut spills {
                recs.append(&mut s.parts[p]);
                if s.files[p].take().is_some() {
                    let path = s.path(p);
                    read_partition_file(&path, &mut recs)?;
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
            recs.sort_unstable();
            f(&recs)?;
        }
        Ok(spilled)
    }
}

/// Appends the records of a partition file written by a [`BucketSpill`] to `out` (a file that
/// does not exist holds none; a partial record at the end is an error).
pub fn read_partition_file(path: &Path, out: &mut Vec<Record>) -> Result<()> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len % 24 != 0 {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{len} bytes: not whole 24-byte bucket records (cut short?)"),
            ),
        ));
    }
    out.reserve((len / 24) as usize);
    let mut r = BufReader::new(f);
    let mut b = [0u8; 24];
    for _ in 0..len / 24 {
        r.read_exact(&mut b).map_err(|e| Error::io(path, e))?;
        out.push([
            u64::from_le_bytes(b[0..8].try_into().expect("8")),
            u64::from_le_bytes(b[8..16].try_into().expect("8")),
            u64::from_le_bytes(b[16..24].try_into().expect("8")),
        ]);
    }
    Ok(())
}
