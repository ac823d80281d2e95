//! What the shim keeps per buffer the NIC holds, found again by the cookie
//! the NIC driver hands back on completion.
//!
//! A cookie is `generation << 32 | index`: the index picks the entry in O(1)
//! (no hashing), the entry's generation (bumped every time the entry is
//! reused) makes a stale cookie (a completion for a buffer already completed
//! or forgotten, whose entry now holds another buffer) miss instead of
//! matching the wrong buffer. Cookies come back through the driver from NIC
//! state, so [`CookieSlab::remove`] takes any `u64`: unknown, stale or
//! malformed values return `None`, never panic.

/// Bits of a cookie that hold the entry index.
const INDEX_BITS: u32 = 32;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

#[derive(Debug)]
struct Entry<T> {
    /// Generation of the value in `val` (or of the last one, when empty).
    /// Starts at 1 on first use, so no cookie is ever 0.
    generation: u32,
    val: Option<T>,
}

/// A slab of values keyed by generation-checked cookies.
#[derive(Debug)]
pub struct CookieSlab<T> {
    entries: Vec<Entry<T>>,
    /// Indices of empty entries (reused last-in first-out: warm in cache).
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for CookieSlab<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> CookieSlab<T> {
    pub fn new() -> Self {
        CookieSlab { entries: Vec::new(), free: Vec::new(), len: 0 }
    }

    /// Room for `n` values before any reallocation.
    pub fn with_capacity(n: usize) -> Self {
        CookieSlab { entries: Vec::with_capacity(n), free: Vec::with_capacity(n), len: 0 }
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index the next [`CookieSlab::insert`] uses (the low bits of its
    /// cookie): an entry that is empty now.
    #[inline(always)]
    pub fn vacant_index(&self) -> usize {
        match self.free.last() {
            Some(&i) => i as usize,
            None => self.entries.len(),
        }
    }

    /// Store `val`; returns its cookie (never 0).
    pub fn insert(&mut self, val: T) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                // More than 2^32 buffers in flight cannot happen (the NIC
                // rings hold a few thousand at most); the index must fit.
                debug_assert!((self.entries.len() as u64) < INDEX_MASK);
                self.entries.push(Entry { generation: 0, val: None });
                self.entries.len() - 1
            }
        };
        let e = &mut self.entries[index];
        e.generation = e.generation.wrapping_add(1).max(1);
        e.val = Some(val);
        self.len += 1;
        (u64::from(e.generation) << INDEX_BITS) | index as u64
    }

    /// Take the value of `cookie` out, if it is current. Unknown, stale and
    /// already-removed cookies give `None`.
    pub fn remove(&mut self, cookie: u64) -> Option<T> {
        let index = (cookie & INDEX_MASK) as usize;
        let generation = (cookie >> INDEX_BITS) as u32;
        let e = self.entries.get_mut(index)?;
        if e.generation != generation {
            return None;
        }
        let val = e.val.take()?;
        self.free.push(index as u32);
        self.len -= 1;
        Some(val)
    }

    /// Take every value out (in index order). Cookies issued before stay
    /// invalid afterwards: entries keep their generation.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.free.clear();
        self.free.extend((0..self.entries.len() as u32).rev());
        self.len = 0;
        self.entries.iter_mut().filter_map(|e| e.val.take())
    }

    /// Forget every value (see [`CookieSlab::drain`]).
    pub fn clear(&mut self) {
        self.drain().for_each(drop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_round_trip_and_reuse() {
        let mut s = CookieSlab::with_capacity(4);
        let a = s.insert("a");
        let b = s.insert("b");
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None, "removed twice");
        let c = s.insert("c");
        assert_eq!(c & INDEX_MASK, a & INDEX_MASK, "entry reused");
        assert_ne!(c, a, "with a new generation");
        assert_eq!(s.remove(a), None, "stale cookie misses the reused entry");
        assert_eq!(s.remove(c), Some("c"));
        assert_eq!(s.remove(b), Some("b"));
        assert!(s.is_empty());
    }

    #[test]
    fn unknown_and_malformed_cookies_miss() {
        let mut s = CookieSlab::new();
        let a = s.insert(1u32);
        for bogus in [0, u64::MAX, a + 1, a ^ (1 << 40), a & INDEX_MASK, 1 << 32 | 7, INDEX_MASK] {
            assert_eq!(s.remove(bogus), None, "cookie {bogus:#x}");
        }
        assert_eq!(s.len(), 1);
        assert_eq!(s.remove(a), Some(1));
    }

    #[test]
    fn drain_and_clear_invalidate_old_cookies() {
        let mut s = CookieSlab::new();
        let cookies: Vec<u64> = (0..5).map(|i| s.insert(i)).collect();
        s.remove(cookies[2]);
        let got: Vec<i32> = s.drain().collect();
        assert_eq!(got, vec![0, 1, 3, 4]);
        assert!(s.is_empty());
        for c in &cookies {
            assert_eq!(s.remove(*c), None);
        }
        let fresh: Vec<u64> = (10..15).map(|i| s.insert(i)).collect();
        for c in &cookies {
            assert!(!fresh.contains(c), "a drained cookie was issued again");
        }
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.remove(fresh[0]), None);
        // No entry beyond the five ever existed: all were reused.
        assert_eq!(s.entries.len(), 5);
    }
}
