//! Host stdin → guest serial input. Bytes the UART FIFO can't take yet wait in
//! a bounded buffer; stdin is not read while that buffer is full.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use crate::devices::legacy::serial::{ConsoleOut, SerialDevice};
use vmm_config::sync::lock_unpoisoned;

const PENDING_LIMIT: usize = 4096;

pub struct StdinInput {
    serial: Arc<Mutex<SerialDevice<ConsoleOut>>>,
    pending: Vec<u8>,
    watching: bool,
}

impl StdinInput {
    pub fn new(serial: Arc<Mutex<SerialDevice<ConsoleOut>>>) -> Self {
        StdinInput { serial, pending: Vec::new(), watching: false }
    }

    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = lock_unpoisoned(&self.serial).enqueue_input(&self.pending);
        self.pending.drain(..n);
    }
}

impl MutEventSubscriber for StdinInput {
    fn init(&mut self, ops: &mut EventOps) {
        // A closed or non-pollable stdin (e.g. /dev/null, a file) is simply not watched.
        let stdin = std::io::stdin();
        if ops.add(Events::new(&stdin, EventSet::IN)).is_ok() {
            self.watching = true;
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.flush_pending();
        let stdin = std::io::stdin();
        if events.event_set().intersects(EventSet::HANG_UP | EventSet::ERROR)
            && !events.event_set().contains(EventSet::IN)
        {
            let _ = ops.remove(Events::new(&stdin, EventSet::IN));
            self.watching = false;
            return;
        }
        let room = PENDING_LIMIT - self.pending.len();
        if room == 0 {
            return;
        }
        let mut buf = vec![0u8; room];
        match stdin.lock().read(&mut buf) {
            Ok(0) => {
                // EOF: stop watching so a closed stdin doesn't spin the loop.
                let _ = ops.remove(Events::new(&stdin.as_raw_fd(), EventSet::IN));
                self.watching = false;
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.flush_pending();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("stdin: {e}; console input disabled");
                let _ = ops.remove(Events::new(&stdin, EventSet::IN));
                self.watching = false;
            }
        }
    }
}
