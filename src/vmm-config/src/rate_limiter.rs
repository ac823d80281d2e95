//! `rate_limiter`, `rx_rate_limiter`, `tx_rate_limiter`: Firecracker's
//! token-bucket shape, accepted so that clients sending it keep working.
//!
//! shimvmm has no rate limiter yet: an absent or `null` limiter, or one whose
//! buckets are both `null`, is accepted (it limits nothing); a bucket is
//! refused with a message saying so, never silently ignored.

use serde::{Deserialize, Serialize};

use crate::validate::{Result, ValidationError};

/// One token bucket: `size` tokens, refilled over `refill_time` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    pub size: u64,
    #[serde(default)]
    pub one_time_burst: Option<u64>,
    pub refill_time: u64,
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
}

/// Deserialize a limiter, `None` when it limits nothing (as Firecracker
/// reports a limiter with null buckets: `null`).
pub(crate) fn none_if_unlimited<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<RateLimiter>, D::Error> {
    let limiter: Option<RateLimiter> = Deserialize::deserialize(d)?;
    Ok(limiter.filter(|l| !l.is_unlimited()))
}

/// Refuse a limiter with a bucket: shimvmm cannot enforce it yet.
pub(crate) fn check_rate_limiter(field: &str, limiter: &Option<RateLimiter>) -> Result {
    match limiter {
        Some(l) if !l.is_unlimited() => Err(ValidationError::new(
            field,
            "rate limiters are not supported by shimvmm yet; omit it or give null buckets",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_buckets_pass_and_buckets_are_refused() {
        let none: RateLimiter = serde_json::from_str(r#"{"bandwidth":null,"ops":null}"#).unwrap();
        assert!(check_rate_limiter("rate_limiter", &Some(none)).is_ok());
        assert!(check_rate_limiter("rate_limiter", &None).is_ok());
        let some: RateLimiter = serde_json::from_str(r#"{"bandwidth":{"size":1000,"refill_time":100}}"#).unwrap();
        let e = check_rate_limiter("rate_limiter", &Some(some)).unwrap_err().to_string();
        assert!(e.starts_with("rate_limiter: rate limiters are not supported by shimvmm yet"), "{e}");
        assert!(serde_json::from_str::<RateLimiter>(r#"{"bandwidth":{"size":1}}"#).is_err());
    }
}
