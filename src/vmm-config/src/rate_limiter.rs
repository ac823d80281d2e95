//! `rate_limiter`, `rx_rate_limiter`, `tx_rate_limiter`: Firecracker's
//! token buckets (a bandwidth bucket in bytes and an operations bucket),
//! on drives and network interfaces. The device side (the buckets that
//! count and the timer that resumes a throttled queue) is
//! `virtio_devices::rate_limiter`.
//!
//! On drives, network interfaces and the entropy device. A bucket of
//! `size` 0 or `refill_time` 0 limits nothing, as in Firecracker; a limiter
//! without buckets is reported as `null`.

use serde::{Deserialize, Serialize};

/// One token bucket: at most `size` tokens, refilled at `size` per
/// `refill_time` ms; `one_time_burst` extra tokens that are spent first and
/// never refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    pub size: u64,
    #[serde(default)]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill an empty bucket.
    pub refill_time: u64,
}

impl TokenBucket {
    /// Whether the bucket limits anything (Firecracker ignores a bucket of
    /// size 0 or refill time 0).
    pub fn limits(&self) -> bool {
        self.size != 0 && self.refill_time != 0
    }
}

/// A bandwidth (bytes) and an operations bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    #[serde(default)]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default)]
    pub ops: Option<TokenBucket>,
}

impl RateLimiter {
    /// True when the limiter limits nothing (no bucket).
    pub fn is_unlimited(&self) -> bool {
        self.bandwidth.is_none() && self.ops.is_none()
    }

    /// `current` changed by a PATCH's `update`, as Firecracker applies it: a
    /// bucket given replaces the current one (one of size or refill time 0
    /// removes it), a bucket left out or `null` keeps it. `None` when no
    /// bucket is left.
    pub fn patched(current: Option<RateLimiter>, update: Option<RateLimiter>) -> Option<RateLimiter> {
        let cur = current.unwrap_or_default();
        let Some(up) = update else { return current };
        let pick = |now: Option<TokenBucket>, new: Option<TokenBucket>| match new {
            Some(b) if b.limits() => Some(b),
            Some(_) => None,
            None => now,
        };
        let out = RateLimiter { bandwidth: pick(cur.bandwidth, up.bandwidth), ops: pick(cur.ops, up.ops) };
        (!out.is_unlimited()).then_some(out)
    }
}

/// Deserialize a limiter, `None` when it limits nothing (as Firecracker
/// reports a limiter with null buckets: `null`).
pub(crate) fn none_if_unlimited<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<RateLimiter>, D::Error> {
    let limiter: Option<RateLimiter> = Deserialize::deserialize(d)?;
    Ok(limiter.filter(|l| !l.is_unlimited()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, refill_time: u64) -> Option<TokenBucket> {
        Some(TokenBucket { size, one_time_burst: None, refill_time })
    }

    #[test]
    fn null_buckets_are_no_limiter() {
        let none: RateLimiter = serde_json::from_str(r#"{"bandwidth":null,"ops":null}"#).unwrap();
        assert!(none.is_unlimited());
        assert!(serde_json::from_str::<RateLimiter>(r#"{"bandwidth":{"size":1}}"#).is_err());
    }

    #[test]
    fn a_patch_replaces_the_buckets_it_names_and_keeps_the_others() {
        let cur = Some(RateLimiter { bandwidth: bucket(1000, 100), ops: bucket(10, 100) });
        assert_eq!(RateLimiter::patched(cur, None), cur);
        let up = RateLimiter { bandwidth: bucket(2000, 50), ops: None };
        assert_eq!(
            RateLimiter::patched(cur, Some(up)),
            Some(RateLimiter { bandwidth: bucket(2000, 50), ops: bucket(10, 100) })
        );
        let off = RateLimiter { bandwidth: bucket(0, 100), ops: bucket(5, 0) };
        assert_eq!(RateLimiter::patched(cur, Some(off)), None);
        assert_eq!(RateLimiter::patched(None, Some(up)), Some(up));
    }
}
