//! User-space driver for the Intel 82576 virtual function (igbvf,
//! 8086:10ca): one RX and one TX queue with advanced descriptors, on one
//! SR-IOV VF whose physical function stays with the host's igb driver.
//!
//! The VF's queue registers are the 82576's queue 0 registers at the same
//! offsets, so the rings, posting and reaping are [`crate::e1000_common`]'s
//! (an [`E1000`] over the [`IgbVf82576`] family). What differs:
//!
//! - **Bring-up is a conversation with the PF** through the mailbox
//!   ([`mbx`]): after the VF reset (VTCTRL.RST) the VF waits until the PF is
//!   out of reset (RSTI), sends VF_RESET and gets back ACK + the MAC the host
//!   admin assigned (`ip link set PF vf N mac ...`), then asks for all
//!   multicast (SET_PROMISC, multicast only; a refusal is logged) and for
//!   the frame cap (SET_LPE, [`RX_MAX_FRAME`]). The VF has no receive address
//!   registers: the MAC filter, VLAN and anti-spoofing are the PF's. The
//!   NIC's per-buffer write bound is RLPML, which the PF programs from
//!   SET_LPE: the host's PF driver is trusted for that, as the host kernel is.
//! - **The PF may reset the VF at any time** (PF reset, admin change): the
//!   mailbox then shows RSTI/RSTD or the PF pings without clear-to-send.
//!   [`Igbvf`] recovers without losing a guest buffer: it stops both queues
//!   and waits until the NIC confirms (until then every buffer stays posted
//!   and nothing is handed back), hands out the RX buffers the NIC finished
//!   before the reset as ordinary completions, completes the TX frames (sent
//!   or lost on the wire, as a reset loses frames), redoes the handshake and
//!   posts the unfinished RX buffers again, same IOVA and cookie, into the
//!   fresh ring. A buffer is therefore either still the NIC's or handed back
//!   after the NIC stopped touching it, never both.
//! - MSI-X: the VF has three vectors; the queues use vector 0 and the
//!   mailbox vector 2 (QEMU's model delivers the mailbox on vector 1, so
//!   every vector but 0 is treated as "mailbox/other").

pub mod mbx;
pub mod regs;

use std::collections::VecDeque;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::bdf::Bdf;
use crate::dma::{DmaArea, DmaMapper, IovaAllocator};
use crate::driver::{
    DriverError, DriverLimits, PnicDriver, RegisterAccess, RxCompletion, RxRunError, TxCompletion, TxOffload,
    TxOffloadCaps,
};
use crate::e1000_common::driver::{self as family, Family, E1000};
use crate::e1000_common::moderation::Rate;
use crate::e1000_common::{self as common, poll_until, NicConfig, OpenError};
use crate::igb::{disable_queue, enable_queue, AdvancedDesc};
use crate::vfio::MmioRegs;
use mbx::MbxError;
use regs::*;

pub const RX_RING_SIZE: usize = 256;
pub const TX_RING_SIZE: usize = 256;
/// Frame cap asked of the PF (SET_LPE): as Linux's igbvf asks for a 1500-byte
/// MTU (1518 + a VLAN tag); the most the NIC writes into one RX buffer.
pub const RX_MAX_FRAME: u32 = 1522;
/// NIC packet buffer size (SRRCTL.BSIZEPACKET), in bytes.
pub const RX_BUF_SIZE: u32 = 2048;
pub const TX_MAX_FRAME: u32 = 1522;
pub const TX_MAX_SEGS: usize = 8;
/// MSI-X vector of the queues and of the mailbox.
pub const QUEUE_VECTOR: u32 = 0;
pub const MAILBOX_VECTOR: u32 = 2;
/// Raise interrupt causes by hand (used to wake the caller after recovery).
pub const VTEICS: u32 = 0x1520;
/// How often a pending recovery is retried without a sign from the PF (as
/// Linux's igbvf watchdog, 2 s there).
pub const RECOVERY_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a handshake the PF did not answer.
pub const RECOVERY_RETRY_MAX: Duration = Duration::from_secs(8);

/// What the 82576 VF does its own way (see the module documentation).
pub struct IgbVf82576;

/// The MAC in a VF_RESET reply: bytes 0..6 of words 1 and 2.
fn reply_mac(reply: &[u32; 3]) -> [u8; 6] {
    let (a, b) = (reply[1].to_le_bytes(), reply[2].to_le_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1]]
}

/// A usable station address: not multicast/broadcast, not all zero.
fn valid_unicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac.iter().any(|b| *b != 0)
}

/// The reset handshake and the VF's requests to the PF; returns the MAC the
/// PF assigned.
pub(crate) fn pf_handshake(regs: &impl RegisterAccess) -> Result<[u8; 6], DriverError> {
    let mut seen = 0;
    log::info!("igbvf: PF handshake (V2PMAILBOX {:#x}, STATUS {:#x})", regs.read32(V2PMAILBOX), regs.read32(STATUS));
    if !poll_until(mbx::PF_RESET_TIMEOUT, || mbx::read_status(regs, &mut seen) & MBX_RSTI == 0) {
        return Err(DriverError::Timeout("the PF to leave reset (mailbox RSTI); is the PF's netdev up?"));
    }
    // The reset-done event belongs to the reset being handled now.
    seen = 0;
    let mut reply = [0u32; 3];
    match mbx::request(regs, &mut seen, &[VF_RESET], &mut reply, "VF_RESET") {
        Ok(()) => {}
        Err(MbxError::Nack { .. }) => {
            return Err(DriverError::Pf(
                "assigned this VF no MAC address: set one on the host with `ip link set <PF> vf <N> mac <MAC>`".into(),
            ))
        }
        Err(e) => return Err(e.into_driver()),
    }
    log::info!("igbvf: VF_RESET answered {:#010x} {:#010x} {:#010x}", reply[0], reply[1], reply[2]);
    let mac = reply_mac(&reply);
    if !valid_unicast(&mac) {
        return Err(DriverError::Pf(format!(
            "assigned this VF the MAC {}, which is not a unicast address",
            fmt_mac(&mac)
        )));
    }
    // No multicast hashes; all multicast if the PF allows it (the shim's
    // contract: unicast to the MAC, broadcast, multicast).
    mbx::request(regs, &mut seen, &[VF_SET_MULTICAST], &mut [0], "SET_MULTICAST").map_err(MbxError::into_driver)?;
    match mbx::request(regs, &mut seen, &[VF_SET_PROMISC | VF_SET_PROMISC_MULTICAST], &mut [0], "SET_PROMISC") {
        Ok(()) => {}
        Err(MbxError::Nack { .. } | MbxError::Unexpected { .. }) => {
            log::warn!("igbvf: the PF refused all-multicast; only broadcast and unicast reach the guest")
        }
        Err(e) => return Err(e.into_driver()),
    }
    mbx::request(regs, &mut seen, &[VF_SET_LPE, RX_MAX_FRAME], &mut [0], "SET_LPE").map_err(MbxError::into_driver)?;
    Ok(mac)
}

pub(crate) fn fmt_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

impl Family for IgbVf82576 {
    type Desc = AdvancedDesc;
    const NAME: &'static str = "igbvf";
    const RX_RING_SIZE: usize = RX_RING_SIZE;
    const TX_RING_SIZE: usize = TX_RING_SIZE;
    const RX_MAX_FRAME: u32 = RX_MAX_FRAME;
    const TX_MAX_FRAME: u32 = TX_MAX_FRAME;
    const TX_MAX_SEGS: usize = TX_MAX_SEGS;
    /// A VF's queues take the same advanced context descriptors.
    const TX_OFFLOADS: TxOffloadCaps = crate::igb::TX_OFFLOADS;
    const MSIX_VECTORS: u32 = VF_MSIX_VECTORS;
    const QUEUE_EITR: Option<u32> = Some(VTEITR0);
    /// As Linux's igbvf: no second FLR at open (vfio-pci already reset the
    /// function when the device was opened); the VF reset (VTCTRL.RST) and
    /// the PF handshake are the reset.
    const VFIO_RESET: bool = false;
    /// VTCTRL.RST stops the VF's queues before the PF is asked anything.
    const RESET_STOPS_DMA_FIRST: bool = true;

    fn mask_irqs(regs: &impl RegisterAccess) {
        regs.write32(VTEIMC, VF_EICR_ALL);
    }

    fn configure<R: RegisterAccess>(d: &mut E1000<Self, R>) -> Result<(), DriverError> {
        // The interrupts first: a handshake the PF does not answer (it is
        // going down or still in reset) leaves the mailbox vector armed, so
        // the PF's next message wakes the recovery.
        if d.msix_vectors > 0 {
            d.regs.write32(VTIVAR0, (VTIVAR_VALID | QUEUE_VECTOR) | ((VTIVAR_VALID | QUEUE_VECTOR) << VTIVAR_TX_SHIFT));
            let mut mask = 1 << QUEUE_VECTOR;
            if d.msix_vectors > 1 {
                let misc = MAILBOX_VECTOR.min(d.msix_vectors as u32 - 1);
                d.regs.write32(VTIVAR_MISC, VTIVAR_VALID | misc);
                mask = VF_EICR_ALL & ((1 << d.msix_vectors) - 1);
            }
            // Moderated as the PF's queue vector (igb::Igb): one MSI per
            // batch, not per frame and per TX write-back; the rate follows
            // the traffic (e1000_common::moderation).
            d.regs.write32(VTEITR0, Rate::Latency.eitr());
            d.regs.write32(VTEIAC, mask);
            d.regs.write32(VTEIAM, 0);
            d.regs.write32(VTEIMS, mask);
        }
        d.mac = pf_handshake(&d.regs)?;
        d.regs.write32(RXDCTL0, 0);
        d.regs.write32(TXDCTL0, 0);
        common::program_rings(&d.regs, &d.rx_ring, &d.tx_ring);
        d.regs.write32(
            SRRCTL0,
            ((RX_BUF_SIZE / SRRCTL_BSIZEPKT_UNIT) << SRRCTL_BSIZEPKT_SHIFT)
                | SRRCTL_DESCTYPE_ADV_ONEBUF
                | SRRCTL_DROP_EN,
        );
        Ok(())
    }

    fn start<R: RegisterAccess>(d: &mut E1000<Self, R>) -> Result<(), DriverError> {
        common::zero_heads_and_tails(&d.regs);
        enable_queue(&d.regs, RXDCTL0, RXDCTL_ENABLE, "VF RXDCTL.ENABLE to read back set")?;
        enable_queue(&d.regs, TXDCTL0, TXDCTL_ENABLE, "VF TXDCTL.ENABLE to read back set")
    }

    fn stop<R: RegisterAccess>(d: &mut E1000<Self, R>) -> Result<(), DriverError> {
        let r1 = disable_queue(&d.regs, RXDCTL0, RXDCTL_ENABLE, "VF RXDCTL.ENABLE to read back clear");
        let r2 = disable_queue(&d.regs, TXDCTL0, TXDCTL_ENABLE, "VF TXDCTL.ENABLE to read back clear");
        r1.and(r2)
    }

    fn handle_irq<R: RegisterAccess>(d: &mut E1000<Self, R>, index: usize) -> Result<(), DriverError> {
        // Queue vector: EIAC cleared the cause. Others: clear what is left;
        // the mailbox itself is read by `Igbvf`.
        if index > 0 && d.regs.read32(VTEICR) == u32::MAX {
            d.check_alive()?;
        }
        Ok(())
    }
}

/// Open the VF at `bdf` through VFIO, map `guest` for DMA and bring it up.
/// Its MAC is the one the PF assigned ([`Igbvf::mac`]), whatever `cfg.mac` is.
pub fn open_vfio(bdf: Bdf, guest: &GuestMemoryMmap, cfg: NicConfig) -> Result<Igbvf<MmioRegs>, OpenError> {
    Ok(Igbvf::wrap(family::open_vfio::<IgbVf82576>(bdf, guest, cfg)?))
}

/// The 82576 VF driver: the e1000-family driver plus the PF's side of the
/// story (mailbox events, recovery from a PF-initiated reset).
pub struct Igbvf<R: RegisterAccess> {
    inner: E1000<IgbVf82576, R>,
    /// The IOVA posted in each RX ring slot (the ring keeps only cookies):
    /// what recovery posts again.
    rx_iovas: Vec<u64>,
    /// The length the caller vouched for at the last RX post.
    rx_len: u32,
    /// RX buffers the NIC finished before a VF reset, handed out by the next
    /// reap before the ring's own.
    rx_done: VecDeque<RxCompletion>,
    /// RX buffers the NIC held unfinished at a VF reset, to post again.
    rx_repost: Vec<(u64, u64)>,
    /// TX frames finished (or lost) at a VF reset.
    tx_done: VecDeque<u64>,
    /// Mailbox events read and not yet handled (PFSTS/PFACK/RSTD clear on read).
    mbx_seen: u32,
    /// The PF reset the VF and the queues are not back yet.
    recovering: bool,
    /// The queues ran when the reset hit: start them again after it.
    resume: bool,
    recoveries: u64,
    /// Ticks every [`RECOVERY_RETRY`] while a recovery is pending, as the
    /// last of [`PnicDriver::irq_fds`]: the PF ends its reset with RSTD,
    /// which raises no interrupt, and a PF that went down answers nothing
    /// until it is up again. `None` if no timer could be made (then only
    /// mailbox interrupts, link checks and starts retry).
    watchdog: Option<TimerFd>,
    /// The period the watchdog ticks at (`None`: disarmed).
    watchdog_armed: Option<Duration>,
    /// Handshakes in a row that failed (the retry period doubles, up to
    /// [`RECOVERY_RETRY_MAX`]).
    failed_tries: u32,
}

impl<R: RegisterAccess> Igbvf<R> {
    /// VF reset, PF handshake and static configuration; queues stay stopped
    /// until `start`. `msix_vectors` is how many MSI-X vectors are wired.
    pub fn new(
        regs: R,
        mapper: Arc<dyn DmaMapper>,
        iova: IovaAllocator,
        cfg: NicConfig,
        msix_vectors: usize,
    ) -> Result<Self, DriverError> {
        Ok(Self::wrap(E1000::new(regs, mapper, iova, cfg, msix_vectors)?))
    }

    fn wrap(inner: E1000<IgbVf82576, R>) -> Self {
        Igbvf {
            inner,
            rx_iovas: vec![0; RX_RING_SIZE],
            rx_len: RX_MAX_FRAME,
            rx_done: VecDeque::new(),
            rx_repost: Vec::new(),
            tx_done: VecDeque::new(),
            mbx_seen: 0,
            recovering: false,
            resume: false,
            recoveries: 0,
            watchdog: TimerFd::new()
                .map_err(|e| log::warn!("igbvf: no recovery timer ({e}); recovery waits for the PF's messages"))
                .ok(),
            watchdog_armed: None,
            failed_tries: 0,
        }
    }

    /// The watchdog's index in [`PnicDriver::irq_fds`].
    fn watchdog_index(&self) -> Option<usize> {
        self.watchdog.as_ref().map(|_| self.inner.irq_fds().len())
    }

    /// Arm the watchdog while a recovery is pending, disarm it otherwise.
    fn sync_watchdog(&mut self) {
        let want = self.recovering.then(|| (RECOVERY_RETRY * (1 << self.failed_tries.min(3))).min(RECOVERY_RETRY_MAX));
        if want == self.watchdog_armed {
            return;
        }
        if let Some(t) = self.watchdog.as_mut() {
            let r = match want {
                Some(p) => t.reset(p, Some(p)),
                None => t.clear(),
            };
            match r {
                Ok(()) => self.watchdog_armed = want,
                Err(e) => log::warn!("igbvf: recovery timer: {e}"),
            }
        }
    }

    /// Consume the watchdog's expirations, if any (never blocks).
    fn drain_watchdog(&mut self) {
        if let Some(t) = self.watchdog.as_mut() {
            let mut pfd = libc::pollfd { fd: t.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, zero timeout; poll only writes revents.
            let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
            if ready > 0 && pfd.revents & libc::POLLIN != 0 {
                let _ = t.wait();
            }
        }
    }

    /// See [`E1000::dma_mapper`].
    pub fn dma_mapper(&self) -> Arc<dyn DmaMapper> {
        self.inner.dma_mapper()
    }

    /// The MAC the PF assigned to this VF (from the last VF_RESET reply).
    pub fn mac(&self) -> [u8; 6] {
        self.inner.mac()
    }

    pub fn regs(&self) -> &R {
        self.inner.regs()
    }

    /// PF-initiated resets recovered from so far.
    pub fn recoveries(&self) -> u64 {
        self.recoveries
    }

    /// A PF-initiated reset is pending (queues down until it is handled).
    pub fn recovering(&self) -> bool {
        self.recovering
    }

    /// Wire the interrupts of a VF model (tests): vector `i` is `irqs[i]`.
    pub fn set_model_irqs(&mut self, irqs: Vec<Arc<EventFd>>) {
        self.inner.set_model_irqs(irqs);
    }

    /// Forget everything recovery kept (the caller forgets its buffers).
    fn forget_kept(&mut self) {
        self.rx_done.clear();
        self.rx_repost.clear();
        self.tx_done.clear();
        self.resume = false;
    }

    /// Read the mailbox: a reset (RSTI/RSTD) or a PF ping without
    /// clear-to-send means the PF lost the VF's state; recover then.
    pub fn poll_mailbox(&mut self) -> Result<(), DriverError> {
        let v = mbx::read_status(&self.inner.regs, &mut self.mbx_seen);
        if v & (MBX_RSTI | MBX_RSTD) != 0 {
            self.mbx_seen &= !MBX_RSTD;
            if !self.recovering {
                log::warn!("igbvf: the PF reset this VF (mailbox {v:#x}); recovering");
            }
            self.recovering = true;
        }
        if v & MBX_PFSTS != 0 {
            self.mbx_seen &= !MBX_PFSTS;
            let mut msg = [0u32; 1];
            mbx::read_posted(&self.inner.regs, &mut self.mbx_seen, &mut msg)?;
            let m = msg[0];
            if m & MSG_ID_MASK == PF_CONTROL_MSG && m & MSGTYPE_CTS == 0 {
                if !self.recovering {
                    log::warn!("igbvf: the PF is not clear to send (message {m:#010x}); resetting the VF");
                }
                self.recovering = true;
            }
        }
        // A late acknowledgement of an earlier message means nothing now.
        self.mbx_seen &= !MBX_PFACK;
        if self.recovering {
            if let Err(e) = self.recover() {
                log::warn!(
                    "igbvf: recovery not finished yet: {e}; retried at the PF's next message or the watchdog's tick"
                );
            }
        }
        self.sync_watchdog();
        Ok(())
    }

    /// Stop, harvest, reset, resume; see the module documentation. An error
    /// leaves the recovery pending (retried at the next mailbox event, link
    /// check or start) with every buffer still accounted for.
    fn recover(&mut self) -> Result<(), DriverError> {
        self.recovering = true;
        if self.inner.started {
            // Until the NIC confirms both queues stopped, nothing is taken
            // back: the buffers stay posted.
            IgbVf82576::stop(&mut self.inner)?;
            self.inner.started = false;
            self.resume = true;
            let done = &mut self.rx_done;
            self.inner.rx_ring.reap_each(|c| done.push_back(c));
            let mut cookies = Vec::new();
            self.inner.rx_ring.posted_cookies(|c| cookies.push(c));
            let mask = RX_RING_SIZE - 1;
            let first = (self.inner.rx_ring.tail() as usize).wrapping_sub(cookies.len()) & mask;
            for (k, c) in cookies.into_iter().enumerate() {
                self.rx_repost.push((self.rx_iovas[(first + k) & mask], c));
            }
            let tx_done = &mut self.tx_done;
            self.inner.tx_ring.reap_each(|c| tx_done.push_back(c.cookie));
            self.inner.tx_ring.posted_cookies(|c| tx_done.push_back(c));
            self.inner.rx_ring.reset();
            self.inner.tx_ring.reset();
        }
        // A PF still in reset answers nothing: come back at its next event
        // (RSTD, its ping) rather than block the event loop waiting.
        if mbx::read_status(&self.inner.regs, &mut self.mbx_seen) & MBX_RSTI != 0 {
            return Err(DriverError::Timeout("the PF to leave reset (mailbox RSTI)"));
        }
        // Nor does a PF that is down (its link with it): the handshake would
        // only wait out its timeout; the PF pings its VFs when the link is up.
        if self.inner.regs.read32(STATUS) & STATUS_LU == 0 {
            return Err(DriverError::Timeout("the PF's link (STATUS.LU) to come up"));
        }
        let old_mac = self.inner.mac;
        if let Err(e) = self.inner.reset() {
            // A PF that took the ping's path but answers nothing: each try
            // waits out the mailbox timeout, so the tries grow apart.
            self.failed_tries = self.failed_tries.saturating_add(1);
            return Err(e);
        }
        self.failed_tries = 0;
        self.mbx_seen = 0;
        if self.inner.mac != old_mac {
            log::error!(
                "igbvf: after the reset the PF assigned {} (was {}): the guest's MAC no longer matches the VF's",
                fmt_mac(&self.inner.mac),
                fmt_mac(&old_mac)
            );
        }
        if self.resume {
            self.inner.start()?;
            let repost = std::mem::take(&mut self.rx_repost);
            let mut it = repost.iter().copied();
            let (n, r) = self.post_rx_recorded(self.rx_len, || it.next());
            // The fresh ring holds every buffer the old one did (same size).
            self.rx_repost.extend(repost[n..].iter().copied());
            if let Err(e) = r {
                log::error!("igbvf: re-posting RX buffers after the reset: {}", e.error);
            }
            self.inner.flush_rx()?;
            self.resume = false;
            // Wake the caller for the completions kept across the reset.
            self.inner.regs.write32(VTEICS, 1 << QUEUE_VECTOR);
        }
        self.recovering = false;
        self.recoveries += 1;
        log::info!("igbvf: VF reset by the PF handled ({} so far); queues running again", self.recoveries);
        Ok(())
    }
}

impl<R: RegisterAccess> Igbvf<R> {
    /// Post as `post_rx_with`, remembering each buffer's IOVA by ring slot.
    #[inline(always)]
    fn post_rx_recorded<F: FnMut() -> Option<(u64, u64)>>(
        &mut self,
        len: u32,
        mut next: F,
    ) -> (usize, Result<(), RxRunError>) {
        self.rx_len = len;
        let mask = RX_RING_SIZE - 1;
        let mut slot = self.inner.rx_ring.tail() as usize;
        let iovas = &mut self.rx_iovas;
        self.inner.post_rx_with(len, || {
            let n = next();
            if let Some((iova, _)) = n {
                iovas[slot & mask] = iova;
                slot = slot.wrapping_add(1);
            }
            n
        })
    }
}

impl<R: RegisterAccess> PnicDriver for Igbvf<R> {
    fn name(&self) -> &'static str {
        IgbVf82576::NAME
    }

    fn limits(&self) -> DriverLimits {
        self.inner.limits()
    }

    fn start(&mut self) -> Result<(), DriverError> {
        if self.recovering {
            let r = self.recover();
            self.sync_watchdog();
            r?;
        }
        self.inner.start()
    }

    fn quiesce(&mut self) -> Result<(), DriverError> {
        self.forget_kept();
        self.inner.quiesce()
    }

    fn reset(&mut self) -> Result<(), DriverError> {
        self.forget_kept();
        let r = self.inner.reset();
        self.recovering = r.is_err();
        self.mbx_seen = 0;
        self.sync_watchdog();
        r
    }

    fn link_up(&mut self) -> Result<bool, DriverError> {
        self.poll_mailbox()?;
        Ok(!self.recovering && self.inner.link_up()?)
    }

    /// The VF's filter is the PF's: the only MAC it takes is the assigned one.
    fn set_mac_filter(&mut self, mac: [u8; 6]) -> Result<(), DriverError> {
        if mac != self.inner.mac {
            return Err(DriverError::Pf(format!(
                "assigned this VF the MAC {}, not {}; the guest's MAC must be the VF's (set it on the host with \
                 `ip link set <PF> vf <N> mac ...`, or give the guest none)",
                fmt_mac(&self.inner.mac),
                fmt_mac(&mac)
            )));
        }
        Ok(())
    }

    /// The MSI-X vectors' eventfds, then the recovery watchdog's timer.
    fn irq_fds(&self) -> Vec<RawFd> {
        let mut fds = self.inner.irq_fds();
        fds.extend(self.watchdog.as_ref().map(|t| t.as_raw_fd()));
        fds
    }

    fn handle_irq(&mut self, index: usize) -> Result<(), DriverError> {
        if Some(index) == self.watchdog_index() {
            self.drain_watchdog();
            return self.poll_mailbox();
        }
        self.inner.handle_irq(index)?;
        if index > 0 || self.inner.msix_vectors < 2 || self.recovering {
            self.poll_mailbox()?;
        }
        Ok(())
    }

    fn alloc_dma(&mut self, len: usize) -> Result<DmaArea, DriverError> {
        self.inner.alloc_dma(len)
    }

    #[inline(always)]
    fn rx_free(&self) -> usize {
        if self.recovering {
            0
        } else {
            self.inner.rx_free()
        }
    }

    #[inline(always)]
    fn post_rx_with<F: FnMut() -> Option<(u64, u64)>>(&mut self, len: u32, next: F) -> (usize, Result<(), RxRunError>) {
        if self.recovering {
            return (0, Err(RxRunError { refused: None, error: DriverError::Stopped }));
        }
        self.post_rx_recorded(len, next)
    }

    #[inline(always)]
    fn flush_rx(&mut self) -> Result<(), DriverError> {
        if self.recovering {
            return Ok(());
        }
        self.inner.flush_rx()
    }

    #[inline(always)]
    fn reap_rx_with<F: FnMut(RxCompletion)>(&mut self, mut f: F) -> Result<(), DriverError> {
        if !self.rx_done.is_empty() {
            self.rx_done.drain(..).for_each(&mut f);
        }
        self.inner.reap_rx_with(f)
    }

    fn rx_posted_with<F: FnMut(u64)>(&self, mut f: F) {
        self.rx_done.iter().for_each(|c| f(c.cookie));
        self.rx_repost.iter().for_each(|(_, c)| f(*c));
        self.inner.rx_posted_with(f)
    }

    #[inline(always)]
    fn tx_free(&self) -> usize {
        if self.recovering {
            0
        } else {
            self.inner.tx_free()
        }
    }

    #[inline(always)]
    fn queue_tx(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<(), DriverError> {
        if self.recovering {
            return Err(DriverError::Stopped);
        }
        self.inner.queue_tx(segs, cookie)
    }

    fn tx_offload_caps(&self) -> TxOffloadCaps {
        self.inner.tx_offload_caps()
    }

    fn irq_rate_changes(&self) -> Option<u64> {
        self.inner.irq_rate_changes()
    }

    #[inline(always)]
    fn queue_tx_offload(&mut self, segs: &[(u64, u32)], off: &TxOffload, cookie: u64) -> Result<(), DriverError> {
        if self.recovering {
            return Err(DriverError::Stopped);
        }
        self.inner.queue_tx_offload(segs, off, cookie)
    }

    #[inline(always)]
    fn flush_tx(&mut self) -> Result<(), DriverError> {
        if self.recovering {
            return Ok(());
        }
        self.inner.flush_tx()
    }

    #[inline(always)]
    fn reap_tx_with<F: FnMut(TxCompletion)>(&mut self, mut f: F) -> Result<(), DriverError> {
        while let Some(cookie) = self.tx_done.pop_front() {
            f(TxCompletion { cookie });
        }
        self.inner.reap_tx_with(f)
    }
}

#[cfg(test)]
mod tests;
