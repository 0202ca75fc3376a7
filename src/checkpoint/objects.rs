//! The content-addressed object store under `checkpoints/objects/` (`<2 hex>/<62 hex>`, SHA-256
//! of the content): checkpoints' workspace snapshots and task snapshots store into it, from
//! different threads; each content is stored once.

use super::error::{Result, Step};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Hex SHA-256 of `bytes`: an object's name.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The content-addressed store under `checkpoints/objects/`.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    root: PathBuf,
}

impl ObjectStore {
    /// Open (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<ObjectStore> {
        std::fs::create_dir_all(root).step(|| format!("create {}", root.display()))?;
        Ok(ObjectStore {
            root: root.to_path_buf(),
        })
    }

    /// Where object `hash` lives (`ab/cdef…`).
    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.root.join(&hash[..2]).join(&hash[2..])
    }

    /// True when object `hash` is stored.
    pub fn contains(&self, hash: &str) -> bool {
        self.path_of(hash).is_file()
    }

    /// Store `bytes` under `hash` unless present; returns the bytes written, None if present.
    pub fn put(&self, hash: &str, bytes: &[u8]) -> Result<Option<u64>> {
        let path = self.path_of(hash);
        if path.is_file() {
            return Ok(None);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // A temp name of its own per write: checkpoints and task snapshots store into the same
        // store from different threads, possibly the same object at once.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, bytes).step(|| format!("write object {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).step(|| format!("rename object {}", tmp.display()))?;
        Ok(Some(bytes.len() as u64))
    }

    /// Every object file: (hash, path, bytes); also leftovers of interrupted writes (`*.tmp*`).
    pub fn list(&self) -> Result<Vec<(String, PathBuf, u64)>> {
        let mut out = Vec::new();
        for prefix in std::fs::read_dir(&self.root)? {
            let prefix = prefix?;
            if !prefix.file_type()?.is_dir() {
                continue;
            }
            let head = prefix.file_name().to_string_lossy().into_owned();
            for object in std::fs::read_dir(prefix.path())? {
                let object = object?;
                let name = format!("{head}{}", object.file_name().to_string_lossy());
                // A temp file renamed away by a concurrent write is no longer there.
                let bytes = match object.metadata() {
                    Ok(meta) => meta.len(),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err.into()),
                };
                out.push((name, object.path(), bytes));
            }
        }
        Ok(out)
    }

    /// Bytes of all objects.
    pub fn size(&self) -> Result<u64> {
        Ok(self.list()?.iter().map(|(_, _, bytes)| bytes).sum())
    }

    /// The bytes of object `hash`. Errors: missing or unreadable.
    pub fn get(&self, hash: &str) -> Result<Vec<u8>> {
        let path = self.path_of(hash);
        std::fs::read(&path).step(|| format!("object {hash} missing ({})", path.display()))
    }

    /// True when the object exists and its content hashes to its name.
    pub fn verify(&self, hash: &str) -> std::result::Result<(), String> {
        match std::fs::read(self.path_of(hash)) {
            Err(_) => Err(format!("object {hash} is missing")),
            Ok(bytes) if sha256_hex(&bytes) != hash => Err(format!("object {hash} is corrupt")),
            Ok(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_of_one_object_never_fail_each_other() {
        // Checkpoints and task snapshots store into one store from different threads.
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for round in 0..200u32 {
                        let bytes = format!("object {}", round % 20);
                        store
                            .put(&sha256_hex(bytes.as_bytes()), bytes.as_bytes())
                            .unwrap();
                        store.list().unwrap();
                    }
                });
            }
        });
        let objects = store.list().unwrap();
        assert_eq!(objects.len(), 20, "{objects:?}");
    }
}
