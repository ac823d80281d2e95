//! The guest RX buffers the NIC holds, indexed by their virtqueue head.
//!
//! A head names at most one buffer in flight (the device never posts a head
//! it has not got back), so the head itself is the table index: posting and
//! completing are an array store and an array load, with no free list and no
//! hashing. The cookie given to the NIC driver is `generation << 16 | head`:
//! an entry's generation is bumped every time it is filled, so a stale cookie
//! (a completion for a buffer already completed or forgotten, whose head was
//! posted again since) misses instead of completing the new buffer. Cookies
//! come back through the driver, so [`RxTable::take`] accepts any `u64`:
//! unknown, stale or malformed values give `None`, never a panic.

use std::ptr::NonNull;

/// Bits of a cookie that hold the head; the generation sits above them.
const HEAD_BITS: u32 = 16;
const HEAD_MASK: u64 = (1 << HEAD_BITS) - 1;

/// The host address of a zero-copy buffer's first byte (where its header
/// goes): resolved when the buffer was posted, valid while the shim's guest
/// memory mapping is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPtr(pub NonNull<u8>);

// SAFETY: the address points into guest RAM mappings that the shim owning
// the value keeps alive (they are shared memory, usable from any thread); the
// shim only writes through it on the thread that runs the device.
unsafe impl Send for HostPtr {}

/// How a posted buffer reaches the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxKind {
    /// The NIC writes the frame at GPA + 12 of the buffer's one segment;
    /// `host` is where its header goes (the segment's first byte, resolved
    /// when it was posted, valid while the shim's guest memory is alive).
    ZeroCopy { host: HostPtr, gpa: u64 },
    /// The NIC writes into bounce buffer `n`; completion copies it over.
    Bounce(u32),
}

/// One buffer the NIC holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxHeld {
    /// Sum of the buffer's segment lengths (recomputed by the shim); never 0.
    pub len: u32,
    pub kind: RxKind,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    generation: u32,
    /// The held buffer's length; 0 when the entry is empty.
    len: u32,
    kind: RxKind,
}

const EMPTY: Entry = Entry { generation: 0, len: 0, kind: RxKind::Bounce(0) };

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RxTable {
    entries: Vec<Entry>,
    len: usize,
}

impl RxTable {
    /// A table with room for heads below `n` before it grows.
    pub fn with_capacity(n: usize) -> Self {
        RxTable { entries: vec![EMPTY; n], len: 0 }
    }

    /// Buffers held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether buffer `head` is held.
    pub fn holds(&self, head: u16) -> bool {
        self.entries.get(usize::from(head)).is_some_and(|e| e.len != 0)
    }

    /// Store buffer `head`; returns its cookie, or `None` if `head` is
    /// already held (a caller bug: the buffer would be completed twice) or
    /// `held.len` is 0 (nothing the NIC could write).
    #[inline(always)]
    pub fn insert(&mut self, head: u16, held: RxHeld) -> Option<u64> {
        let Some(e) = self.entries.get_mut(usize::from(head)) else {
            return self.insert_grown(head, held);
        };
        if e.len != 0 || held.len == 0 {
            return None;
        }
        let generation = e.generation.wrapping_add(1);
        *e = Entry { generation, len: held.len, kind: held.kind };
        self.len += 1;
        Some(u64::from(generation) << HEAD_BITS | u64::from(head))
    }

    /// `insert` for a head beyond the entries so far.
    #[cold]
    fn insert_grown(&mut self, head: u16, held: RxHeld) -> Option<u64> {
        self.entries.resize(usize::from(head) + 1, EMPTY);
        self.insert(head, held)
    }

    /// Take the buffer of `cookie` out, if the cookie is current: its head
    /// and the buffer.
    #[inline]
    pub fn take(&mut self, cookie: u64) -> Option<(u16, RxHeld)> {
        let head = (cookie & HEAD_MASK) as u16;
        let e = self.entries.get_mut(usize::from(head))?;
        // A generation is a u32, so this also refuses any bit set above it.
        if u64::from(e.generation) != cookie >> HEAD_BITS || e.len == 0 {
            return None;
        }
        let held = RxHeld { len: std::mem::take(&mut e.len), kind: e.kind };
        self.len -= 1;
        Some((head, held))
    }

    /// Remove and return every held buffer (head order).
    pub fn drain(&mut self) -> Vec<(u16, RxHeld)> {
        let mut out = Vec::with_capacity(self.len);
        for (i, e) in self.entries.iter_mut().enumerate() {
            if e.len != 0 {
                out.push((i as u16, RxHeld { len: std::mem::take(&mut e.len), kind: e.kind }));
            }
        }
        self.len = 0;
        out
    }

    /// Forget every held buffer (generations are kept, so their cookies stay
    /// stale).
    pub fn clear(&mut self) {
        for e in &mut self.entries {
            e.len = 0;
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(len: u32) -> RxHeld {
        RxHeld { len, kind: RxKind::Bounce(3) }
    }

    #[test]
    fn a_cookie_completes_its_buffer_once() {
        let mut t = RxTable::with_capacity(4);
        let c = t.insert(3, buf(2048)).unwrap();
        assert!(t.holds(3));
        assert_eq!(t.len(), 1);
        let (head, held) = t.take(c).unwrap();
        assert_eq!((head, held.len), (3, 2048));
        assert!(t.take(c).is_none(), "second completion of the same cookie");
        assert!(t.is_empty());
    }

    #[test]
    fn a_held_head_cannot_be_posted_again_and_empty_buffers_not_at_all() {
        let mut t = RxTable::with_capacity(4);
        let c = t.insert(1, buf(2048)).unwrap();
        assert!(t.insert(1, buf(4096)).is_none());
        assert!(t.insert(2, buf(0)).is_none());
        assert_eq!(t.len(), 1);
        assert_eq!(t.take(c).unwrap().1, buf(2048), "the first one is kept");
    }

    #[test]
    fn stale_unknown_and_malformed_cookies_miss() {
        let mut t = RxTable::with_capacity(4);
        let old = t.insert(0, buf(2048)).unwrap();
        t.take(old).unwrap();
        let new = t.insert(0, buf(2048)).unwrap();
        assert_ne!(old, new);
        for c in [old, 0, u64::MAX, new | 1 << 63, new + (1 << 48), new ^ 1, 0xffff] {
            assert!(t.take(c).is_none(), "cookie {c:#x}");
        }
        assert_eq!(t.take(new).map(|(h, _)| h), Some(0));
    }

    #[test]
    fn heads_beyond_the_capacity_grow_the_table() {
        let mut t = RxTable::with_capacity(2);
        let c = t.insert(u16::MAX, buf(2048)).unwrap();
        assert_eq!(t.take(c).map(|(h, _)| h), Some(u16::MAX));
    }

    #[test]
    fn drain_and_clear_forget_everything_and_keep_cookies_stale() {
        let mut t = RxTable::with_capacity(4);
        let a = t.insert(2, buf(1)).unwrap();
        t.insert(0, buf(2)).unwrap();
        let heads: Vec<u16> = t.drain().into_iter().map(|(h, _)| h).collect();
        assert_eq!(heads, vec![0, 2]);
        assert!(t.is_empty());
        let b = t.insert(2, buf(1)).unwrap();
        t.clear();
        assert!(t.take(a).is_none() && t.take(b).is_none());
        assert!(!t.holds(2));
    }
}
