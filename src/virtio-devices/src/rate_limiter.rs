//! Token-bucket rate limiting of a device queue (Firecracker's model: a
//! bandwidth bucket in bytes and an operations bucket, each refilled
//! continuously at `size` tokens per `refill_time`).
//!
//! A device asks before it takes work from a queue ([`RateLimiter::consume`]:
//! a block request, a TX frame) or charges what already happened
//! ([`RateLimiter::charge`]: an RX frame the backend received into a buffer
//! it was given, which may leave a bucket in debt) and asks
//! [`RateLimiter::has_budget`] before it gives the backend more buffers.
//! When a bucket is short the limiter arms its timerfd for the moment the
//! bucket will have refilled enough and refuses everything until the device
//! handles that timer event ([`RateLimiter::timer_event`]) and retries: the
//! device stops taking from its queue meanwhile, it never drops work.

use std::os::unix::io::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

/// Nanoseconds per millisecond (`refill_time` is in ms).
const NS_PER_MS: u128 = 1_000_000;

/// One bucket, as the device counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    size: u64,
    /// Tokens spent before `budget`, never refilled.
    one_time_burst: u64,
    refill_ns: u128,
    /// Tokens available; negative after a [`TokenBucket::charge`] of more
    /// than there was (paid back by refills before anything else passes).
    budget: i128,
    /// When `budget` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; `None` when it limits nothing (size or refill time 0).
    pub fn new(size: u64, one_time_burst: u64, refill_time_ms: u64, now: Instant) -> Option<TokenBucket> {
        (size != 0 && refill_time_ms != 0).then(|| TokenBucket {
            size,
            one_time_burst,
            refill_ns: u128::from(refill_time_ms) * NS_PER_MS,
            budget: i128::from(size),
            last: now,
        })
    }

    /// Adds the tokens earned since the last update (at most up to `size`).
    /// Only whole tokens are added; the time of the fraction is kept.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let size = u128::from(self.size);
        let earned = elapsed * size / self.refill_ns;
        if earned == 0 {
            return;
        }
        let room = (i128::from(self.size) - self.budget).max(0) as u128;
        if earned >= room {
            self.budget = i128::from(self.size);
            self.last = now;
        } else {
            self.budget += earned as i128;
            // The time those tokens took (rounded down: at most a
            // nanosecond early per refill); the rest counts towards the next.
            let used_ns = earned * self.refill_ns / size;
            self.last += Duration::from_nanos(used_ns.min(u128::from(u64::MAX)) as u64);
        }
    }

    /// Tokens available now (burst included; negative in debt).
    pub fn available(&mut self, now: Instant) -> i128 {
        self.refill(now);
        self.budget + i128::from(self.one_time_burst)
    }

    /// Takes `n` tokens if there are that many. An `n` larger than the
    /// bucket passes once the bucket is full, leaving it in debt (so a
    /// request bigger than the bucket is slowed, never refused forever).
    pub fn try_consume(&mut self, n: u64, now: Instant) -> bool {
        let avail = self.available(now);
        let n_i = i128::from(n);
        let full = self.budget >= i128::from(self.size);
        if avail < n_i && !(n > self.size && full) {
            return false;
        }
        self.take(n);
        true
    }

    /// Takes `n` tokens whether or not they are there (what was already
    /// received): the bucket may go into debt.
    pub fn charge(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.take(n);
    }

    fn take(&mut self, n: u64) {
        let from_burst = n.min(self.one_time_burst);
        self.one_time_burst -= from_burst;
        self.budget -= i128::from(n - from_burst);
    }

    /// Undoes a [`TokenBucket::try_consume`] of `n` whose other bucket said
    /// no (back into the refilled budget, not the burst).
    fn give_back(&mut self, n: u64) {
        self.budget = (self.budget + i128::from(n)).min(i128::from(self.size));
    }

    /// How long until `n` tokens (at most a full bucket) are available.
    pub fn wait_for(&mut self, n: u64, now: Instant) -> Duration {
        let want = i128::from(n.min(self.size));
        let missing = want - self.available(now);
        if missing <= 0 {
            return Duration::ZERO;
        }
        let ns = (missing as u128 * self.refill_ns).div_ceil(u128::from(self.size));
        // Measured from the last refill, which may be a fraction behind now.
        let since = now.saturating_duration_since(self.last).as_nanos();
        Duration::from_nanos(ns.saturating_sub(since).max(1).min(u128::from(u64::MAX)) as u64)
    }
}

/// Why a limiter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the rate limiter's timerfd: {0}")]
pub struct RateLimiterError(#[source] std::io::Error);

/// A device queue's bandwidth and operations buckets and the timer that
/// ends a throttled period. Built without buckets it limits nothing (and
/// the device skips it on its per-frame path: [`RateLimiter::is_active`]);
/// [`RateLimiter::set`] changes the buckets at any time (a PATCH).
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    /// The timer is armed: everything is refused until its event.
    blocked: bool,
    /// Times a request found a bucket short and the queue was stopped.
    throttled: u64,
    /// Timer events handled (throttled periods that ended).
    timer_events: u64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bandwidth", &self.bandwidth)
            .field("ops", &self.ops)
            .field("blocked", &self.blocked)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter with the buckets of `cfg` (none when `None`).
    pub fn new(cfg: Option<&vmm_config::RateLimiter>) -> Result<RateLimiter, RateLimiterError> {
        let timer = TimerFd::new().map_err(|e| RateLimiterError(e.into()))?;
        // The event loop reads it only when epoll says it expired, but a
        // re-arm between the two must not block the loop.
        // SAFETY: fcntl on a descriptor we own; no memory is passed.
        let r = unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        if r < 0 {
            return Err(RateLimiterError(std::io::Error::last_os_error()));
        }
        let mut l = RateLimiter { bandwidth: None, ops: None, timer, blocked: false, throttled: 0, timer_events: 0 };
        l.set(cfg);
        Ok(l)
    }

    /// Replaces the buckets (full) with those of `cfg`. A throttled period in
    /// progress still ends with its timer event.
    pub fn set(&mut self, cfg: Option<&vmm_config::RateLimiter>) {
        let now = Instant::now();
        let bucket = |b: Option<vmm_config::TokenBucket>| {
            b.and_then(|b| TokenBucket::new(b.size, b.one_time_burst.unwrap_or(0), b.refill_time, now))
        };
        self.bandwidth = bucket(cfg.and_then(|c| c.bandwidth));
        self.ops = bucket(cfg.and_then(|c| c.ops));
    }

    /// Whether any bucket limits anything.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.bandwidth.is_some() || self.ops.is_some()
    }

    /// Whether the queue is stopped until the timer event.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Takes `bytes` from the bandwidth bucket and `ops` from the operations
    /// bucket, both or neither. `false` (the caller leaves the work in its
    /// queue) while throttled or when a bucket is short; the timer is then
    /// armed for when it will have enough.
    pub fn consume(&mut self, bytes: u64, ops: u64) -> bool {
        if self.blocked {
            return false;
        }
        let now = Instant::now();
        if let Some(b) = self.bandwidth.as_mut() {
            if !b.try_consume(bytes, now) {
                let wait = b.wait_for(bytes, now);
                self.block(wait);
                return false;
            }
        }
        if let Some(o) = self.ops.as_mut() {
            if !o.try_consume(ops, now) {
                let wait = o.wait_for(ops, now);
                if let Some(b) = self.bandwidth.as_mut() {
                    b.give_back(bytes);
                }
                self.block(wait);
                return false;
            }
        }
        true
    }

    /// Charges work already done (frames received): the buckets may go into
    /// debt, which [`RateLimiter::has_budget`] then reports.
    pub fn charge(&mut self, bytes: u64, ops: u64) {
        let now = Instant::now();
        if let Some(b) = self.bandwidth.as_mut() {
            b.charge(bytes, now);
        }
        if let Some(o) = self.ops.as_mut() {
            o.charge(ops, now);
        }
    }

    /// Whether every bucket has a token left (the device may hand out more
    /// buffers). `false` arms the timer for the first token.
    pub fn has_budget(&mut self) -> bool {
        if self.blocked {
            return false;
        }
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for b in [self.bandwidth.as_mut(), self.ops.as_mut()].into_iter().flatten() {
            if b.available(now) <= 0 {
                wait = wait.max(b.wait_for(1, now));
            }
        }
        if wait.is_zero() {
            return true;
        }
        self.block(wait);
        false
    }

    fn block(&mut self, wait: Duration) {
        self.throttled += 1;
        // The timer must fire even if the wait rounds to nothing.
        let wait = wait.max(Duration::from_micros(1));
        match self.timer.reset(wait, None) {
            Ok(()) => self.blocked = true,
            // Without a timer nothing would resume the queue: do not block.
            Err(e) => log::error!("rate limiter: cannot arm its timer ({e}); not throttling"),
        }
    }

    /// The timer expired: the queue may run again. Returns whether this was
    /// the limiter's expiry (not a stale wakeup).
    pub fn timer_event(&mut self) -> bool {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a u64 we own from the non-blocking
        // timerfd; EAGAIN (no expiry pending) leaves it untouched.
        let n =
            unsafe { libc::read(self.timer.as_raw_fd(), (&mut count as *mut u64).cast(), std::mem::size_of::<u64>()) };
        if n <= 0 || count == 0 {
            return false;
        }
        self.timer_events += 1;
        self.blocked = false;
        true
    }

    /// Times the queue was throttled (Firecracker's `*_rate_limiter_throttled`).
    pub fn throttled(&self) -> u64 {
        self.throttled
    }

    /// Throttled periods that ended (Firecracker's `*_rate_limiter_event_count`).
    pub fn timer_events(&self) -> u64 {
        self.timer_events
    }
}

impl AsRawFd for RateLimiter {
    /// The timerfd the event loop watches.
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_refills_at_size_per_refill_time() {
        let t0 = Instant::now();
        // 1000 tokens per 100 ms: 10 per ms.
        let mut b = TokenBucket::new(1000, 0, 100, t0).unwrap();
        assert!(b.try_consume(1000, t0));
        assert!(!b.try_consume(1, t0), "empty");
        assert_eq!(b.wait_for(100, t0), 10 * MS);
        assert!(!b.try_consume(100, t0 + 9 * MS));
        assert!(b.try_consume(100, t0 + 10 * MS));
        // Never more than the bucket holds, however long it waited.
        assert_eq!(b.available(t0 + 10_000 * MS), 1000);
        assert!(TokenBucket::new(0, 5, 100, t0).is_none() && TokenBucket::new(5, 0, 0, t0).is_none());
    }

    #[test]
    fn fractions_of_a_token_are_not_lost() {
        let t0 = Instant::now();
        // 3 tokens per 10 ms: one per 3.33 ms.
        let mut b = TokenBucket::new(3, 0, 10, t0).unwrap();
        b.charge(3, t0);
        let mut got = 0;
        for i in 1..=300u32 {
            if b.try_consume(1, t0 + Duration::from_micros(u64::from(i) * 100)) {
                got += 1;
            }
        }
        // 30 ms: 9 tokens, not fewer because each refill rounded down.
        assert_eq!(got, 9);
    }

    #[test]
    fn one_time_burst_is_spent_first_and_never_refilled() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 500, 100, t0).unwrap();
        assert_eq!(b.available(t0), 600);
        assert!(b.try_consume(550, t0));
        assert_eq!(b.available(t0), 50, "the burst went first, then 50 of the budget");
        assert_eq!(b.available(t0 + 1000 * MS), 100, "the budget refilled, the burst did not");
    }

    #[test]
    fn more_than_a_bucket_passes_when_full_and_leaves_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 0, 100, t0).unwrap();
        assert!(b.try_consume(250, t0), "a full bucket lets an oversized request through");
        assert_eq!(b.available(t0), -150);
        assert!(!b.try_consume(250, t0 + 100 * MS), "not before the debt is paid and the bucket full");
        assert_eq!(b.wait_for(1, t0 + 100 * MS), 51 * MS, "50 of debt and one token");
        assert!(b.try_consume(250, t0 + 250 * MS));
        b.charge(1000, t0 + 250 * MS);
        assert_eq!(b.available(t0 + 250 * MS), -1150);
    }

    fn limiter(bw: Option<(u64, u64)>, ops: Option<(u64, u64)>) -> RateLimiter {
        let tb = |(size, refill_time)| vmm_config::TokenBucket { size, one_time_burst: None, refill_time };
        RateLimiter::new(Some(&vmm_config::RateLimiter { bandwidth: bw.map(tb), ops: ops.map(tb) })).unwrap()
    }

    fn wait_readable(fd: RawFd, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd we own.
        unsafe { libc::poll(&mut p, 1, timeout_ms) == 1 }
    }

    #[test]
    fn a_short_bucket_blocks_until_the_timer_fires() {
        // 10 bytes per 2 s: the next byte comes 200 ms after the bucket empties,
        // long enough for the checks below on a loaded host.
        let mut l = limiter(Some((10, 2000)), Some((100, 1000)));
        assert!(l.is_active());
        // Taken first, so the refill is at least 200 ms after it.
        let emptied = Instant::now();
        assert!(l.consume(10, 1));
        assert!(!l.consume(1, 1), "bandwidth spent");
        assert!(l.is_blocked());
        assert_eq!(l.throttled(), 1);
        assert!(!l.consume(0, 0), "everything waits for the timer");
        let expired = l.timer_event();
        // Only a read that certainly came before the refill proves anything;
        // a host stalled past it may rightly see the expiry.
        if emptied.elapsed() < 150 * MS {
            assert!(!expired, "not expired yet");
        }
        assert!(expired || wait_readable(l.as_raw_fd(), 5000), "the timer fires after the refill time");
        assert!(expired || l.timer_event());
        assert!(!l.is_blocked());
        assert_eq!(l.timer_events(), 1);
        assert!(l.consume(1, 1));
    }

    #[test]
    fn both_buckets_or_neither() {
        let mut l = limiter(Some((1000, 1000)), Some((1, 1000)));
        assert!(l.consume(10, 1));
        assert!(!l.consume(10, 1), "no op left");
        // The bytes of the refused request went back.
        assert_eq!(l.bandwidth.as_mut().unwrap().available(Instant::now()), 990);
    }

    #[test]
    fn charges_go_into_debt_and_has_budget_waits_for_it() {
        let mut l = limiter(Some((1000, 20)), None);
        assert!(l.has_budget());
        l.charge(3000, 1);
        assert!(!l.has_budget(), "2000 bytes of debt");
        assert!(wait_readable(l.as_raw_fd(), 5000));
        assert!(l.timer_event());
        assert!(l.has_budget(), "the timer was armed for the debt to be paid");
    }

    #[test]
    fn without_buckets_it_limits_nothing_and_set_changes_them() {
        let mut l = RateLimiter::new(None).unwrap();
        assert!(!l.is_active());
        assert!(l.consume(u64::MAX, u64::MAX) && l.has_budget());
        l.set(Some(&vmm_config::RateLimiter {
            bandwidth: None,
            ops: Some(vmm_config::TokenBucket { size: 1, one_time_burst: None, refill_time: 1000 }),
        }));
        assert!(l.is_active());
        assert!(l.consume(0, 1) && !l.consume(0, 1));
        l.set(None);
        assert!(!l.is_active());
    }
}
