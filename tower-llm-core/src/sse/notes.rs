//! What the stream guard's scan found in recent events, for a layer above that reads the same
//! events: [`ScanNotes`].
//!
//! A fallback that resumes cut streams reads every event of the stream it watches, and so does
//! the stream guard below it: two scans of one event's JSON. The guard notes what
//! [`scan_plain_chunk`] found in each event it judged; the watch above asks for the note of the
//! event it holds and reads nothing again when the guard already did. The notes are keyed by the
//! event data's address and length: both layers hold slices of the same received bytes, and a
//! note keeps its bytes alive, so the address cannot be reused for other data while it is noted.
//!
//! ```
//! use bytes::Bytes;
//! use tower_llm_core::sse::{scan_plain_chunk, ScanNotes};
//!
//! let notes = ScanNotes::new();
//! let data = Bytes::from_static(br#"{"id":"c1","choices":[{"delta":{"content":"Hi"}}]}"#);
//! // The layer that read the event first notes what its scan found.
//! notes.note(&data, scan_plain_chunk(&data).as_ref());
//!
//! // A layer above holding the same bytes reads the note instead of scanning again.
//! let chunk = notes.get(&data).expect("noted").expect("a plain chunk");
//! assert_eq!(chunk.first.unwrap().delta.unwrap().content, Some("Hi"));
//! // Equal bytes elsewhere are other data: no note.
//! assert_eq!(notes.get(&data.to_vec()), None);
//! ```

use std::fmt;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use super::{scan_plain_chunk, PlainChoice, PlainChunk, PlainDelta};

/// How many recent events are remembered: more than the events of one upstream read that a
/// stream guard judges before the layer above reads them, in ordinary streams.
const KEPT: usize = 8;

/// The scans of the last few events a layer read, so that a layer above reading the same events
/// need not scan them again.
///
/// Notes are keyed by the event data's address and length: the two layers decode slices of the
/// same received bytes, and a note holds its `Bytes`, so the address cannot be reused for other
/// data while it is kept. Equal bytes elsewhere in memory are another event and find no note.
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_core::sse::{scan_plain_chunk, ScanNotes};
///
/// let notes = ScanNotes::new();
/// let data = Bytes::from_static(br#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#);
/// notes.note(&data, scan_plain_chunk(&data).as_ref());
/// assert_eq!(notes.len(), 1);
/// assert!(notes.get(&data).expect("noted").expect("a plain chunk").finished);
/// // A note is read once.
/// assert!(notes.is_empty());
/// ```
///
/// [`StreamOutcome::watch_scans`](crate::StreamOutcome::watch_scans) asks the stream guard that
/// returned a response to keep them. Reading a note gives exactly what [`scan_plain_chunk`]
/// gives for the same data; a miss (`None`) says only that the caller must scan it itself.
pub struct ScanNotes {
    notes: Mutex<Ring>,
}

/// The kept notes, oldest overwritten first.
#[derive(Default)]
struct Ring {
    notes: [Option<Note>; KEPT],
    next: usize,
}

/// One event's data and what the scan found in it (`None`: not a plain chunk): made when the
/// event is read, put in [`ScanNotes`] when a layer above asks for them.
pub(crate) struct Note {
    data: Bytes,
    scan: Option<ChunkSpans>,
}

impl Note {
    /// The note of `data` read as `scan` ([`scan_plain_chunk`] of `data`); `None` when the
    /// scan's strings are not slices of `data`.
    fn of(data: &Bytes, scan: Option<&PlainChunk<'_>>) -> Option<Note> {
        let scan = match scan {
            None => None,
            Some(chunk) => Some(ChunkSpans::of(data, chunk)?),
        };
        Some(Note {
            data: data.clone(),
            scan,
        })
    }
}

/// A byte range of the noted data.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

/// A [`PlainChunk`] with its strings as ranges of the data.
#[derive(Clone, Copy)]
struct ChunkSpans {
    id: Option<Span>,
    choices: usize,
    first: Option<ChoiceSpans>,
    finished: bool,
    usage: bool,
}

#[derive(Clone, Copy)]
struct ChoiceSpans {
    index: Option<u64>,
    finish_reason: Option<Span>,
    logprobs: bool,
    delta: Option<DeltaSpans>,
}

#[derive(Clone, Copy)]
struct DeltaSpans {
    role: bool,
    content: Option<Span>,
    tool_calls: bool,
    function_call: bool,
    audio: bool,
    refusal: Option<Span>,
    reasoning_content: Option<Span>,
    reasoning: Option<Span>,
}

impl Default for ScanNotes {
    fn default() -> Self {
        Self::new()
    }
}

impl ScanNotes {
    /// No notes yet.
    pub fn new() -> Self {
        ScanNotes {
            notes: Mutex::new(Ring::default()),
        }
    }

    /// Note that `data` is read as `scan` ([`scan_plain_chunk`] of `data`; `None` when it is not
    /// a plain chunk). A `scan` whose strings are not slices of `data` is not noted.
    pub fn note(&self, data: &Bytes, scan: Option<&PlainChunk<'_>>) {
        if let Some(note) = Note::of(data, scan) {
            self.put(note);
        }
    }

    /// Keep `note` (made before any layer asked for notes).
    pub(crate) fn put(&self, note: Note) {
        let mut ring = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        let at = ring.next;
        ring.notes[at] = Some(note);
        ring.next = (at + 1) % KEPT;
    }

    /// What the scan found in `data`, when these very bytes (same address and length) were
    /// noted: `Some(Some(chunk))` for a plain chunk, `Some(None)` when the scan gave up on them
    /// (the caller goes straight to a full JSON parse), `None` when they were not noted. A note
    /// is read once.
    pub fn get<'a>(&self, data: &'a [u8]) -> Option<Option<PlainChunk<'a>>> {
        let note = {
            let mut ring = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = ring.notes.iter_mut().find(|note| {
                note.as_ref().is_some_and(|note| {
                    note.data.as_ptr() == data.as_ptr() && note.data.len() == data.len()
                })
            })?;
            slot.take()?
        };
        let Some(spans) = note.scan else {
            return Some(None);
        };
        // The scan read these bytes as UTF-8, and the spans were cut at string boundaries: a
        // failure here cannot happen, and would only turn the note into a miss. One check of the
        // whole event costs less than one per string (two short ones: id and content).
        let text = std::str::from_utf8(data).ok()?;
        spans.chunk(text).map(Some)
    }
}

impl ScanNotes {
    /// How many notes are kept (noted and not read yet).
    pub fn len(&self) -> usize {
        let ring = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        ring.notes.iter().filter(|note| note.is_some()).count()
    }

    /// Whether no note is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for ScanNotes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The data is completion text: a count only.
        f.debug_struct("ScanNotes")
            .field("kept", &self.len())
            .finish()
    }
}

impl Span {
    /// Where `part` lies in `data`, if it is a slice of it.
    fn of(data: &[u8], part: &str) -> Option<Span> {
        let base = data.as_ptr() as usize;
        let start = (part.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(part.len())?;
        (end <= data.len()).then_some(Span { start, end })
    }

    fn of_opt(data: &[u8], part: Option<&str>) -> Option<Option<Span>> {
        match part {
            None => Some(None),
            Some(part) => Span::of(data, part).map(Some),
        }
    }

    fn read(self, data: &str) -> Option<&str> {
        data.get(self.start..self.end)
    }

    fn read_opt(span: Option<Span>, data: &str) -> Option<Option<&str>> {
        match span {
            None => Some(None),
            Some(span) => span.read(data).map(Some),
        }
    }
}

impl ChunkSpans {
    fn of(data: &[u8], chunk: &PlainChunk<'_>) -> Option<ChunkSpans> {
        let first = match &chunk.first {
            None => None,
            Some(choice) => Some(ChoiceSpans {
                index: choice.index,
                finish_reason: Span::of_opt(data, choice.finish_reason)?,
                logprobs: choice.logprobs,
                delta: match &choice.delta {
                    None => None,
                    Some(delta) => Some(DeltaSpans {
                        role: delta.role,
                        content: Span::of_opt(data, delta.content)?,
                        tool_calls: delta.tool_calls,
                        function_call: delta.function_call,
                        audio: delta.audio,
                        refusal: Span::of_opt(data, delta.refusal)?,
                        reasoning_content: Span::of_opt(data, delta.reasoning_content)?,
                        reasoning: Span::of_opt(data, delta.reasoning)?,
                    }),
                },
            }),
        };
        Some(ChunkSpans {
            id: Span::of_opt(data, chunk.id)?,
            choices: chunk.choices,
            first,
            finished: chunk.finished,
            usage: chunk.usage,
        })
    }

    fn chunk(self, data: &str) -> Option<PlainChunk<'_>> {
        let first = match self.first {
            None => None,
            Some(choice) => Some(PlainChoice {
                index: choice.index,
                finish_reason: Span::read_opt(choice.finish_reason, data)?,
                logprobs: choice.logprobs,
                delta: match choice.delta {
                    None => None,
                    Some(delta) => Some(PlainDelta {
                        role: delta.role,
                        content: Span::read_opt(delta.content, data)?,
                        tool_calls: delta.tool_calls,
                        function_call: delta.function_call,
                        audio: delta.audio,
                        refusal: Span::read_opt(delta.refusal, data)?,
                        reasoning_content: Span::read_opt(delta.reasoning_content, data)?,
                        reasoning: Span::read_opt(delta.reasoning, data)?,
                    }),
                },
            }),
        };
        Some(PlainChunk {
            id: Span::read_opt(self.id, data)?,
            choices: self.choices,
            first,
            finished: self.finished,
            usage: self.usage,
        })
    }
}

/// [`scan_plain_chunk`] of `data`, noted in `notes`.
pub(crate) fn scan_and_note<'a>(data: &'a Bytes, notes: &ScanNotes) -> Option<PlainChunk<'a>> {
    let chunk = scan_plain_chunk(data);
    notes.note(data, chunk.as_ref());
    chunk
}

/// [`scan_plain_chunk`] of `data`, its note kept in `kept` (for notes no layer asked for yet).
pub(crate) fn scan_and_keep<'a>(
    data: &'a Bytes,
    kept: &mut Option<Note>,
) -> Option<PlainChunk<'a>> {
    let chunk = scan_plain_chunk(data);
    *kept = Note::of(data, chunk.as_ref());
    chunk
}

#[cfg(test)]
mod tests {
    use super::super::chunk_strategy::chunk_data;
    use super::*;
    use proptest::prelude::*;

    const CHUNK: &[u8] =
        br#"{"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#;

    #[test]
    fn a_note_is_read_once_and_only_for_the_same_bytes() {
        let notes = ScanNotes::new();
        let data = Bytes::from_static(CHUNK);
        notes.note(&data, scan_plain_chunk(&data).as_ref());
        // A shorter slice at the same address is other data.
        assert_eq!(notes.get(&data[..data.len() - 1]), None);
        assert_eq!(notes.get(&data), Some(scan_plain_chunk(CHUNK)));
        assert_eq!(notes.get(&data), None);
    }

    #[test]
    fn a_failed_scan_is_noted_too() {
        let notes = ScanNotes::new();
        let data = Bytes::from_static(br#"{"type":"ping"}"#);
        notes.note(&data, scan_plain_chunk(&data).as_ref());
        assert_eq!(notes.get(&data), Some(None));
    }

    #[test]
    fn a_scan_of_other_bytes_is_refused() {
        let notes = ScanNotes::new();
        let data = Bytes::from_static(CHUNK);
        let elsewhere = CHUNK.to_vec();
        notes.note(&data, scan_plain_chunk(&elsewhere).as_ref());
        assert_eq!(notes.get(&data), None);
        assert!(notes.is_empty());
        assert_eq!(format!("{notes:?}"), "ScanNotes { kept: 0 }");
    }

    #[test]
    fn only_the_last_notes_are_kept() {
        let notes = ScanNotes::new();
        let all = Bytes::from(CHUNK.repeat(KEPT + 2));
        let events: Vec<Bytes> = (0..KEPT + 2)
            .map(|i| all.slice(i * CHUNK.len()..(i + 1) * CHUNK.len()))
            .collect();
        for event in &events {
            notes.note(event, scan_plain_chunk(event).as_ref());
        }
        assert_eq!(notes.len(), KEPT);
        assert_eq!(notes.get(&events[0]), None);
        assert_eq!(notes.get(&events[1]), None);
        for event in &events[2..] {
            assert_eq!(notes.get(event), Some(scan_plain_chunk(CHUNK)));
        }
        assert!(notes.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever the data, a note reads back as the scan of the same bytes.
        #[test]
        fn notes_agree_with_the_scan(data in chunk_data()) {
            let notes = ScanNotes::new();
            let data = Bytes::from(data);
            let scanned = scan_and_note(&data, &notes);
            prop_assert_eq!(notes.get(&data), Some(scanned));
        }
    }
}
