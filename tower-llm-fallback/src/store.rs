//! Saving and restoring health across restarts, so benched targets stay benched.
//!
//! [`HealthStore`] is the pluggable interface; [`JsonFileStore`] keeps the snapshot in a JSON file
//! and replaces it atomically with [`write_atomic`] (a uniquely named temporary file in the same
//! directory, flushed to disk, renamed over the old one, then the directory flushed), so neither
//! a crash nor two concurrent saves ever leave half a file. Times are stored as wall
//! clock (ms since the Unix epoch) and mapped back onto the tokio clock on restore.
//!
//! ```
//! use tower_llm_fallback::{FallbackLayer, JsonFileStore, TargetConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let path = std::env::temp_dir().join(format!("tower-llm-health-doc-{}.json", std::process::id()));
//! let store = JsonFileStore::new(&path);
//! let build = || {
//!     FallbackLayer::builder()
//!         .target(TargetConfig::new("openai", "gpt-4o-mini"))
//!         .build()
//!         .unwrap()
//! };
//! let before = build();
//! before.handle().save(&store).unwrap();
//!
//! let after = build(); // e.g. after a restart
//! let restored = after.handle().restore(&store).unwrap();
//! assert_eq!(restored, 1); // one target found in the file
//! # std::fs::remove_file(path).unwrap();
//! # }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tower_llm_core::BoxError;

use crate::health::HealthSnapshot;

/// Where health snapshots are saved.
pub trait HealthStore: Send + Sync {
    /// Persist `snapshot`, replacing the previous one.
    fn save(&self, snapshot: &HealthSnapshot) -> Result<(), BoxError>;

    /// The last saved snapshot, or `None` when nothing was saved yet.
    fn load(&self) -> Result<Option<HealthSnapshot>, BoxError>;
}

/// A [`HealthStore`] in one JSON file, replaced atomically.
#[derive(Clone, Debug)]
pub struct JsonFileStore {
    path: PathBuf,
}

impl JsonFileStore {
    /// Keep the snapshot at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonFileStore { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl HealthStore for JsonFileStore {
    fn save(&self, snapshot: &HealthSnapshot) -> Result<(), BoxError> {
        let bytes = serde_json::to_vec_pretty(snapshot)?;
        write_atomic(&self.path, &bytes)?;
        Ok(())
    }

    fn load(&self) -> Result<Option<HealthSnapshot>, BoxError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Write `bytes` to `path` atomically: a reader (or the next start, after a crash) sees the old
/// file or the new one, never a part of either.
///
/// The bytes go to a temporary sibling file with a unique name (`.<name>.<pid>.<seq>.tmp`, so
/// concurrent writers never share one), which is flushed to disk (`sync_all`) and renamed over
/// `path`; on Unix the directory is then flushed too, so the rename itself survives a power loss.
/// On error the temporary file is removed. This is the one writer for every file tower-llm
/// persists (health snapshots, escalation records).
///
/// ```
/// let path = std::env::temp_dir().join(format!("tower-llm-atomic-doc-{}.json", std::process::id()));
/// tower_llm_fallback::write_atomic(&path, b"{}").unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"{}");
/// # std::fs::remove_file(path).unwrap();
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// Flush a directory's entries (a rename in it) to disk.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    // Windows cannot open a directory as a file; its renames are durable by the journal.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = std::env::temp_dir().join(format!(
            "tower-llm-fallback-store-unit-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("health.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("health.json")]);
        assert!(JsonFileStore::new(dir.join("missing.json"))
            .load()
            .unwrap()
            .is_none());
        std::fs::write(dir.join("bad.json"), b"{").unwrap();
        assert!(JsonFileStore::new(dir.join("bad.json")).load().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
