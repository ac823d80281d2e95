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
//! vector between two rates by what the last interval carried: a stream of
//! large frames goes to ~4 000/s (a batch per interrupt), small frames go
//! back to ~20 000/s. A frame after a quiet spell is never delayed: the
//! NIC's interval counts from the previous interrupt, which is long past.

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

/// What the queue vector carried since its last interrupt, and its rate.
#[derive(Debug, Clone)]
pub struct Moderation {
    rate: Rate,
    frames: u64,
    bytes: u64,
    last_irq: Option<Instant>,
    /// Rate changes so far (the driver's `moderation_changes`).
    changes: u64,
}

impl Default for Moderation {
    fn default() -> Self {
        Moderation { rate: Rate::Latency, frames: 0, bytes: 0, last_irq: None, changes: 0 }
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

    /// A frame received or sent (RX: each completed buffer; TX: each frame
    /// queued, a TSO frame whole).
    #[inline(always)]
    pub fn count(&mut self, bytes: u32) {
        self.frames += 1;
        self.bytes += u64::from(bytes);
    }

    /// Back to the initial rate (the NIC was reset and reprogrammed with it).
    pub fn reset(&mut self) {
        *self = Moderation { changes: self.changes, ..Moderation::default() };
    }

    /// At an interrupt of the queue vector: the new rate, when the interval
    /// since the last one calls for a change. An interval without frames
    /// (a spurious or link interrupt) changes nothing.
    pub fn at_interrupt(&mut self, now: Instant) -> Option<Rate> {
        let gap = self.last_irq.map(|t| now.saturating_duration_since(t));
        self.last_irq = Some(now);
        let (frames, bytes) = (self.frames, self.bytes);
        self.frames = 0;
        self.bytes = 0;
        if frames == 0 {
            return None;
        }
        let mean = bytes / frames;
        let next = if mean < SMALL_FRAME {
            Rate::Latency
        } else if mean >= LARGE_FRAME && gap.is_some_and(|g| g < STREAM_GAP) {
            Rate::Bulk
        } else {
            self.rate
        };
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

    fn interval(m: &mut Moderation, at: Instant, frames: &[u32]) -> Option<Rate> {
        frames.iter().for_each(|&b| m.count(b));
        m.at_interrupt(at)
    }

    #[test]
    fn a_stream_of_large_frames_goes_bulk_and_small_frames_bring_latency_back() {
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        let mut m = Moderation::default();
        assert_eq!(m.rate().eitr(), EITR_INTERVAL_20K | EITR_CNT_IGNR);
        // The first interrupt has no previous one: not yet a stream.
        assert_eq!(interval(&mut m, us(0), &[1514]), None);
        // One full-size frame every ~100 µs: a stream.
        assert_eq!(interval(&mut m, us(100), &[1514]), Some(Rate::Bulk));
        assert_eq!(m.rate().eitr(), EITR_INTERVAL_4K | EITR_CNT_IGNR);
        assert_eq!(interval(&mut m, us(350), &[1514, 1514, 66]), None, "stays bulk");
        // A TSO frame's write-back and an ACK: still large on average.
        assert_eq!(interval(&mut m, us(600), &[30_000, 66]), None);
        // Pings: small frames.
        assert_eq!(interval(&mut m, us(900), &[98, 98]), Some(Rate::Latency));
        assert_eq!(m.changes(), 2);
    }

    #[test]
    fn large_frames_after_a_quiet_spell_are_not_yet_a_stream() {
        let t0 = Instant::now();
        let mut m = Moderation::default();
        assert_eq!(interval(&mut m, t0, &[98]), None);
        // 5 ms later, one large frame: a single transfer, latency kept.
        assert_eq!(interval(&mut m, t0 + Duration::from_millis(5), &[1514]), None);
        assert_eq!(m.rate(), Rate::Latency);
        // Mid-size frames change nothing either way.
        assert_eq!(interval(&mut m, t0 + Duration::from_micros(5100), &[700, 700]), None);
        assert_eq!(m.rate(), Rate::Latency);
    }

    #[test]
    fn an_interval_without_frames_changes_nothing_and_reset_returns_to_latency() {
        let t0 = Instant::now();
        let mut m = Moderation::default();
        interval(&mut m, t0, &[9000]);
        assert_eq!(interval(&mut m, t0 + Duration::from_micros(200), &[9000]), Some(Rate::Bulk));
        assert_eq!(m.at_interrupt(t0 + Duration::from_micros(400)), None);
        assert_eq!(m.rate(), Rate::Bulk);
        m.reset();
        assert_eq!(m.rate(), Rate::Latency);
        assert_eq!(m.changes(), 1, "the count of changes survives a reset");
    }
}
