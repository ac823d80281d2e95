//! Host stdin → guest serial input. Bytes the UART FIFO can't take yet wait in
//! a bounded buffer and follow when the guest empties the FIFO (the serial
//! device's input-drained eventfd); stdin is not watched while that buffer is
//! full, so a level-triggered stdin can't spin the loop.

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::legacy::serial::{ConsoleOut, SerialDevice};
use vmm_config::sync::lock_unpoisoned;

const PENDING_LIMIT: usize = 4096;

pub struct StdinInput {
    serial: Arc<Mutex<SerialDevice<ConsoleOut>>>,
    /// A clone of the serial device's input-drained eventfd.
    drained: EventFd,
    pending: Vec<u8>,
    /// stdin is registered with the event loop.
    watching: bool,
    /// stdin ended or failed: never watched again.
    closed: bool,
}

impl StdinInput {
    pub fn new(serial: Arc<Mutex<SerialDevice<ConsoleOut>>>) -> std::io::Result<Self> {
        let drained = lock_unpoisoned(&serial).input_drained().try_clone()?;
        Ok(StdinInput { serial, drained, pending: Vec::new(), watching: false, closed: false })
    }

    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = lock_unpoisoned(&self.serial).enqueue_input(&self.pending);
        self.pending.drain(..n);
    }

    fn stdin_fd() -> RawFd {
        std::io::stdin().as_raw_fd()
    }

    /// Watch stdin while there is room for what it brings, and not otherwise.
    fn update_watch(&mut self, ops: &mut EventOps) {
        let want = !self.closed && self.pending.len() < PENDING_LIMIT;
        if want == self.watching {
            return;
        }
        let ev = Events::new_raw(Self::stdin_fd(), EventSet::IN);
        let r = if want { ops.add(ev) } else { ops.remove(ev) };
        match r {
            Ok(()) => self.watching = want,
            // A non-pollable stdin (a file, /dev/null) is simply not watched.
            Err(_) if want => self.closed = true,
            Err(e) => log::warn!("stdin: cannot stop watching: {e:?}"),
        }
    }

    fn close(&mut self, ops: &mut EventOps) {
        self.closed = true;
        self.update_watch(ops);
    }

    fn read_stdin(&mut self, events: Events, ops: &mut EventOps) {
        if events.event_set().intersects(EventSet::HANG_UP | EventSet::ERROR)
            && !events.event_set().contains(EventSet::IN)
        {
            return self.close(ops);
        }
        let room = PENDING_LIMIT - self.pending.len();
        if room == 0 {
            return self.update_watch(ops);
        }
        let mut buf = vec![0u8; room];
        match std::io::stdin().lock().read(&mut buf) {
            // EOF: stop watching so a closed stdin doesn't spin the loop.
            Ok(0) => self.close(ops),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.flush_pending();
                self.update_watch(ops);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("stdin: {e}; console input disabled");
                self.close(ops);
            }
        }
    }
}

impl MutEventSubscriber for StdinInput {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.drained, EventSet::IN)) {
            log::warn!("stdin: cannot watch the serial FIFO ({e:?}); long pastes wait for more input");
        }
        self.update_watch(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.drained.as_raw_fd() {
            // Counter reset; a failure only means nothing was pending.
            let _ = self.drained.read();
            self.flush_pending();
            self.update_watch(ops);
        } else {
            self.read_stdin(events, ops);
        }
    }
}
