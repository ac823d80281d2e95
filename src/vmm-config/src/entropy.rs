//! `entropy`: a virtio-rng device fed from the host's getrandom(2)
//! (Firecracker's `PUT /entropy`).

use serde::{Deserialize, Serialize};

use crate::rate_limiter::{none_if_unlimited, RateLimiter};
use crate::validate::Result;

/// `PUT /entropy`, `"entropy"` in a config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entropy {
    /// Token buckets on the guest's requests (ops) and the bytes they ask for.
    #[serde(default, deserialize_with = "none_if_unlimited")]
    pub rate_limiter: Option<RateLimiter>,
}

impl Entropy {
    pub fn validate(&self) -> Result {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecrackers_bodies() {
        let e: Entropy = serde_json::from_str("{}").unwrap();
        assert!(e.validate().is_ok());
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"rate_limiter":null}"#);
        let e: Entropy = serde_json::from_str(r#"{"rate_limiter":{"bandwidth":null,"ops":null}}"#).unwrap();
        assert_eq!(e.rate_limiter, None);
        let e: Entropy = serde_json::from_str(r#"{"rate_limiter":{"ops":{"size":1,"refill_time":1}}}"#).unwrap();
        assert!(e.validate().is_ok());
        assert_eq!(e.rate_limiter.unwrap().ops.unwrap().size, 1);
        assert!(serde_json::from_str::<Entropy>(r#"{"x":1}"#).is_err());
    }
}
