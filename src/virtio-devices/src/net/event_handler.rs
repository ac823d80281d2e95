//! The virtio-net device's event handling: which fds the event loop
//! watches (queue kicks, activation, the backend's fds) and what each event
//! runs. The work itself (the lent-queue passes, interrupts, link state) is
//! the device's ([`super::device`]).

use std::os::unix::io::{AsRawFd, RawFd};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{debug, error, warn};

use super::device::{Net, RX_QUEUE, TX_QUEUE};

/// Event tokens (`Events::data`) this device registers.
const EV_RX_QUEUE: u32 = 0;
const EV_TX_QUEUE: u32 = 1;
const EV_ACTIVATE: u32 = 2;
/// The RX and TX rate limiters' timers: a throttled queue may run again.
const EV_RX_RATE: u32 = 3;
const EV_TX_RATE: u32 = 4;
/// Backend fd `i` of `NetBackend::event_fds()` uses token `EV_BACKEND_BASE + i`.
const EV_BACKEND_BASE: u32 = 16;

/// Most refill/process rounds for one backend event while it is stalled.
const STALL_ROUNDS: usize = 8;

/// How the event loop watches one backend fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watch {
    /// Registered for EPOLLIN.
    On,
    /// Registered with an empty event set (not activated, or backend stalled).
    Paused,
    /// Removed from epoll after it reported an error/hang-up.
    Removed,
}

/// Whether `fd` still reports an error or hang-up (after its owner handled
/// the event).
fn still_broken(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: 0, revents: 0 };
    // SAFETY: poll reads and writes one pollfd that we own; a zero timeout
    // never blocks.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
}

impl Net {
    /// Runs the backend for fd `index`, collects completions and refills; if
    /// the backend stalled for lack of buffers and more were posted, runs it
    /// again (bounded).
    fn service_backend(&mut self, indices: &[usize]) {
        for round in 0..STALL_ROUNDS {
            if let Some(a) = self.active.as_ref() {
                for &i in indices {
                    self.backend.process_event(&a.mem, i);
                }
            }
            let posted = self.run_rx();
            self.run_tx();
            if !(self.backend.rx_stalled() && posted > 0) {
                break;
            }
            debug!("virtio-net {}: backend stalled, round {round}, posted {posted}", self.id);
        }
    }

    /// What the event loop does for a backend event, without the loop: the
    /// backend's work, one RX pass, one TX pass, the interrupt decision.
    /// For the fuzz targets (fuzz/), which drive the device directly.
    #[cfg(any(test, feature = "testing"))]
    pub fn service_for_test(&mut self) {
        let idx = self.backend_indices();
        self.service_backend(&idx);
        self.inject_mmds();
        self.signal_used();
    }

    fn backend_indices(&self) -> Vec<usize> {
        (0..self.backend_fds.len()).filter(|&i| self.watch[i] != Watch::Removed).collect()
    }

    fn set_watch(&mut self, ops: &mut EventOps, i: usize, want: Watch) {
        if self.watch[i] == want || self.watch[i] == Watch::Removed {
            return;
        }
        let fd = self.backend_fds[i];
        let data = EV_BACKEND_BASE + i as u32;
        let r = match want {
            Watch::On => ops.modify(Events::with_data_raw(fd, data, EventSet::IN)),
            Watch::Paused => ops.modify(Events::with_data_raw(fd, data, EventSet::empty())),
            Watch::Removed => ops.remove(Events::with_data_raw(fd, data, EventSet::empty())),
        };
        match r {
            Ok(()) => self.watch[i] = want,
            Err(e) => error!("virtio-net {}: cannot change watch of backend fd {fd}: {e}", self.id),
        }
    }

    /// Watch backend fds unless the backend is stalled or the device is not
    /// running.
    fn update_watch(&mut self, ops: &mut EventOps) {
        let stalled = self.active.is_some() && self.backend.rx_stalled();
        if stalled && !self.stalled {
            self.metrics.rx_stalls += 1;
        }
        self.stalled = stalled;
        let want = if self.active.is_some() && !stalled { Watch::On } else { Watch::Paused };
        for i in 0..self.backend_fds.len() {
            self.set_watch(ops, i, want);
        }
    }

    fn after_work(&mut self, ops: &mut EventOps) {
        // What the metadata service answered to frames this event took.
        self.inject_mmds();
        self.signal_used();
        self.check_link();
        self.update_watch(ops);
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        let mut add = |fd: RawFd, data: u32| {
            if let Err(e) = ops.add(Events::with_data_raw(fd, data, EventSet::IN)) {
                error!("virtio-net {}: cannot watch fd {fd}: {e}", self.id);
            }
        };
        add(self.queue_evts[RX_QUEUE].as_raw_fd(), EV_RX_QUEUE);
        add(self.queue_evts[TX_QUEUE].as_raw_fd(), EV_TX_QUEUE);
        add(self.activate_evt.as_raw_fd(), EV_ACTIVATE);
        add(self.rx_limiter.as_raw_fd(), EV_RX_RATE);
        add(self.tx_limiter.as_raw_fd(), EV_TX_RATE);
        for (i, &fd) in self.backend_fds.iter().enumerate() {
            add(fd, EV_BACKEND_BASE + i as u32);
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let data = events.data();
        let set = events.event_set();
        match data {
            EV_RX_QUEUE | EV_TX_QUEUE | EV_ACTIVATE => {
                let evt = match data {
                    EV_RX_QUEUE => &self.queue_evts[RX_QUEUE],
                    EV_TX_QUEUE => &self.queue_evts[TX_QUEUE],
                    _ => &self.activate_evt,
                };
                // Draining: EAGAIN just means another wakeup consumed it.
                let _ = evt.read();
                if self.active.is_none() {
                    return;
                }
                match data {
                    EV_RX_QUEUE => {
                        self.metrics.rx_queue_kicks += 1;
                        let posted = self.run_rx();
                        if self.stalled && posted > 0 {
                            let idx = self.backend_indices();
                            self.service_backend(&idx);
                        }
                    }
                    EV_TX_QUEUE => {
                        self.metrics.tx_queue_kicks += 1;
                        self.run_tx();
                    }
                    _ => {
                        // Just activated: post buffers, take pending frames
                        // from both sides.
                        let idx = self.backend_indices();
                        self.run_rx();
                        self.service_backend(&idx);
                        self.run_tx();
                    }
                }
            }
            EV_RX_RATE => {
                if self.rx_limiter.timer_event() && self.active.is_some() {
                    // Buffers again: post them, and let a backend that
                    // stalled for lack of them read what waited.
                    let posted = self.run_rx();
                    if self.stalled && posted > 0 {
                        let idx = self.backend_indices();
                        self.service_backend(&idx);
                    }
                }
            }
            EV_TX_RATE => {
                if self.tx_limiter.timer_event() {
                    self.run_tx();
                }
            }
            d if d >= EV_BACKEND_BASE && ((d - EV_BACKEND_BASE) as usize) < self.backend_fds.len() => {
                let i = (d - EV_BACKEND_BASE) as usize;
                self.metrics.backend_events += 1;
                let broken = set.intersects(EventSet::ERROR | EventSet::HANG_UP);
                if self.active.is_some() {
                    self.service_backend(&[i]);
                } else {
                    self.backend.discard_pending(i);
                    self.set_watch(ops, i, Watch::Paused);
                }
                if broken && still_broken(self.backend_fds[i]) {
                    // A tap whose interface was deleted polls as EPOLLERR
                    // forever: stop watching it (the backend marked the link
                    // down when its read failed). A transient error that the
                    // backend consumed (e.g. a netlink overrun) keeps it.
                    warn!(
                        "virtio-net {}: backend fd {} reported {:?}; no longer watched",
                        self.id, self.backend_fds[i], set
                    );
                    self.set_watch(ops, i, Watch::Removed);
                }
            }
            _ => warn!("virtio-net {}: unexpected event token {data}", self.id),
        }
        self.after_work(ops);
    }
}
