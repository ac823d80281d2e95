//! The vsock device on the VMM's event loop: its queue kicks, the
//! housekeeping eventfd, the listening socket and every host stream.

use std::os::fd::RawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{error, warn};

use super::device::{Vsock, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use super::unix::Registry;

/// `Events` data of each source; host streams use [`STREAM`].
const HOUSEKEEPING: u32 = 3;
const LISTENER: u32 = 4;
const STREAM: u32 = 5;
const TIMER: u32 = 6;

struct Ops<'a, 'b>(&'a mut EventOps<'b>);

fn set(read: bool, write: bool) -> EventSet {
    let mut s = EventSet::empty();
    if read {
        s |= EventSet::IN;
    }
    if write {
        s |= EventSet::OUT;
    }
    s
}

impl Registry for Ops<'_, '_> {
    fn add(&mut self, fd: RawFd, read: bool, write: bool) {
        if let Err(e) = self.0.add(Events::with_data_raw(fd, STREAM, set(read, write))) {
            error!("virtio-vsock: cannot watch socket {fd}: {e}");
        }
    }
    fn modify(&mut self, fd: RawFd, read: bool, write: bool) {
        if let Err(e) = self.0.modify(Events::with_data_raw(fd, STREAM, set(read, write))) {
            error!("virtio-vsock: cannot change the watch on socket {fd}: {e}");
        }
    }
    fn remove(&mut self, fd: RawFd) {
        if let Err(e) = self.0.remove(Events::with_data_raw(fd, STREAM, EventSet::empty())) {
            warn!("virtio-vsock: cannot stop watching socket {fd}: {e}");
        }
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        for (i, e) in self.queue_events.iter().enumerate() {
            // i < 3.
            if let Err(err) = ops.add(Events::with_data(e, i as u32, EventSet::IN)) {
                error!("virtio-vsock: cannot register queue {i}'s eventfd: {err}");
            }
        }
        if let Err(e) = ops.add(Events::with_data(&self.housekeeping, HOUSEKEEPING, EventSet::IN)) {
            error!("virtio-vsock: cannot register the housekeeping eventfd: {e}");
        }
        if let Err(e) = ops.add(Events::with_data(&self.timer, TIMER, EventSet::IN)) {
            error!("virtio-vsock: cannot register the connect timer: {e}");
        }
        let fd = self.muxer.listener_fd();
        if let Err(e) = ops.add(Events::with_data_raw(fd, LISTENER, EventSet::IN)) {
            error!("virtio-vsock: cannot watch the listening socket: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let kick = |evt: &vmm_sys_util::eventfd::EventFd| {
            // EAGAIN: already consumed.
            let _ = evt.read();
        };
        match events.data() {
            d if d == RX_QUEUE as u32 || d == TX_QUEUE as u32 || d == EVENT_QUEUE as u32 => {
                kick(&self.queue_events[d as usize]);
                if self.active.is_none() {
                    self.muxer.metrics.kicks_before_activation += 1;
                    return;
                }
                match d as usize {
                    RX_QUEUE => self.muxer.metrics.rx_queue_event_count += 1,
                    TX_QUEUE => {
                        self.muxer.metrics.tx_queue_event_count += 1;
                        self.process_tx();
                    }
                    _ => self.process_event_queue(),
                }
            }
            // A reset dropped connections: `sync` below closes their sockets.
            HOUSEKEEPING => kick(&self.housekeeping),
            LISTENER => self.muxer.accept(),
            TIMER => {
                // Readable: the read returns the tick count without blocking.
                let _ = self.timer.wait();
                self.muxer.expire_connects(std::time::Instant::now());
            }
            STREAM => {
                let ev = events.event_set();
                self.muxer.on_stream_event(
                    events.fd(),
                    ev.contains(EventSet::IN),
                    ev.contains(EventSet::OUT),
                    ev.intersects(EventSet::HANG_UP | EventSet::ERROR | EventSet::READ_HANG_UP),
                );
            }
            other => warn!("virtio-vsock: event for unknown source {other}"),
        }
        self.process_rx();
        self.process_event_queue();
        self.muxer.sync(&mut Ops(ops));
    }
}
