//! One writer per output directory: a lock file created exclusively, naming its holder (host
//! and process id). A second writer refuses with that name; a lock whose holder is gone (a
//! crash: the process no longer exists on this host) is taken over, with a warning.

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
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(me.as_bytes())
                        .map_err(|e| Error::io(&path, e))?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
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
    }
}
