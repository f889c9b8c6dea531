//! Shingle sets of the documents to verify, partitioned by candidate group: held in memory up to
//! a budget and spilled to one file per partition beyond it, then read back one partition at a
//! time. Memory is bounded by the budget plus one partition's sets, like [`crate::BucketSpill`].

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One record: the group, the document, its shingle set.
pub type SetRecord = (u64, u64, Vec<u64>);

/// Shingle sets in partitions (a group's partition is its number modulo the partitions).
#[derive(Debug)]
pub struct SetSpill {
    dir: PathBuf,
    parts: Vec<Vec<SetRecord>>,
    files: Vec<Option<BufWriter<File>>>,
    in_memory: usize,
    budget: usize,
    spilled_bytes: u64,
}

impl SetSpill {
    /// `partitions` partitions holding at most `budget_bytes` of sets in memory; spill files go
    /// to `dir` (created).
    pub fn new(dir: &Path, partitions: usize, budget_bytes: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(SetSpill {
            dir: dir.to_path_buf(),
            parts: (0..partitions).map(|_| Vec::new()).collect(),
            files: (0..partitions).map(|_| None).collect(),
            in_memory: 0,
            budget: budget_bytes.max(1),
            spilled_bytes: 0,
        })
    }

    /// The partition of `group`.
    pub fn partition_of(&self, group: u64) -> usize {
        (group % self.parts.len() as u64) as usize
    }

    fn path(&self, p: usize) -> PathBuf {
        self.dir.join(format!("sets-{p:05}.bin"))
    }

    /// Adds the set of `doc` of `group`; spills every partition when the budget is reached.
    pub fn push(&mut self, group: u64, doc: u64, set: Vec<u64>) -> Result<()> {
        self.in_memory += 24 + 8 * set.len();
        let p = self.partition_of(group);
        self.parts[p].push((group, doc, set));
        if self.in_memory >= self.budget {
            self.spill_all()?;
        }
        Ok(())
    }

    /// Writes every set held in memory to the partition files.
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
            for (group, doc, set) in self.parts[p].drain(..) {
                let head = [group, doc, set.len() as u64];
                for v in head.iter().chain(&set) {
                    w.write_all(&v.to_le_bytes())
                        .map_err(|e| Error::io(&path, e))?;
                }
                self.spilled_bytes += 8 * (3 + set.len() as u64);
            }
        }
        self.in_memory = 0;
        Ok(())
    }

    /// Bytes written to disk so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    /// Takes partition `p` (from memory and its file, which is removed), sorted by group and
    /// document.
    pub fn take_partition(&mut self, p: usize) -> Result<Vec<SetRecord>> {
        let mut recs = std::mem::take(&mut self.parts[p]);
        if let Some(mut w) = self.files[p].take() {
            let path = self.path(p);
            w.flush().map_err(|e| Error::io(&path, e))?;
            drop(w);
            let mut r = BufReader::new(File::open(&path).map_err(|e| Error::io(&path, e))?);
            loop {
                let group = match read_u64(&mut r) {
                    Ok(g) => g,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(Error::io(&path, e)),
                };
                let mut record = || -> std::io::Result<SetRecord> {
                    let doc = read_u64(&mut r)?;
                    let n = read_u64(&mut r)?;
                    let mut set = Vec::with_capacity(n.min(1 << 20) as usize);
                    for _ in 0..n {
                        set.push(read_u64(&mut r)?);
                    }
                    Ok((group, doc, set))
                };
                recs.push(record().map_err(|e| Error::io(&path, e))?);
            }
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        recs.sort_unstable_by_key(|r| (r.0, r.1));
        Ok(recs)
    }
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_come_back_by_partition_sorted_whether_spilled_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SetSpill::new(dir.path(), 3, 100).unwrap();
        for (g, d) in [(4u64, 9u64), (1, 2), (4, 5), (7, 1), (2, 3)] {
            s.push(g, d, (0..d).collect()).unwrap();
        }
        assert!(s.spilled_bytes() > 0, "a 100-byte budget spills");
        let p1 = s.take_partition(1).unwrap();
        let keys: Vec<_> = p1.iter().map(|r| (r.0, r.1, r.2.len())).collect();
        assert_eq!(keys, vec![(1, 2, 2), (4, 5, 5), (4, 9, 9), (7, 1, 1)]);
        assert_eq!(s.take_partition(2).unwrap()[0].2, vec![0, 1, 2]);
        assert!(s.take_partition(0).unwrap().is_empty());
    }
}
