//! Sliding windows of recent outcomes, updated in O(1) per call with subtract-on-evict.
//!
//! Each window belongs to one *generation* of the breaker (a period in CLOSED or METRICS_ONLY,
//! see `state.rs`). A new generation starts empty: rather than clearing the ring on a transition
//! (which would race with calls still completing), every word is tagged with the generation that
//! wrote it, and a word written by an older generation reads as empty. A call admitted under an
//! older generation is not recorded at all.
//!
//! * [`CountWindow`] (the default) is lock-free: a sequence word hands out ring slots, each slot
//!   is swapped by compare-and-swap, and the failure/slow aggregates are adjusted by the
//!   difference between the new and the evicted outcome. In the steady state (a success replacing
//!   a success) the aggregate is not written at all. When more than `size` recorders race on the
//!   same slot the aggregate can be off transiently, never at rest; reads clamp it to `0..=calls`.
//! * [`TimeWindow`] keeps 1 s buckets under a short mutex: it reads the clock on every call
//!   anyway, and a bucket rotation must subtract and clear a bucket atomically.

use crate::sync::{lock, AtomicU32, AtomicU64, CachePadded, Mutex, Ordering};

/// What one recorded call contributes to a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

/// The window's content: how many calls, failures and slow calls it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

// One per breaker, inside its `Arc`: the count window's size is its cache-line padding, on purpose.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// Record `sample` for generation `gen` at `now_ns`; returns the totals after it, or `None`
    /// when the generation is over (the sample belongs to a finished period and is dropped).
    pub(crate) fn record(&self, gen: u64, sample: Sample, now_ns: u64) -> Option<Totals> {
        match self {
            Window::Count(w) => w.record(gen, sample),
            Window::Time(w) => w.record(gen, sample, now_ns),
        }
    }

    /// The totals of generation `gen` at `now_ns` (empty if `gen` has not recorded anything).
    pub(crate) fn totals(&self, gen: u64, now_ns: u64) -> Totals {
        match self {
            Window::Count(w) => w.totals(gen),
            Window::Time(w) => w.totals(gen, now_ns),
        }
    }
}

// Tag widths: a word's tag is the low bits of the generation that wrote it.
const SEQ_TAG_BITS: u32 = 32;
const SLOT_TAG_BITS: u32 = 24;
const AGG_TAG_BITS: u32 = 16;
const AGG_FIELD_BITS: u32 = 24;
const AGG_FIELD_MASK: u64 = (1 << AGG_FIELD_BITS) - 1;

const SLOT_VALID: u32 = 1;
const SLOT_FAILURE: u32 = 2;
const SLOT_SLOW: u32 = 4;

fn tag(gen: u64, bits: u32) -> u64 {
    gen & ((1 << bits) - 1)
}

/// Whether tag `a` is newer than tag `b`, both `bits` wide (serial-number arithmetic).
fn newer(a: u64, b: u64, bits: u32) -> bool {
    let d = a.wrapping_sub(b) & ((1 << bits) - 1);
    d != 0 && d < (1 << (bits - 1))
}

/// The last `size` outcomes of one generation, lock-free.
pub(crate) struct CountWindow {
    size: u32,
    /// `[tag:32 | n:32]`: records in this generation so far, kept in `size..2*size` once full so
    /// that `n % size` stays the next slot and `min(n, size)` the number of calls.
    seq: CachePadded<AtomicU64>,
    /// `[tag:24 | flags:8]` per slot.
    slots: Box<[AtomicU32]>,
    /// `[tag:16 | failures:24 | slow:24]`, fields wrapping (see the module docs).
    agg: CachePadded<AtomicU64>,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        CountWindow {
            size,
            seq: CachePadded(AtomicU64::new(0)),
            slots: (0..size).map(|_| AtomicU32::new(0)).collect(),
            agg: CachePadded(AtomicU64::new(0)),
        }
    }

    fn record(&self, gen: u64, sample: Sample) -> Option<Totals> {
        let seq_tag = tag(gen, SEQ_TAG_BITS);
        let size = u64::from(self.size);
        let prev = self
            .seq
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let (t, n) = (w >> 32, w & 0xFFFF_FFFF);
                if t == seq_tag {
                    let next = if n + 1 >= 2 * size {
                        n + 1 - size
                    } else {
                        n + 1
                    };
                    Some((t << 32) | next)
                } else if newer(seq_tag, t, SEQ_TAG_BITS) {
                    Some((seq_tag << 32) | 1)
                } else {
                    None
                }
            })
            .ok()?;
        let n = if prev >> 32 == seq_tag {
            prev & 0xFFFF_FFFF
        } else {
            0
        };
        // `n < 2 * size` always: the slot is `n % size` without a division.
        let index = usize::try_from(if n >= size { n - size } else { n }).unwrap_or(0);
        let slot = self.slots.get(index)?;

        let slot_tag = tag(gen, SLOT_TAG_BITS) as u32;
        let flags = SLOT_VALID
            | if sample.failure { SLOT_FAILURE } else { 0 }
            | if sample.slow { SLOT_SLOW } else { 0 };
        let new = (slot_tag << 8) | flags;
        let mut cur = slot.load(Ordering::Acquire);
        let evicted = loop {
            let cur_tag = cur >> 8;
            if newer(u64::from(cur_tag), u64::from(slot_tag), SLOT_TAG_BITS) {
                // A later generation owns the ring now.
                return None;
            }
            let evicted = if cur_tag == slot_tag { cur & 0xFF } else { 0 };
            if evicted == flags && cur_tag == slot_tag {
                // Same outcome replaces same outcome: nothing to write (the steady state).
                break evicted;
            }
            match slot.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break evicted,
                Err(actual) => cur = actual,
            }
        };

        let d_fail = i64::from(flags & SLOT_FAILURE != 0) - i64::from(evicted & SLOT_FAILURE != 0);
        let d_slow = i64::from(flags & SLOT_SLOW != 0) - i64::from(evicted & SLOT_SLOW != 0);
        let agg_tag = tag(gen, AGG_TAG_BITS);
        let agg = if d_fail != 0 || d_slow != 0 {
            let prev = self
                .agg
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                    let t = w >> (2 * AGG_FIELD_BITS);
                    let (f, s) = if t == agg_tag {
                        ((w >> AGG_FIELD_BITS) & AGG_FIELD_MASK, w & AGG_FIELD_MASK)
                    } else if newer(agg_tag, t, AGG_TAG_BITS) {
                        (0, 0)
                    } else {
                        return None;
                    };
                    Some(pack_agg(
                        agg_tag,
                        add_field(f, d_fail),
                        add_field(s, d_slow),
                    ))
                })
                .ok()?;
            let (f, s) = if prev >> (2 * AGG_FIELD_BITS) == agg_tag {
                (
                    (prev >> AGG_FIELD_BITS) & AGG_FIELD_MASK,
                    prev & AGG_FIELD_MASK,
                )
            } else {
                (0, 0)
            };
            pack_agg(agg_tag, add_field(f, d_fail), add_field(s, d_slow))
        } else {
            self.agg.load(Ordering::Acquire)
        };
        let calls = self.calls(seq_tag);
        Some(unpack_agg(agg, agg_tag, calls))
    }

    fn calls(&self, seq_tag: u64) -> u64 {
        let w = self.seq.load(Ordering::Acquire);
        if w >> 32 == seq_tag {
            (w & 0xFFFF_FFFF).min(u64::from(self.size))
        } else {
            0
        }
    }

    fn totals(&self, gen: u64) -> Totals {
        let calls = self.calls(tag(gen, SEQ_TAG_BITS));
        unpack_agg(
            self.agg.load(Ordering::Acquire),
            tag(gen, AGG_TAG_BITS),
            calls,
        )
    }
}

fn pack_agg(tag: u64, failures: u64, slow: u64) -> u64 {
    (tag << (2 * AGG_FIELD_BITS))
        | ((failures & AGG_FIELD_MASK) << AGG_FIELD_BITS)
        | (slow & AGG_FIELD_MASK)
}

fn add_field(field: u64, delta: i64) -> u64 {
    (field as i64).wrapping_add(delta) as u64 & AGG_FIELD_MASK
}

/// A field as a signed 24-bit number clamped to `0..=calls`.
fn clamp_field(field: u64, calls: u64) -> u64 {
    if field >= 1 << (AGG_FIELD_BITS - 1) {
        0
    } else {
        field.min(calls)
    }
}

fn unpack_agg(w: u64, agg_tag: u64, calls: u64) -> Totals {
    if w >> (2 * AGG_FIELD_BITS) != agg_tag {
        return Totals {
            calls,
            failures: 0,
            slow: 0,
        };
    }
    Totals {
        calls,
        failures: clamp_field((w >> AGG_FIELD_BITS) & AGG_FIELD_MASK, calls),
        slow: clamp_field(w & AGG_FIELD_MASK, calls),
    }
}

/// The calls of the last `secs` seconds in 1 s buckets.
pub(crate) struct TimeWindow {
    ring: Mutex<TimeRing>,
}

struct TimeRing {
    gen: u64,
    /// The second the newest bucket stands for; buckets cover `(head - len, head]`.
    head: u64,
    buckets: Box<[Totals]>,
    sum: Totals,
}

impl TimeWindow {
    pub(crate) fn new(secs: u64) -> Self {
        let len = usize::try_from(secs.max(1)).unwrap_or(1);
        TimeWindow {
            ring: Mutex::new(TimeRing {
                gen: 0,
                head: 0,
                buckets: vec![Totals::default(); len].into_boxed_slice(),
                sum: Totals::default(),
            }),
        }
    }

    fn record(&self, gen: u64, sample: Sample, now_ns: u64) -> Option<Totals> {
        let mut ring = lock(&self.ring);
        if gen < ring.gen {
            return None;
        }
        let sec = now_ns / 1_000_000_000;
        ring.enter(gen, sec);
        let len = ring.buckets.len() as u64;
        let index = usize::try_from(sec % len).unwrap_or(0);
        let add = Totals {
            calls: 1,
            failures: u64::from(sample.failure),
            slow: u64::from(sample.slow),
        };
        if let Some(bucket) = ring.buckets.get_mut(index) {
            bucket.calls += add.calls;
            bucket.failures += add.failures;
            bucket.slow += add.slow;
        }
        ring.sum.calls += add.calls;
        ring.sum.failures += add.failures;
        ring.sum.slow += add.slow;
        Some(ring.sum)
    }

    fn totals(&self, gen: u64, now_ns: u64) -> Totals {
        let mut ring = lock(&self.ring);
        if gen != ring.gen {
            return Totals::default();
        }
        ring.enter(gen, now_ns / 1_000_000_000);
        ring.sum
    }
}

impl TimeRing {
    /// Start generation `gen` (empty) if it is new, then evict every bucket older than
    /// `len` seconds before `sec`: at most `len` buckets, amortised O(1) per call.
    fn enter(&mut self, gen: u64, sec: u64) {
        if gen > self.gen {
            self.gen = gen;
            self.head = sec;
            self.buckets.iter_mut().for_each(|b| *b = Totals::default());
            self.sum = Totals::default();
            return;
        }
        if sec <= self.head {
            return;
        }
        let len = self.buckets.len() as u64;
        let steps = (sec - self.head).min(len);
        for i in 1..=steps {
            let index = usize::try_from((self.head + i) % len).unwrap_or(0);
            if let Some(bucket) = self.buckets.get_mut(index) {
                self.sum.calls -= bucket.calls;
                self.sum.failures -= bucket.failures;
                self.sum.slow -= bucket.slow;
                *bucket = Totals::default();
            }
        }
        self.head = sec;
    }
}

#[cfg(all(test, not(tower_llm_loom)))]
mod tests {
    use super::*;

    const F: Sample = Sample {
        failure: true,
        slow: false,
    };
    const S: Sample = Sample {
        failure: false,
        slow: false,
    };

    #[test]
    fn count_window_evicts_the_oldest_outcome() {
        let w = CountWindow::new(3);
        assert_eq!(w.record(1, F).unwrap().failures, 1);
        assert_eq!(w.record(1, S).unwrap().failures, 1);
        let t = w.record(1, S).unwrap();
        assert_eq!((t.calls, t.failures), (3, 1));
        // The failure is evicted by the fourth call.
        let t = w.record(1, S).unwrap();
        assert_eq!((t.calls, t.failures), (3, 0));
        for _ in 0..100 {
            w.record(1, F);
        }
        assert_eq!(w.totals(1).failures, 3);
    }

    #[test]
    fn a_new_generation_starts_empty_and_old_ones_are_dropped() {
        let w = CountWindow::new(4);
        for _ in 0..4 {
            w.record(3, F);
        }
        assert_eq!(w.totals(3).failures, 4);
        let t = w.record(5, S).unwrap();
        assert_eq!((t.calls, t.failures), (1, 0));
        assert!(
            w.record(3, F).is_none(),
            "a finished generation must not write"
        );
        assert_eq!(w.totals(3), Totals::default());
        let t = w.record(5, F).unwrap();
        assert_eq!((t.calls, t.failures), (2, 1));
    }

    #[test]
    fn slow_calls_are_counted_separately() {
        let w = CountWindow::new(2);
        w.record(
            1,
            Sample {
                failure: false,
                slow: true,
            },
        );
        let t = w.record(
            1,
            Sample {
                failure: true,
                slow: true,
            },
        );
        assert_eq!(
            t.unwrap(),
            Totals {
                calls: 2,
                failures: 1,
                slow: 2
            }
        );
        let t = w.record(1, S).unwrap();
        assert_eq!((t.failures, t.slow), (1, 1));
    }

    #[test]
    fn time_window_drops_buckets_older_than_the_window() {
        let w = TimeWindow::new(3);
        let s = 1_000_000_000;
        w.record(1, F, 0);
        w.record(1, S, s / 2);
        w.record(1, F, s);
        assert_eq!(w.totals(1, 2 * s).calls, 3);
        // At t=3s the bucket of second 0 is out.
        let t = w.totals(1, 3 * s);
        assert_eq!((t.calls, t.failures), (1, 1));
        // A long idle gap empties it.
        assert_eq!(w.totals(1, 100 * s), Totals::default());
        let t = w.record(2, F, 100 * s).unwrap();
        assert_eq!((t.calls, t.failures), (1, 1));
        assert!(w.record(1, F, 100 * s).is_none());
    }

    #[test]
    fn tags_compare_as_serial_numbers() {
        assert!(newer(1, 0, 16));
        assert!(newer(0, 0xFFFF, 16));
        assert!(!newer(0xFFFF, 0, 16));
        assert!(!newer(5, 5, 16));
    }
}
