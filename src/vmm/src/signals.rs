//! SIGINT/SIGTERM become a clean stop: the signals are blocked in every thread
//! and read from a signalfd by the event loop.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use crate::exit::{ExitHandle, ExitReason};

const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

fn stop_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks SIGINT/SIGTERM in the calling thread (and every thread it spawns
/// afterwards). Call first thing in main.
pub fn block_stop_signals() -> std::io::Result<()> {
    let set = stop_sigset();
    // SAFETY: `set` is a valid, initialised signal set; old set not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

pub struct SignalHandler {
    fd: OwnedFd,
    exit: Arc<ExitHandle>,
}

impl SignalHandler {
    pub fn new(exit: Arc<ExitHandle>) -> std::io::Result<Self> {
        let set = stop_sigset();
        // SAFETY: valid signal set; -1 asks for a new fd, which we own on success.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor returned by signalfd.
        Ok(SignalHandler { fd: unsafe { OwnedFd::from_raw_fd(fd) }, exit })
    }
}

impl AsRawFd for SignalHandler {
    /// The signalfd (a paused event loop watches it to stay stoppable).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl MutEventSubscriber for SignalHandler {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.fd, EventSet::IN)) {
            log::error!("cannot watch signals: {e}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // SAFETY: signalfd_siginfo is plain data; reading exactly its size from
        // a signalfd is the documented protocol.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: the buffer is `size` bytes of writable memory we own.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), &mut info as *mut _ as *mut libc::c_void, size) };
        if n as usize == size {
            self.exit.request(ExitReason::Signal(info.ssi_signo as i32));
        }
    }
}
