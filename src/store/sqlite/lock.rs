//! One writer per store: the process that detects changes and delivers them holds an
//! exclusive OS lock on a file beside the database for its whole life.
//!
//! The lock is `flock(2)` through `std::fs::File::try_lock`: the kernel releases it when
//! the process dies, `kill -9` included, so a crash never leaves a stale lock behind. The
//! file also holds the holder's pid, so a refused second writer can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file of the store at `db`: `state.db` → `state.db.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Why the store could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another ncp-watchd{} is already running on the state store {store}; stop it first, or give this one its own [state]",
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Held {
        /// The store: the database file, or the PostgreSQL server.
        store: String,
        /// Who holds it, when known: `pid 123`, or `pid 123 on host-a` on PostgreSQL.
        holder: Option<String>,
    },
    /// The lock file could not be opened.
    #[error("cannot open the lock file {}: {source}; check [state] path and its directory's permissions", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The exclusive lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    /// Held open for the lock's life: closing it releases the lock.
    _file: File,
}

impl StoreLock {
    /// Takes the lock of the store at `db` without waiting, and writes this pid into it.
    pub fn acquire(db: &Path) -> Result<Self, LockError> {
        let path = lock_path(db);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    store: db.display().to_string(),
                    holder: read_pid(&mut file).map(|pid| format!("pid {pid}")),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { _file: file })
    }

    /// Whether some process holds the lock of the store at `db` now (without taking it),
    /// and its pid when known.
    pub fn holder(db: &Path) -> Option<Option<u32>> {
        Self::acquire_probe(db).err()
    }

    fn acquire_probe(db: &Path) -> Result<(), Option<u32>> {
        let Ok(mut file) = File::open(lock_path(db)) else {
            return Ok(());
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                Ok(())
            }
            Err(_) => Err(read_pid(&mut file)),
        }
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_naming_the_first_and_the_lock_goes_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let first = StoreLock::acquire(&db).unwrap();
        assert_eq!(StoreLock::holder(&db), Some(Some(std::process::id())));
        let err = StoreLock::acquire(&db).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("state.db"), "{text}");
        drop(first);
        assert_eq!(StoreLock::holder(&db), None);
        let _again = StoreLock::acquire(&db).unwrap();
    }
}
