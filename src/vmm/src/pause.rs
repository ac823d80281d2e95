//! Pausing and resuming a running VM (Firecracker's `PATCH /vm`).
//!
//! A pause stops every vCPU and the event loop that runs the devices, and
//! returns only once all of them are parked:
//! - a vCPU in KVM_RUN is kicked out with a signal whose handler also sets
//!   the run structure's `immediate_exit` (see `vstate::vcpu`), so a kick
//!   that lands just before KVM_RUN is entered is not lost; the vCPU then
//!   parks at the top of its loop until the resume;
//! - the event loop is woken through an eventfd and parks after the round
//!   it is in, so no device takes from a queue or completes into one while
//!   the VM is paused. It still leaves its park for a pending stop signal or
//!   an exit request (the VMM must remain stoppable while paused).
//!
//! Hardware behind a zero-copy backend (the shim's NIC) keeps the RX
//! buffers it was given and may fill them while paused; the guest sees
//! them (used ring, interrupt) only after the resume.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::exit::ExitHandle;

/// How often parked threads look at the stop flag, and a pause re-kicks.
const PARK_POLL: Duration = Duration::from_millis(20);
const KICK_EVERY: Duration = Duration::from_millis(5);

/// Why a pause did not complete.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PauseError {
    #[error("the VM did not stop within {0:?} (a vCPU or the device loop did not park); it keeps running")]
    Timeout(Duration),
}

#[derive(Default)]
struct State {
    /// A pause was asked for and not resumed.
    paused: bool,
    /// The vCPU threads that run (registered by themselves), by pthread.
    vcpus: Vec<libc::pthread_t>,
    parked_vcpus: usize,
    /// The event loop is parked.
    loop_parked: bool,
    /// Pauses that completed (for tests and metrics).
    pauses: u64,
}

/// The pause state shared by the API (pause/resume), the vCPU threads and
/// the event loop.
pub struct PauseControl {
    /// `state.paused`, readable without the lock on the vCPU's fast path.
    requested: AtomicBool,
    state: Mutex<State>,
    cv: Condvar,
    /// Wakes the event loop so that it parks.
    wake_loop: EventFd,
}

impl PauseControl {
    pub fn new() -> std::io::Result<PauseControl> {
        // A kick must never find the signal's default action (termination).
        crate::vstate::vcpu::install_kick_handler();
        Ok(PauseControl {
            requested: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            wake_loop: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        vmm_config::sync::lock_unpoisoned(&self.state)
    }

    /// Whether the VM is paused (or being paused).
    pub fn is_paused(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Pauses completed so far.
    pub fn pauses(&self) -> u64 {
        self.lock().pauses
    }

    /// Stops the vCPUs and the event loop; returns once every running vCPU
    /// and the loop are parked. Pausing a paused VM does nothing. With
    /// `expect_loop` false (tests without an event loop) only vCPUs are
    /// waited for. On timeout the VM is resumed and runs on.
    pub fn pause(&self, timeout: Duration, expect_loop: bool) -> Result<(), PauseError> {
        let mut st = self.lock();
        if st.paused {
            return Ok(());
        }
        st.paused = true;
        self.requested.store(true, Ordering::Release);
        if let Err(e) = self.wake_loop.write(1) {
            log::warn!("pause: cannot wake the event loop: {e}");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if st.parked_vcpus == st.vcpus.len() && (st.loop_parked || !expect_loop) {
                st.pauses += 1;
                return Ok(());
            }
            if Instant::now() >= deadline {
                drop(st);
                self.resume();
                return Err(PauseError::Timeout(timeout));
            }
            for &t in &st.vcpus {
                crate::vstate::vcpu::kick(t);
            }
            st = self.cv.wait_timeout(st, KICK_EVERY).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Lets the vCPUs and the event loop run again. Resuming a running VM
    /// does nothing.
    pub fn resume(&self) {
        let mut st = self.lock();
        st.paused = false;
        self.requested.store(false, Ordering::Release);
        drop(st);
        self.cv.notify_all();
    }

    // ------------------------------------------------------------ vCPUs ---

    /// The calling vCPU thread runs: a pause kicks and waits for it.
    pub(crate) fn register_vcpu(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.lock().vcpus.push(me);
    }

    /// The calling vCPU thread is about to end: no kick may target it any
    /// more (it is removed under the lock the kicks are sent under).
    pub(crate) fn unregister_vcpu(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let mut st = self.lock();
        st.vcpus.retain(|&t| t != me);
        drop(st);
        self.cv.notify_all();
    }

    /// A vCPU's check before each KVM_RUN: parks while paused (until the
    /// resume, or `stop`).
    #[inline]
    pub(crate) fn park_vcpu_if_paused(&self, stop: &AtomicBool) {
        if !self.requested.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.lock();
        st.parked_vcpus += 1;
        self.cv.notify_all();
        while st.paused && !stop.load(Ordering::Acquire) {
            st = self.cv.wait_timeout(st, PARK_POLL).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
        st.parked_vcpus -= 1;
    }

    // ------------------------------------------------------- event loop ---

    /// The event loop's check after each round: parks while paused, and
    /// returns early (to run one round) when `exit` asks the VMM to stop or
    /// one of `urgent` (the stop-signal fd) is readable.
    pub(crate) fn park_loop_if_paused(&self, exit: &ExitHandle, urgent: &[RawFd]) {
        let _ = self.wake_loop.read();
        if !self.requested.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.lock();
        st.loop_parked = true;
        self.cv.notify_all();
        while st.paused && exit.reason().is_none() && !any_readable(urgent) {
            st = self.cv.wait_timeout(st, PARK_POLL).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
        st.loop_parked = false;
    }
}

impl AsRawFd for PauseControl {
    /// The eventfd that wakes the event loop for a pause.
    fn as_raw_fd(&self) -> RawFd {
        self.wake_loop.as_raw_fd()
    }
}

/// Whether any of `fds` is readable now.
fn any_readable(fds: &[RawFd]) -> bool {
    fds.iter().any(|&fd| {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one pollfd we own, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    })
}

/// Registers the pause eventfd with the event loop (its events only wake
/// the loop; the loop parks after the round).
pub(crate) struct PauseEvents(pub std::sync::Arc<PauseControl>);

impl event_manager::MutEventSubscriber for PauseEvents {
    fn init(&mut self, ops: &mut event_manager::EventOps) {
        let fd = self.0.as_raw_fd();
        if let Err(e) = ops.add(event_manager::Events::with_data_raw(fd, 0, event_manager::EventSet::IN)) {
            log::error!("cannot watch the pause eventfd: {e}");
        }
    }

    fn process(&mut self, _events: event_manager::Events, _ops: &mut event_manager::EventOps) {
        let _ = self.0.wake_loop.read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// A stand-in vCPU: counts its iterations, parks at the top of each.
    fn spawn_vcpu(pc: Arc<PauseControl>, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            pc.register_vcpu();
            while !stop.load(Ordering::Acquire) {
                pc.park_vcpu_if_paused(&stop);
                count.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            pc.unregister_vcpu();
        })
    }

    #[test]
    fn pause_parks_every_vcpu_and_resume_lets_them_run() {
        let pc = Arc::new(PauseControl::new().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Vec<_> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let threads: Vec<_> = counts.iter().map(|c| spawn_vcpu(pc.clone(), stop.clone(), c.clone())).collect();
        while counts.iter().any(|c| c.load(Ordering::Relaxed) == 0) {
            std::thread::sleep(Duration::from_millis(1));
        }
        pc.pause(Duration::from_secs(2), false).unwrap();
        assert!(pc.is_paused());
        let frozen: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        std::thread::sleep(Duration::from_millis(50));
        let later: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(frozen, later, "no vCPU ran while paused");
        pc.pause(Duration::from_secs(2), false).unwrap();
        assert_eq!(pc.pauses(), 1, "pausing a paused VM does nothing");
        pc.resume();
        std::thread::sleep(Duration::from_millis(50));
        assert!(counts.iter().zip(&later).all(|(c, &l)| c.load(Ordering::Relaxed) > l), "they ran again");
        // A stop ends parked threads too.
        pc.pause(Duration::from_secs(2), false).unwrap();
        stop.store(true, Ordering::Release);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_pause_without_its_event_loop_times_out_and_the_vm_runs_on() {
        let pc = PauseControl::new().unwrap();
        let e = pc.pause(Duration::from_millis(30), true).unwrap_err();
        assert_eq!(e, PauseError::Timeout(Duration::from_millis(30)));
        assert!(!pc.is_paused());
    }

    #[test]
    fn the_parked_loop_leaves_for_an_exit_request() {
        let pc = Arc::new(PauseControl::new().unwrap());
        let exit = Arc::new(ExitHandle::new().unwrap());
        let (pc2, exit2) = (pc.clone(), exit.clone());
        let t = std::thread::spawn(move || {
            while exit2.reason().is_none() {
                pc2.park_loop_if_paused(&exit2, &[]);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        pc.pause(Duration::from_secs(2), true).unwrap();
        assert!(!t.is_finished());
        exit.request(crate::exit::ExitReason::Stopped);
        t.join().unwrap();
    }
}
