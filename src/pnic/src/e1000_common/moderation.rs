//! Adaptive interrupt moderation of the queue vector (82576 EITR, the PF's
//! and a VF's alike).
//!
//! Each interrupt of the queue vector costs shimvmm a host interrupt, a
//! wakeup of its device thread and, most of the time, a guest interrupt (a
//! VM exit, and in the guest one NAPI poll). A fixed ~20 000/s cap keeps a
//! ping's latency low but, for a stream of full-size or TSO frames, still
//! interrupts about once per frame at moderate rates, so the guest's GRO
//! has nothing to merge and every frame pays the whole path. Like Linux's
//! igb in its default ("dynamic conservative") mode, the driver moves the
//! vector between two rates by what the last interval carried, RX and TX
//! each on its own: a stream of large frames either way goes to ~4 000/s (a
//! batch per interrupt), small frames both ways go back to ~20 000/s. A
//! frame after a quiet spell is never delayed: the NIC's interval counts
//! from the previous interrupt, which is long past.

use std::time::{Duration, Instant};

/// EITR interval field (bits 14:2) as Linux's igb writes it: ~50 µs, at most
/// ~20 000 interrupts/s.
pub const EITR_INTERVAL_20K: u32 = 196;
/// ~250 µs, at most ~4 000 interrupts/s: the bulk rate.
pub const EITR_INTERVAL_4K: u32 = 980;
/// EITR.CNT_IGNR (82576): writing the interval does not reset its counter.
pub const EITR_CNT_IGNR: u32 = 1 << 31;

/// An interval whose frames average at least this many bytes carried
/// full-size or TSO frames: bulk data.
const LARGE_FRAME: u64 = 1000;
/// An interval whose frames average less than this carried small frames
/// (pings, requests, pure ACKs): back to the low-latency rate.
const SMALL_FRAME: u64 = 512;
/// Interrupts closer than this belong to one stream; a longer gap means the
/// previous burst ended, and one interval of large frames after it is not yet
/// a stream.
const STREAM_GAP: Duration = Duration::from_millis(1);

/// The queue vector's interrupt rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// ~20 000/s: pings and request/response traffic.
    Latency,
    /// ~4 000/s: a stream of large frames.
    Bulk,
}

impl Rate {
    /// The EITR value of this rate.
    pub fn eitr(self) -> u32 {
        match self {
            Rate::Latency => EITR_INTERVAL_20K | EITR_CNT_IGNR,
            Rate::Bulk => EITR_INTERVAL_4K | EITR_CNT_IGNR,
        }
    }
}

/// One direction's frames since the last interrupt, and what they were.
#[derive(Debug, Clone)]
struct Flow {
    class: Rate,
    frames: u64,
    bytes: u64,
}

impl Flow {
    const IDLE: Flow = Flow { class: Rate::Latency, frames: 0, bytes: 0 };

    #[inline(always)]
    fn count(&mut self, bytes: u32) {
        self.frames += 1;
        self.bytes += u64::from(bytes);
    }

    /// Classifies the interval that ended, then starts the next one.
    /// `streaming`: the interrupt came within [`STREAM_GAP`] of the last.
    fn close_interval(&mut self, streaming: bool) {
        let (frames, bytes) = (self.frames, self.bytes);
        self.frames = 0;
        self.bytes = 0;
        if frames == 0 {
            // Nothing this way: a stream that paused goes on, one that
            // stopped a quiet spell ago is over.
            if !streaming {
                self.class = Rate::Latency;
            }
            return;
        }
        let mean = bytes / frames;
        if mean < SMALL_FRAME {
            self.class = Rate::Latency;
        } else if mean >= LARGE_FRAME && streaming {
            self.class = Rate::Bulk;
        }
    }
}

/// What the queue vector carried since its last interrupt, each direction
/// on its own (a bulk stream one way has small ACKs the other way), and its
/// rate: the bulk rate while either direction streams, as Linux's igb takes
/// the larger of its RX and TX intervals.
#[derive(Debug, Clone)]
pub struct Moderation {
    rate: Rate,
    rx: Flow,
    tx: Flow,
    last_irq: Option<Instant>,
    /// Rate changes so far (the driver's `irq_rate_changes`).
    changes: u64,
}

impl Default for Moderation {
    fn default() -> Self {
        Moderation { rate: Rate::Latency, rx: Flow::IDLE, tx: Flow::IDLE, last_irq: None, changes: 0 }
    }
}

impl Moderation {
    /// The rate the NIC was last given.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// How many times the rate changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// A received buffer's bytes (a jumbo frame's parts count one by one).
    #[inline(always)]
    pub fn count_rx(&mut self, bytes: u32) {
        self.rx.count(bytes);
    }

    /// A frame queued for sending (a TSO frame whole).
    #[inline(always)]
    pub fn count_tx(&mut self, bytes: u32) {
        self.tx.count(bytes);
    }

    /// Back to the initial rate (the NIC was reset and reprogrammed with it).
    pub fn reset(&mut self) {
        *self = Moderation { changes: self.changes, ..Moderation::default() };
    }

    /// At an interrupt of the queue vector: the new rate, when the interval
    /// since the last one calls for a change.
    pub fn at_interrupt(&mut self, now: Instant) -> Option<Rate> {
        let streaming = self.last_irq.is_some_and(|t| now.saturating_duration_since(t) < STREAM_GAP);
        self.last_irq = Some(now);
        self.rx.close_interval(streaming);
        self.tx.close_interval(streaming);
        let next = if self.rx.class == Rate::Bulk || self.tx.class == Rate::Bulk { Rate::Bulk } else { Rate::Latency };
        if next == self.rate {
            return None;
        }
        self.rate = next;
        self.changes += 1;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One interval: frames received and sent, then the interrupt at `at`.
    fn interval(m: &mut Moderation, at: Instant, rx: &[u32], tx: &[u32]) -> Option<Rate> {
        rx.iter().for_each(|&b| m.count_rx(b));
        tx.iter().for_each(|&b| m.count_tx(b));
        m.at_interrupt(at)
    }

    #[test]
    fn a_stream_of_large_frames_goes_bulk_and_small_frames_bring_latency_back() {
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        let mut m = Moderation::default();
        assert_eq!(m.rate().eitr(), EITR_INTERVAL_20K | EITR_CNT_IGNR);
        // The first interrupt has no previous one: not yet a stream.
        assert_eq!(interval(&mut m, us(0), &[1514], &[]), None);
        // One full-size frame every ~100 µs: a stream.
        assert_eq!(interval(&mut m, us(100), &[1514], &[]), Some(Rate::Bulk));
        assert_eq!(m.rate().eitr(), EITR_INTERVAL_4K | EITR_CNT_IGNR);
        // The guest's ACKs the other way, alone in an interval or beside
        // data: the RX stream keeps the bulk rate.
        assert_eq!(interval(&mut m, us(350), &[], &[66, 66]), None, "stays bulk");
        assert_eq!(interval(&mut m, us(600), &[1514, 1514], &[66]), None);
        // Pings both ways: small frames.
        assert_eq!(interval(&mut m, us(900), &[98], &[98]), Some(Rate::Latency));
        assert_eq!(m.changes(), 2);
    }

    #[test]
    fn a_tso_upload_goes_bulk_on_its_tx_side_despite_the_acks_it_receives() {
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        let mut m = Moderation::default();
        interval(&mut m, us(0), &[66], &[30_000]);
        assert_eq!(interval(&mut m, us(250), &[66, 66], &[30_000]), Some(Rate::Bulk));
        assert_eq!(interval(&mut m, us(500), &[66], &[]), None, "a TX pause inside the stream");
        // The upload is over: a quiet spell, then an ACK-sized exchange.
        assert_eq!(interval(&mut m, us(5_000), &[66], &[]), Some(Rate::Latency));
    }

    #[test]
    fn large_frames_after_a_quiet_spell_are_not_yet_a_stream() {
        let t0 = Instant::now();
        let mut m = Moderation::default();
        assert_eq!(interval(&mut m, t0, &[98], &[]), None);
        // 5 ms later, one large frame: a single transfer, latency kept.
        assert_eq!(interval(&mut m, t0 + Duration::from_millis(5), &[1514], &[]), None);
        assert_eq!(m.rate(), Rate::Latency);
        // Mid-size frames change nothing either way.
        assert_eq!(interval(&mut m, t0 + Duration::from_micros(5100), &[700, 700], &[]), None);
        assert_eq!(m.rate(), Rate::Latency);
    }

    #[test]
    fn an_interval_without_frames_changes_nothing_and_reset_returns_to_latency() {
        let t0 = Instant::now();
        let mut m = Moderation::default();
        interval(&mut m, t0, &[9000], &[]);
        assert_eq!(interval(&mut m, t0 + Duration::from_micros(200), &[9000], &[]), Some(Rate::Bulk));
        assert_eq!(m.at_interrupt(t0 + Duration::from_micros(400)), None);
        assert_eq!(m.rate(), Rate::Bulk);
        m.reset();
        assert_eq!(m.rate(), Rate::Latency);
        assert_eq!(m.changes(), 1, "the count of changes survives a reset");
    }
}
