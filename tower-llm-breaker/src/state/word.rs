//! The packing of the atomic words (see the [layout](super#layout)).

use std::time::Duration;

use super::types::{OpenReason, State};

const PHASE_BITS: u32 = 3;
const REASON_BITS: u32 = 3;
const GEN_SHIFT: u32 = PHASE_BITS + REASON_BITS;

pub(super) fn pack_state(state: State, reason: OpenReason, gen: u64) -> u64 {
    (gen << GEN_SHIFT) | ((reason as u64) << PHASE_BITS) | state as u64
}

pub(super) fn phase_of(w: u64) -> State {
    State::from_bits(w & ((1 << PHASE_BITS) - 1))
}

pub(super) fn reason_of(w: u64) -> OpenReason {
    OpenReason::from_bits((w >> PHASE_BITS) & ((1 << REASON_BITS) - 1))
}

pub(super) fn gen_of(w: u64) -> u64 {
    w >> GEN_SHIFT
}

const DEADLINE_MS_BITS: u32 = 40;
const DEADLINE_MS_MASK: u64 = (1 << DEADLINE_MS_BITS) - 1;
pub(super) const NO_DEADLINE: u64 = DEADLINE_MS_MASK;

pub(super) fn pack_deadline(gen: u64, ms: u64) -> u64 {
    ((gen & 0xFF_FFFF) << DEADLINE_MS_BITS) | ms.min(NO_DEADLINE)
}

/// The deadline in nanoseconds since creation, if the word belongs to `gen` and has one.
pub(super) fn deadline_of(w: u64, gen: u64) -> Result<Option<u64>, ()> {
    if w >> DEADLINE_MS_BITS != gen & 0xFF_FFFF {
        return Err(());
    }
    let ms = w & DEADLINE_MS_MASK;
    Ok((ms != NO_DEADLINE).then(|| ms.saturating_mul(1_000_000)))
}

pub(super) fn tag32(gen: u64) -> u64 {
    gen & 0xFFFF_FFFF
}

pub(super) fn pack_half_open(gen: u64, in_flight: u64, successes: u64) -> u64 {
    (tag32(gen) << 32) | ((in_flight & 0xFFFF) << 16) | (successes & 0xFFFF)
}

pub(super) fn unpack_half_open(w: u64) -> (u64, u64, u64) {
    (w >> 32, (w >> 16) & 0xFFFF, w & 0xFFFF)
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
