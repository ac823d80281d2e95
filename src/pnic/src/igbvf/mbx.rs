//! The VF side of the 82576's PF/VF mailbox (datasheet 7.8.2.9): post a
//! message and wait for the PF's ACK, wait for the PF's reply and
//! acknowledge it. Everything the PF writes is untrusted: a reply is checked
//! for its id and ACK flag, and a PF that does not answer is a timeout, never
//! a hang or a panic.

use std::time::Duration;

use super::regs::*;
use crate::driver::{DriverError, RegisterAccess};
use crate::e1000_common::poll_until;

/// How long the VF waits for the PF to take or answer a message. Linux's
/// igbvf allows 2000 polls of 500 us once the PF is up; the PF is an
/// interrupt handler in the host kernel, which a loaded (or nested, emulated)
/// host can delay: a few seconds.
pub const MBX_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the VF waits for the PF to leave reset (RSTI) after a VF reset.
pub const PF_RESET_TIMEOUT: Duration = Duration::from_secs(1);
/// Tries to take the mailbox buffer (the PF may hold it for a moment).
const LOCK_TRIES: usize = 1000;
const LOCK_RETRY: Duration = Duration::from_millis(1);

/// Read V2PMAILBOX once. The read clears PFSTS/PFACK/RSTD; what it saw is
/// remembered in `seen` so that no event is lost between two polls.
pub fn read_status(regs: &impl RegisterAccess, seen: &mut u32) -> u32 {
    let v = regs.read32(V2PMAILBOX);
    if v == u32::MAX {
        // A vanished function reads all ones: not a mailbox event.
        return *seen;
    }
    *seen |= v & (MBX_PFSTS | MBX_PFACK | MBX_RSTD);
    v | *seen
}

/// Whether `bit` was seen (now or before); forgets it.
fn take(regs: &impl RegisterAccess, seen: &mut u32, bit: u32) -> bool {
    let v = read_status(regs, seen);
    *seen &= !bit;
    v & bit != 0
}

/// Take the buffer for the VF (VFU reads back set once the PF released it).
fn lock(regs: &impl RegisterAccess, seen: &mut u32) -> Result<(), DriverError> {
    let mut last = 0;
    for _ in 0..LOCK_TRIES {
        regs.write32(V2PMAILBOX, MBX_VFU);
        last = read_status(regs, seen);
        if last & MBX_VFU != 0 {
            return Ok(());
        }
        std::thread::sleep(LOCK_RETRY);
    }
    let status = regs.read32(STATUS);
    if last == 0 && status == 0 {
        // A live VF with bus mastering on reads STATUS.GIO_MASTER_ENABLE at
        // least: all zeros means nothing decodes the VF's BAR0.
        return Err(DriverError::Timeout(UNDECODED_BAR0));
    }
    Err(DriverError::Pf(format!(
        "kept the mailbox buffer: VFU does not read back set (V2PMAILBOX {last:#x}, VF STATUS {status:#x})"
    )))
}

/// What a VF whose BAR0 reads all zeros is waiting for. Seen on QEMU's
/// emulated 82576, which decodes only the low 32 bits of its 64-bit VF BARs:
/// a VF BAR the host placed above 4 GiB is backed by nothing.
pub const UNDECODED_BAR0: &str = "the VF's registers (BAR0 reads all zeros: its MMIO is not decoded; on QEMU's \
     emulated 82576 the VF BARs must lie below 4 GiB, docs/vfio-nic.md section 8)";

/// Post `msg` to the PF and wait until it took it (PFACK).
pub fn send(regs: &impl RegisterAccess, seen: &mut u32, msg: &[u32]) -> Result<(), DriverError> {
    let msg = &msg[..msg.len().min(MBX_WORDS)];
    lock(regs, seen)?;
    // A stale ACK or message from before must not pass for the answer.
    *seen &= !(MBX_PFACK | MBX_PFSTS);
    for (i, w) in msg.iter().enumerate() {
        regs.write32(VMBMEM + 4 * i as u32, *w);
    }
    // REQ without VFU: post and release the buffer.
    regs.write32(V2PMAILBOX, MBX_REQ);
    if !poll_until(MBX_TIMEOUT, || take(regs, seen, MBX_PFACK)) {
        return Err(DriverError::Timeout("the PF to acknowledge a mailbox message (is the PF's netdev up?)"));
    }
    Ok(())
}

/// Wait for the PF's message and read `out.len()` words of it.
pub fn receive(regs: &impl RegisterAccess, seen: &mut u32, out: &mut [u32]) -> Result<(), DriverError> {
    if !poll_until(MBX_TIMEOUT, || take(regs, seen, MBX_PFSTS)) {
        return Err(DriverError::Timeout("the PF's mailbox reply"));
    }
    read_posted(regs, seen, out)
}

/// Read the message the PF posted (PFSTS seen) and acknowledge it.
pub fn read_posted(regs: &impl RegisterAccess, seen: &mut u32, out: &mut [u32]) -> Result<(), DriverError> {
    lock(regs, seen)?;
    for (i, w) in out.iter_mut().take(MBX_WORDS).enumerate() {
        *w = regs.read32(VMBMEM + 4 * i as u32);
    }
    // ACK without VFU: acknowledge and release the buffer.
    regs.write32(V2PMAILBOX, MBX_ACK);
    Ok(())
}

/// Send `msg` and check the PF's reply: the same id with ACK. The reply's
/// first `reply.len()` words are left in `reply`.
pub fn request(
    regs: &impl RegisterAccess,
    seen: &mut u32,
    msg: &[u32],
    reply: &mut [u32],
    what: &'static str,
) -> Result<(), MbxError> {
    send(regs, seen, msg).map_err(MbxError::Driver)?;
    let mut first = [0u32; 1];
    let words: &mut [u32] = if reply.is_empty() { &mut first } else { reply };
    receive(regs, seen, words).map_err(MbxError::Driver)?;
    let w0 = words[0];
    let id = msg.first().copied().unwrap_or(0) & MSG_ID_MASK;
    if w0 & MSG_ID_MASK != id {
        return Err(MbxError::Unexpected { what, reply: w0 });
    }
    if w0 & MSGTYPE_ACK == 0 {
        return Err(MbxError::Nack { what, reply: w0 });
    }
    Ok(())
}

/// What went wrong in a mailbox request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MbxError {
    Driver(DriverError),
    /// The PF answered with another message than the one asked about.
    Unexpected {
        what: &'static str,
        reply: u32,
    },
    /// The PF refused.
    Nack {
        what: &'static str,
        reply: u32,
    },
}

impl MbxError {
    /// As a driver error.
    pub fn into_driver(self) -> DriverError {
        match self {
            MbxError::Driver(e) => e,
            MbxError::Unexpected { what, reply } => {
                DriverError::Pf(format!("answered {what} with message {reply:#010x}"))
            }
            MbxError::Nack { what, reply } => DriverError::Pf(format!("refused {what} (reply {reply:#010x})")),
        }
    }
}
