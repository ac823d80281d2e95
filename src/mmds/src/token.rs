//! Session tokens of MMDS version 2: a guest asks for one with
//! `PUT /latest/api/token` and a lifetime, then presents it on every GET.
//!
//! Tokens are random (getrandom(2)) and kept with their expiry in a bounded
//! table: a token is valid only if this table issued it and its lifetime has
//! not run out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Shortest and longest lifetime a guest may ask for (Firecracker's bounds).
pub const MIN_TOKEN_TTL_SECONDS: u32 = 1;
pub const MAX_TOKEN_TTL_SECONDS: u32 = 21600;

/// Random bytes in a token (shown as twice as many hex digits).
const TOKEN_BYTES: usize = 32;

/// Most live tokens kept: a guest asking for more makes the oldest ones
/// invalid rather than the VMM's memory grow.
pub const MAX_TOKENS: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "Invalid time to live value provided for token: {0}. Please provide a value between {MIN_TOKEN_TTL_SECONDS} and {MAX_TOKEN_TTL_SECONDS}."
    )]
    InvalidTtl(u32),
    #[error("cannot get random bytes for a token from the kernel: {0}")]
    Random(String),
}

/// Issues and checks session tokens.
#[derive(Debug, Default)]
pub struct TokenAuthority {
    /// Token → the instant it stops being valid.
    live: HashMap<String, Instant>,
}

impl TokenAuthority {
    /// A new token valid for `ttl_seconds` from `now`.
    pub fn issue(&mut self, ttl_seconds: u32, now: Instant) -> Result<String, TokenError> {
        if !(MIN_TOKEN_TTL_SECONDS..=MAX_TOKEN_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(TokenError::InvalidTtl(ttl_seconds));
        }
        self.live.retain(|_, expiry| *expiry > now);
        if self.live.len() >= MAX_TOKENS {
            if let Some(oldest) = self.live.iter().min_by_key(|(_, e)| **e).map(|(t, _)| t.clone()) {
                self.live.remove(&oldest);
            }
        }
        let token = random_hex(TOKEN_BYTES)?;
        self.live.insert(token.clone(), now + Duration::from_secs(u64::from(ttl_seconds)));
        Ok(token)
    }

    /// Whether `token` was issued here and is still valid at `now`.
    pub fn is_valid(&self, token: &str, now: Instant) -> bool {
        self.live.get(token).is_some_and(|expiry| *expiry > now)
    }

    /// How many tokens are kept (expired ones included until the next issue).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// `n` random bytes from getrandom(2), as lowercase hex.
fn random_hex(n: usize) -> Result<String, TokenError> {
    Ok(random_bytes(n)?.iter().map(|b| format!("{b:02x}")).collect())
}

/// `n` random bytes from getrandom(2).
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>, TokenError> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the kernel writes at most `n - filled` bytes into the rest
        // of `buf`, which is that long.
        let got = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(TokenError::Random(e.to_string()));
        }
        filled += got as usize;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_valid_until_their_ttl() {
        let mut ta = TokenAuthority::default();
        let t0 = Instant::now();
        let tok = ta.issue(2, t0).unwrap();
        assert_eq!(tok.len(), 2 * TOKEN_BYTES);
        assert!(ta.is_valid(&tok, t0));
        assert!(ta.is_valid(&tok, t0 + Duration::from_millis(1999)));
        assert!(!ta.is_valid(&tok, t0 + Duration::from_secs(2)));
        assert!(!ta.is_valid("not-a-token", t0));
        let other = ta.issue(MAX_TOKEN_TTL_SECONDS, t0).unwrap();
        assert_ne!(tok, other, "two tokens alike");
    }

    #[test]
    fn ttl_out_of_bounds_is_refused() {
        let mut ta = TokenAuthority::default();
        let now = Instant::now();
        assert_eq!(ta.issue(0, now), Err(TokenError::InvalidTtl(0)));
        assert_eq!(ta.issue(MAX_TOKEN_TTL_SECONDS + 1, now), Err(TokenError::InvalidTtl(21601)));
        assert!(ta.is_empty());
    }

    #[test]
    fn table_is_bounded_and_drops_expired() {
        let mut ta = TokenAuthority::default();
        let now = Instant::now();
        let first = ta.issue(1, now).unwrap();
        for _ in 0..MAX_TOKENS + 10 {
            ta.issue(100, now).unwrap();
        }
        assert!(ta.len() <= MAX_TOKENS);
        assert!(!ta.is_valid(&first, now), "the oldest token should have been dropped");
        // Expired ones go at the next issue.
        let later = now + Duration::from_secs(200);
        ta.issue(1, later).unwrap();
        assert_eq!(ta.len(), 1);
    }
}
