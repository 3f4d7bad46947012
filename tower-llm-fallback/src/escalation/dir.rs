//! [`JsonDirEscalation`]: each escalation as a JSON file in a directory, written off the async
//! workers by a thread of its own, the directory bounded.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use super::{Escalation, EscalationEvent};
use crate::store::write_atomic;

/// The default [`JsonDirEscalationBuilder::max_files`]: files kept in the directory.
pub const DEFAULT_MAX_FILES: usize = 1000;
/// The default [`JsonDirEscalationBuilder::queue`]: records waiting for the writer.
pub const DEFAULT_QUEUE: usize = 1024;

/// Called on the writer thread with each file written.
type OnWritten = Arc<dyn Fn(&Path) + Send + Sync>;

enum Msg {
    Write(String, EscalationEvent),
    Flush(SyncSender<()>),
}

struct Inner {
    dir: PathBuf,
    tx: SyncSender<Msg>,
    seq: AtomicU64,
    dropped: AtomicU64,
}

/// Writes each event as `<unix-ms>-<pid>-<seq>-<reason>[-summary].json` into a directory,
/// atomically ([`write_atomic`](crate::write_atomic)).
///
/// [`escalate`](Escalation::escalate) only queues the event (a bounded queue, [`DEFAULT_QUEUE`]):
/// a thread of its own (`tower-llm-escalation-writer`) serializes and writes it, so the disk
/// never blocks a request's task or a runtime worker. When the queue is full the record is
/// dropped and counted ([`dropped`](Self::dropped), and the
/// [`ESCALATION_RECORDS_DROPPED_TOTAL`](crate::metrics::ESCALATION_RECORDS_DROPPED_TOTAL)
/// counter). The directory keeps at most [`DEFAULT_MAX_FILES`] `.json` files: past that the
/// oldest (by name, which starts with the time) are removed, files found there at start
/// included. Clones share the writer; it ends when the last clone is dropped.
///
/// ```
/// use tower_llm_fallback::JsonDirEscalation;
///
/// let dir = std::env::temp_dir().join(format!("tower-llm-esc-dir-doc-{}", std::process::id()));
/// let hook = JsonDirEscalation::builder(&dir).max_files(50).build().unwrap();
/// assert_eq!(hook.dir(), dir.as_path());
/// hook.flush(); // nothing queued: returns at once
/// # drop(hook);
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
#[derive(Clone)]
pub struct JsonDirEscalation {
    inner: Arc<Inner>,
}

impl fmt::Debug for JsonDirEscalation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonDirEscalation")
            .field("dir", &self.inner.dir)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Builds a [`JsonDirEscalation`].
pub struct JsonDirEscalationBuilder {
    dir: PathBuf,
    max_files: usize,
    queue: usize,
    on_written: Option<OnWritten>,
}

impl fmt::Debug for JsonDirEscalationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonDirEscalationBuilder")
            .field("dir", &self.dir)
            .field("max_files", &self.max_files)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl JsonDirEscalationBuilder {
    /// Keep at most `n` `.json` files in the directory (at least 1; default
    /// [`DEFAULT_MAX_FILES`]).
    pub fn max_files(mut self, n: usize) -> Self {
        self.max_files = n.max(1);
        self
    }

    /// At most `n` records wait for the writer (at least 1; default [`DEFAULT_QUEUE`]); more
    /// are dropped and counted.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }

    /// Call `f` on the writer thread with the path of each record once it is written (to ship
    /// it elsewhere, or to wait for it in a test).
    pub fn on_written(mut self, f: impl Fn(&Path) + Send + Sync + 'static) -> Self {
        self.on_written = Some(Arc::new(f));
        self
    }

    /// Create the directory if missing, list the records already there, and start the writer.
    pub fn build(self) -> std::io::Result<JsonDirEscalation> {
        std::fs::create_dir_all(&self.dir)?;
        let existing = existing_records(&self.dir)?;
        let (tx, rx) = sync_channel(self.queue);
        let writer = Writer {
            dir: self.dir.clone(),
            max_files: self.max_files,
            files: existing,
            on_written: self.on_written,
        };
        std::thread::Builder::new()
            .name("tower-llm-escalation-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(JsonDirEscalation {
            inner: Arc::new(Inner {
                dir: self.dir,
                tx,
                seq: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        })
    }
}

impl JsonDirEscalation {
    /// Write events into `dir` (created if missing), with the default bounds.
    pub fn new(dir: impl AsRef<Path>) -> std::io::Result<Self> {
        Self::builder(dir).build()
    }

    /// Write events into `dir`, with bounds of your own.
    pub fn builder(dir: impl AsRef<Path>) -> JsonDirEscalationBuilder {
        JsonDirEscalationBuilder {
            dir: dir.as_ref().to_path_buf(),
            max_files: DEFAULT_MAX_FILES,
            queue: DEFAULT_QUEUE,
            on_written: None,
        }
    }

    /// The directory events are written to.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Records dropped because the writer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Block until every record queued so far is written (or failed). It blocks the calling
    /// thread: from async code, call it in `tokio::task::spawn_blocking` (shutdown, tests).
    pub fn flush(&self) {
        let (ack, done) = sync_channel(1);
        if self.inner.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

impl Escalation for JsonDirEscalation {
    fn escalate(&self, event: &EscalationEvent) {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}-{}-{seq:010}-{}{}.json",
            event.at_unix_ms,
            std::process::id(),
            event.reason.as_str(),
            if event.suppressed.is_some() {
                "-summary"
            } else {
                ""
            }
        );
        match self.inner.tx.try_send(Msg::Write(name, event.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::ESCALATION_RECORDS_DROPPED_TOTAL).increment(1);
            }
        }
    }
}

/// The `.json` records already in `dir`, oldest first.
fn existing_records(dir: &Path) -> std::io::Result<VecDeque<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files.into())
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    max_files: usize,
    files: VecDeque<PathBuf>,
    on_written: Option<OnWritten>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        self.trim();
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Write(name, event) => self.write(name, &event),
                Msg::Flush(ack) => {
                    let _ = ack.send(());
                }
            }
        }
    }

    fn write(&mut self, name: String, event: &EscalationEvent) {
        let path = self.dir.join(name);
        let result = serde_json::to_vec_pretty(event)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomic(&path, &bytes));
        match result {
            Ok(()) => {
                self.files.push_back(path.clone());
                self.trim();
                if let Some(f) = &self.on_written {
                    f(&path);
                }
            }
            Err(error) => {
                tracing::warn!(target: "tower_llm_fallback::escalation", %error, dir = %self.dir.display(), "could not write escalation record");
            }
        }
    }

    /// Remove the oldest records past `max_files`.
    fn trim(&mut self) {
        while self.files.len() > self.max_files {
            let Some(oldest) = self.files.pop_front() else {
                break;
            };
            if let Err(error) = std::fs::remove_file(&oldest) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(target: "tower_llm_fallback::escalation", %error, file = %oldest.display(), "could not remove an old escalation record");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::sync::Mutex;

    use tower_llm_core::ErrorKind;

    use super::*;
    use crate::escalation::EscalationReason;
    use crate::report::FallbackKind;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tower-llm-fallback-esc-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn event(at: u64) -> EscalationEvent {
        EscalationEvent {
            reason: EscalationReason::AllTargetsFailed,
            at_unix_ms: at,
            target: None,
            kind: Some(ErrorKind::ServerError),
            attempts: Vec::new(),
            served_by: Some(FallbackKind::Static),
            suppressed: None,
        }
    }

    fn records(dir: &Path) -> Vec<PathBuf> {
        existing_records(dir).unwrap().into()
    }

    #[test]
    fn writes_whole_files() {
        let dir = scratch("whole");
        let hook = JsonDirEscalation::new(&dir).unwrap();
        hook.escalate(&event(1));
        hook.escalate(&event(2));
        hook.flush();
        let files = records(&dir);
        assert_eq!(files.len(), 2);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert_eq!(v["reason"]["type"], "all_targets_failed");
        assert_eq!(v["served_by"], "static");
        assert!(files[0]
            .to_str()
            .unwrap()
            .ends_with("all_targets_failed.json"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_directory_keeps_the_newest_max_files() {
        let dir = scratch("bound");
        std::fs::create_dir_all(&dir).unwrap();
        // Records of an earlier run count too.
        for i in 0..5 {
            std::fs::write(dir.join(format!("000000000000{i}-old.json")), b"{}").unwrap();
        }
        let hook = JsonDirEscalation::builder(&dir)
            .max_files(20)
            .build()
            .unwrap();
        for at in 0..70 {
            hook.escalate(&event(1_000_000_000_000 + at));
        }
        hook.flush();
        let files = records(&dir);
        assert_eq!(files.len(), 20);
        // The newest 20: events 50..70.
        let first = files[0].file_name().unwrap().to_str().unwrap().to_owned();
        assert!(first.starts_with("1000000000050-"), "{first}");
        assert_eq!(hook.dropped(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn records_are_written_by_the_writer_thread_not_the_caller() {
        let dir = scratch("thread");
        let (entered_tx, entered) = channel::<String>();
        let (release, release_rx) = channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let hook = JsonDirEscalation::builder(&dir)
            .queue(1)
            .on_written(move |_path| {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                entered_tx.send(name).unwrap();
                // Hold the writer until the test lets it go.
                release_rx.lock().unwrap().recv().unwrap();
            })
            .build()
            .unwrap();
        hook.escalate(&event(1));
        let writer = entered.recv().unwrap();
        assert_eq!(writer, "tower-llm-escalation-writer");
        assert_ne!(std::thread::current().name(), Some(writer.as_str()));
        // The writer is busy: `escalate` returns at once, before its file exists.
        hook.escalate(&event(2));
        assert_eq!(records(&dir).len(), 1);
        // The queue (1) is full now: more records are dropped and counted, never waited for.
        hook.escalate(&event(3));
        hook.escalate(&event(4));
        assert_eq!(hook.dropped(), 2);
        release.send(()).unwrap();
        assert_eq!(entered.recv().unwrap(), writer);
        release.send(()).unwrap();
        hook.flush();
        let names: Vec<String> = records(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[1].starts_with("2-"), "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
