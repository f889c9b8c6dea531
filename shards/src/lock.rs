//! One writer per output directory: a lock file created exclusively, naming its holder (host
//! and process id). A second writer refuses with that name; a lock whose holder is gone (a
//! crash: the process no longer exists on this host) is taken over, with a warning.
//!
//! The lock appears with its holder line already in it: the line is written to a file of this
//! process's own and hard-linked to the lock's name (a link, like an exclusive create, fails
//! when the name exists). A writer killed between creating the lock and writing its line
//! would otherwise leave an empty lock that names nobody and refuses every later run.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock's file name inside the directory it guards.
pub const LOCK_FILE: &str = ".tokenmill.lock";

/// A held lock; dropping it removes the file.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
}

/// This machine's name, for the lock's holder line.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Whether process `pid` exists on this machine.
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

impl DirLock {
    /// Takes the lock of `dir` (created if missing) for `what` (`build`, `train`), or says who
    /// holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let me = format!("{what} pid {} on {}\n", std::process::id(), host());
        for _ in 0..2 {
            match create_with(&path, &me) {
                Ok(()) => return Ok(DirLock { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    if holder.trim().is_empty() && stale(&path) {
                        // Left empty by a writer killed mid-way (the exclusive create of older
                        // versions): nobody is writing it after this long.
                        tracing::warn!(lock = %path.display(), "taking over an empty lock left by an interrupted writer");
                        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                        continue;
                    }
                    let mut words = holder.split_whitespace();
                    // `<what> pid <pid> on <host>`
                    let (pid, on) = (words.nth(2), words.nth(1));
                    let pid: Option<u32> = pid.and_then(|p| p.parse().ok());
                    let here = on.is_some_and(|h| h == host());
                    if let (Some(p), true) = (pid, here)
                        && !alive(p)
                    {
                        tracing::warn!(lock = %path.display(), holder = holder.trim(), "taking over the lock of a process that no longer exists");
                        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                        continue;
                    }
                    return Err(Error::Locked {
                        path,
                        holder: if holder.trim().is_empty() {
                            "another process (the lock is being written)".into()
                        } else {
                            holder.trim().to_string()
                        },
                    });
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Locked {
            path,
            holder: "another process that took it over at the same time".into(),
        })
    }
}

/// An empty lock older than this was left by an interrupted writer (one writes its line within
/// microseconds of creating it).
const EMPTY_LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(5);

fn stale(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > EMPTY_LOCK_STALE)
}

/// Creates `path` holding `line`, or fails with `AlreadyExists`: the line goes to a file named
/// for this process, which is hard-linked to `path` and then removed. Where the file system
/// has no hard links, an exclusive create followed by the write.
fn create_with(path: &Path, line: &str) -> std::io::Result<()> {
    let own = path.with_extension(format!("lock.{}", std::process::id()));
    std::fs::write(&own, line)?;
    let linked = std::fs::hard_link(&own, path);
    let _ = std::fs::remove_file(&own);
    match linked {
        // No hard links here (EOPNOTSUPP; EPERM on FAT and some network file systems).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            f.write_all(line.as_bytes())
        }
        r => r,
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_and_a_dead_holder_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(d.path(), "build").unwrap();
        let e = DirLock::acquire(d.path(), "build").unwrap_err().to_string();
        assert!(
            e.contains(&format!("build pid {} on", std::process::id())) && e.contains("is writing"),
            "{e}"
        );
        drop(a);
        assert!(!d.path().join(LOCK_FILE).exists());
        // A lock left by a process that is gone (pid far above any pid_max) is taken over.
        std::fs::write(
            d.path().join(LOCK_FILE),
            format!("build pid 4000000000 on {}\n", host()),
        )
        .unwrap();
        let b = DirLock::acquire(d.path(), "train").unwrap();
        let held = std::fs::read_to_string(d.path().join(LOCK_FILE)).unwrap();
        assert!(held.starts_with("train pid "), "{held}");
        drop(b);
        // A holder on another host cannot be checked: refused.
        std::fs::write(d.path().join(LOCK_FILE), "build pid 1 on some-other-host\n").unwrap();
        let e = DirLock::acquire(d.path(), "build").unwrap_err().to_string();
        assert!(e.contains("pid 1 on some-other-host"), "{e}");
        // Only the lock is left behind by a holder: no file of its own beside it.
        std::fs::remove_file(d.path().join(LOCK_FILE)).unwrap();
        let c = DirLock::acquire(d.path(), "build").unwrap();
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [LOCK_FILE]);
        drop(c);
    }

    #[test]
    fn an_empty_lock_is_refused_while_fresh_and_taken_over_once_stale() {
        let d = tempfile::tempdir().unwrap();
        let lock = d.path().join(LOCK_FILE);
        // A writer that created the lock a moment ago and has not written its line yet.
        std::fs::write(&lock, "").unwrap();
        let e = DirLock::acquire(d.path(), "train").unwrap_err().to_string();
        assert!(e.contains("the lock is being written"), "{e}");
        // The same empty lock left by a writer killed a minute ago.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let l = DirLock::acquire(d.path(), "train").unwrap();
        assert!(
            std::fs::read_to_string(&lock)
                .unwrap()
                .starts_with("train pid ")
        );
        drop(l);
    }
}
