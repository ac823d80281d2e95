//! A software 82576 SR-IOV virtual function and the part of its physical
//! function's driver the VF talks to, for the [`Igbvf`] driver's tests.
//!
//! The VF's queues are [`super::igb_hw`]'s queue 0 (the VF's queue
//! registers sit at the same offsets); this model adds what a VF has of its
//! own: VTCTRL.RST (a VF reset: its queues stop, the PF disables its RX/TX
//! until the VF asks again), the mailbox (V2PMAILBOX with its read-to-clear
//! bits and 16 words of VMBMEM) and a PF that answers like Linux's igb:
//! VF_RESET gets ACK + the admin-assigned MAC (NACK without one) and turns
//! the VF's RX/TX on, SET_MULTICAST/SET_PROMISC/SET_LPE are applied and
//! acknowledged, anything before VF_RESET is refused. The test drives the PF:
//! a PF reset ([`VfPf::pf_reset_begin`]/[`VfPf::pf_reset_end`]) stops the
//! VF's queues, forgets their registers and holds RSTI until it ends with
//! RSTD and a ping without clear-to-send, as the PF driver does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::igb_hw::{igb_hw_model, IgbHw, IgbHwRegs};
use crate::dma::IovaAllocator;
use crate::driver::{DriverError, RegisterAccess};
use crate::e1000_common::regs::{RAH0, RAH_AV, RAL0, RCTL, RCTL_BAM, RCTL_EN, RCTL_MPE, RCTL_SECRC, TCTL, TCTL_EN};
use crate::e1000_common::NicConfig;
use crate::igb::regs::RLPML;
use crate::igbvf::regs::*;
use crate::igbvf::Igbvf;
use vmm_config::sync::lock_unpoisoned as lock;

/// The PF side's state.
#[derive(Default)]
struct Pf {
    /// The admin-assigned MAC (`None`: the PF NACKs VF_RESET).
    mac: Option<[u8; 6]>,
    /// What V2PMAILBOX shows the VF.
    v2p: u32,
    mem: [u32; MBX_WORDS],
    /// The VF completed VF_RESET since the last (PF or VF) reset.
    cts: bool,
    /// The PF is in reset: it answers nothing.
    in_reset: bool,
    /// The PF takes no messages at all (its netdev is down).
    deaf: bool,
    /// Answer every message with this word 0 instead (a PF out of protocol).
    garbage: Option<u32>,
    refuse_promisc: bool,
    /// Word 0 of every message the VF posted.
    messages: Vec<u32>,
    vf_resets: u64,
}

/// The VF's BAR0: the mailbox and VTCTRL here, the rest the queue model's.
#[derive(Clone)]
pub struct VfRegs {
    hw: IgbHwRegs,
    pf: Arc<Mutex<Pf>>,
    mbx_irq: Arc<EventFd>,
}

/// The test's handle: the wire (the queue model) and the PF.
#[derive(Clone)]
pub struct VfPf {
    pub hw: IgbHw,
    regs: VfRegs,
}

impl VfRegs {
    /// The PF answers the message in VMBMEM (it read it: PFACK).
    fn pf_receive(&self, p: &mut Pf) {
        p.v2p |= MBX_PFACK;
        if p.in_reset || p.deaf {
            return;
        }
        let msg = p.mem;
        p.messages.push(msg[0]);
        let id = msg[0] & MSG_ID_MASK;
        let mut reply = [msg[0] & MSG_ID_MASK, 0, 0];
        if let Some(g) = p.garbage {
            reply[0] = g;
        } else if id == VF_RESET {
            match p.mac {
                Some(m) => {
                    reply[0] |= MSGTYPE_ACK | MSGTYPE_CTS;
                    reply[1] = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
                    reply[2] = u32::from(u16::from_le_bytes([m[4], m[5]]));
                    // The PF's part: the VF's address in the filter, its RX
                    // and TX on (VFRE/VFTE; here the one pool's RCTL/TCTL).
                    self.hw.write32(RAL0, reply[1]);
                    self.hw.write32(RAH0, reply[2] | RAH_AV);
                    let rctl = self.hw.read32(RCTL);
                    self.hw.write32(RCTL, rctl | RCTL_EN | RCTL_BAM | RCTL_SECRC);
                    self.hw.write32(TCTL, self.hw.read32(TCTL) | TCTL_EN);
                    self.hw.write32(STATUS, self.hw.read32(STATUS) | STATUS_LU);
                    p.cts = true;
                }
                None => reply[0] |= MSGTYPE_NACK,
            }
        } else if !p.cts {
            reply[0] |= MSGTYPE_NACK;
        } else {
            let ok = match id {
                VF_SET_MULTICAST => true,
                VF_SET_PROMISC if !p.refuse_promisc => {
                    if msg[0] & VF_SET_PROMISC_MULTICAST != 0 {
                        self.hw.write32(RCTL, self.hw.read32(RCTL) | RCTL_MPE);
                    }
                    true
                }
                VF_SET_LPE => {
                    self.hw.write32(RLPML, msg[1]);
                    true
                }
                _ => false,
            };
            reply[0] |= if ok { MSGTYPE_ACK | MSGTYPE_CTS } else { MSGTYPE_NACK | MSGTYPE_CTS };
        }
        p.mem[..3].copy_from_slice(&reply);
        p.v2p |= MBX_PFSTS;
        let _ = self.mbx_irq.write(1);
    }

    /// VTCTRL.RST: the VF's queues stop; the PF turns its RX/TX off until
    /// the VF sends VF_RESET again.
    fn vf_reset(&self, p: &mut Pf) {
        for q in [RXDCTL0, TXDCTL0] {
            let v = self.hw.read32(q);
            self.hw.write32(q, v & !(RXDCTL_ENABLE | TXDCTL_ENABLE));
        }
        self.hw.write32(RCTL, 0);
        self.hw.write32(TCTL, 0);
        // The VF's interrupt registers reset too.
        self.hw.write32(VTEIMS, 0);
        p.cts = false;
        p.vf_resets += 1;
    }
}

impl RegisterAccess for VfRegs {
    fn read32(&self, off: u32) -> u32 {
        match off {
            V2PMAILBOX => {
                let mut p = lock(&self.pf);
                let v = p.v2p;
                p.v2p &= !(MBX_PFSTS | MBX_PFACK | MBX_RSTD);
                v
            }
            o if (VMBMEM..VMBMEM + 4 * MBX_WORDS as u32).contains(&o) => {
                lock(&self.pf).mem[((o - VMBMEM) / 4) as usize]
            }
            // VTCTRL does not keep RST (nor anything else in this model).
            CTRL => 0,
            _ => self.hw.read32(off),
        }
    }

    fn write32(&self, off: u32, v: u32) {
        match off {
            V2PMAILBOX => {
                let mut p = lock(&self.pf);
                if v & MBX_VFU != 0 {
                    p.v2p |= MBX_VFU;
                } else {
                    p.v2p &= !MBX_VFU;
                }
                if v & MBX_REQ != 0 {
                    self.pf_receive(&mut p);
                }
            }
            o if (VMBMEM..VMBMEM + 4 * MBX_WORDS as u32).contains(&o) => {
                lock(&self.pf).mem[((o - VMBMEM) / 4) as usize] = v;
            }
            CTRL => {
                if v & CTRL_RST != 0 {
                    let mut p = lock(&self.pf);
                    self.vf_reset(&mut p);
                }
            }
            // Interrupt mask set/clear (VTEIMS reads back the mask).
            VTEIMS => self.hw.write32(VTEIMS, self.hw.read32(VTEIMS) | v),
            VTEIMC => self.hw.write32(VTEIMS, self.hw.read32(VTEIMS) & !v),
            _ => self.hw.write32(off, v),
        }
    }
}

impl VfPf {
    /// The admin assigns another MAC (it takes effect at the next VF_RESET).
    pub fn set_mac(&self, mac: Option<[u8; 6]>) {
        lock(&self.regs.pf).mac = mac;
    }
    /// The PF stops answering (its netdev is down).
    pub fn set_deaf(&self, deaf: bool) {
        lock(&self.regs.pf).deaf = deaf;
    }
    /// The PF answers every message with `word0`.
    pub fn set_garbage(&self, word0: Option<u32>) {
        lock(&self.regs.pf).garbage = word0;
    }
    pub fn set_refuse_promisc(&self, refuse: bool) {
        lock(&self.regs.pf).refuse_promisc = refuse;
    }
    /// Word 0 of every message the VF sent.
    pub fn messages(&self) -> Vec<u32> {
        lock(&self.regs.pf).messages.clone()
    }
    pub fn vf_resets(&self) -> u64 {
        lock(&self.regs.pf).vf_resets
    }
    /// The PF resets (all of the NIC's queue state goes, the VF's queues
    /// stop at once) and holds RSTI until [`VfPf::pf_reset_end`].
    pub fn pf_reset_begin(&self) {
        let mut p = lock(&self.regs.pf);
        self.regs.hw.write32(CTRL, CTRL_RST);
        p.in_reset = true;
        p.cts = false;
        p.v2p |= MBX_RSTI;
        let _ = self.regs.mbx_irq.write(1);
    }
    /// The PF is back: RSTD, link up, and a ping without clear-to-send.
    pub fn pf_reset_end(&self) {
        let mut p = lock(&self.regs.pf);
        p.in_reset = false;
        p.v2p = (p.v2p & !MBX_RSTI) | MBX_RSTD | MBX_PFSTS;
        p.mem[0] = PF_CONTROL_MSG;
        self.regs.hw.write32(STATUS, STATUS_LU);
        let _ = self.regs.mbx_irq.write(1);
    }
    /// The PF pings the VF without clear-to-send, as Linux's igb does first
    /// when it resets (then it turns the VF's RX/TX off and resets the
    /// NIC): until then the VF's queues still run.
    pub fn pf_ping_without_cts(&self) {
        let mut p = lock(&self.regs.pf);
        p.cts = false;
        p.mem[0] = PF_CONTROL_MSG;
        p.v2p |= MBX_PFSTS;
        let _ = self.regs.mbx_irq.write(1);
    }
    /// The PF's reset ends with RSTD only: no message, no interrupt (what
    /// the hardware does when the PF driver sets CTRL_EXT.PFRSTD).
    pub fn pf_reset_end_quiet(&self) {
        let mut p = lock(&self.regs.pf);
        p.in_reset = false;
        p.v2p = (p.v2p & !MBX_RSTI) | MBX_RSTD;
        self.regs.hw.write32(STATUS, STATUS_LU);
    }
    /// What V2PMAILBOX would show now (without clearing anything).
    pub fn mailbox(&self) -> u32 {
        lock(&self.regs.pf).v2p
    }
}

/// The product's igbvf driver over a fresh VF model whose PF assigned `mac`
/// (`None`: no MAC), with all three MSI-X vectors wired (queues on 0, the
/// mailbox on 2).
pub fn igbvf_on_model(guest: &GuestMemoryMmap, mac: Option<[u8; 6]>) -> Result<(Igbvf<VfRegs>, VfPf), DriverError> {
    let (vf, pf) = vf_model(guest, mac)?;
    let mut cfg = NicConfig::new([0x02, 0, 0, 0, 0, 1]);
    cfg.link_timeout = Duration::from_millis(100);
    let (mapper, irqs) = (pf.mapper.clone(), pf.irqs.clone());
    let mut d = Igbvf::new(vf, mapper, IovaAllocator::above(guest), cfg, irqs.len())?;
    d.set_model_irqs(irqs);
    Ok((d, pf.handle))
}

/// The parts of a VF model before a driver is put on it.
pub struct VfModelParts {
    pub handle: VfPf,
    pub mapper: Arc<dyn crate::dma::DmaMapper>,
    pub irqs: Vec<Arc<EventFd>>,
}

/// A VF model (BAR, PF handle, IOMMU, three interrupt eventfds) without a driver.
pub fn vf_model(guest: &GuestMemoryMmap, mac: Option<[u8; 6]>) -> Result<(VfRegs, VfModelParts), DriverError> {
    let (hw_regs, hw, mapper, irqs) = igb_hw_model(guest, VF_MSIX_VECTORS as usize)?;
    let mbx_irq = irqs[crate::igbvf::MAILBOX_VECTOR as usize].clone();
    let regs = VfRegs { hw: hw_regs, pf: Arc::new(Mutex::new(Pf { mac, ..Pf::default() })), mbx_irq };
    // The PF is up: its link is.
    regs.hw.write32(STATUS, STATUS_LU);
    let handle = VfPf { hw, regs: regs.clone() };
    Ok((regs, VfModelParts { handle, mapper, irqs }))
}
