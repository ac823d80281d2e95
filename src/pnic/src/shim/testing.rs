//! Owned-buffer conveniences for tests and benchmarks (feature `testing`):
//! a buffer or frame at a time, completions into a list, without the
//! device's queues.

use virtio_devices::net::backend::{ChainRef, DropReason, RxBuffer, TxFrame, Used};
use virtio_devices::GuestMemory;

use super::ShimBackend;
use crate::driver::PnicDriver;

impl<D: PnicDriver> ShimBackend<D> {
    /// Post `buf` and make it visible to the NIC at once.
    pub fn post_rx(&mut self, _mem: &GuestMemory, buf: RxBuffer) -> Result<(), (RxBuffer, DropReason)> {
        let chain = ChainRef { head: buf.head, segs: &buf.segs, len: buf.len };
        let r = match chain.segs {
            [(gpa, len)] => self.post_one_segment(chain.head, *gpa, *len),
            _ => self.post_checked(chain),
        };
        self.flush_rx_posted();
        r.map_err(|reason| (buf, reason))
    }

    /// [`Self::post_rx`] without the tail write (a run of buffers, ended by
    /// [`Self::flush_rx`]).
    pub fn post_rx_chain(&mut self, chain: ChainRef<'_>) -> Result<(), DropReason> {
        match chain.segs {
            [(gpa, len)] => self.post_one_segment(chain.head, *gpa, *len),
            _ => self.post_checked(chain),
        }
    }

    /// Make the buffers posted since the last flush visible to the NIC.
    pub fn flush_rx(&mut self) {
        self.flush_rx_posted();
    }

    /// Completed RX buffers, in order, header already written.
    pub fn reap_rx(&mut self, _mem: &GuestMemory, out: &mut Vec<Used>) {
        self.reap_rx_into(|u| out.push(u));
    }

    /// How many more RX buffers the shim takes now.
    pub fn rx_room_now(&self) -> usize {
        self.rx_room()
    }

    /// Send `frame` at once (a batch of one): `Ok(false)`, in flight.
    pub fn send(&mut self, _mem: &GuestMemory, frame: TxFrame) -> Result<bool, DropReason> {
        let r = self.send_chain(ChainRef { head: frame.head, segs: &frame.segs, len: frame.len });
        self.flush_tx_queued();
        r
    }

    /// Start sending the frames queued since the last flush.
    pub fn flush_tx(&mut self) {
        self.flush_tx_queued();
    }

    /// TX frames that finished (sent or dropped), in order.
    pub fn reap_tx(&mut self, out: &mut Vec<Used>) {
        let mut take =
            |v: &mut Vec<(u16, Option<DropReason>)>| out.extend(v.drain(..).map(|(head, _)| Used { head, len: 0 }));
        take(&mut self.tx_returned);
        if !self.failed && self.started {
            self.reap_tx_completions(true);
            self.drain_backlog();
            self.flush_tx_queued();
            take(&mut self.tx_returned);
        }
    }
}
