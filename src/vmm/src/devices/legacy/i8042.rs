//! A minimal i8042 keyboard controller: enough for Linux to probe it, to reset
//! the machine (command 0xFE, `reboot=k`) and to receive Ctrl-Alt-Del.

use std::collections::VecDeque;

use vm_superio::Trigger;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;
use crate::exit::{ExitHandle, ExitReason};
use std::sync::Arc;

/// Register offsets from the device base (port 0x60).
const OFS_DATA: u64 = 0;
const OFS_STATUS: u64 = 4;

// Status register bits.
const SB_OUT_FULL: u8 = 0x01;
const SB_SYS_FLAG: u8 = 0x04;
const SB_LAST_WAS_CMD: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;

// Controller configuration byte ("CTR") bits.
const CB_KBD_INT: u8 = 0x01;
const CB_SYS_FLAG: u8 = 0x04;
const CB_KBD_DISABLE: u8 = 0x10;
const CB_AUX_DISABLE: u8 = 0x20;

// Controller commands (port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;

// Replies.
const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// AUX port test "clock line stuck low": tells Linux there is no mouse port.
const AUX_TEST_FAIL: u8 = 0x01;
const KBD_ACK: u8 = 0xfa;
const KBD_RESET_OK: u8 = 0xaa;
const KBD_CMD_RESET: u8 = 0xff;
const KBD_CMD_GET_ID: u8 = 0xf2;
const KBD_ID: [u8; 2] = [0xab, 0x83];

/// Scan-code set 2 for Ctrl (right), Alt, Delete; key releases are F0-prefixed.
const CTRL_ALT_DEL_PRESS: [u8; 5] = [0xe0, 0x14, 0x11, 0xe0, 0x71];
const CTRL_ALT_DEL_RELEASE: [u8; 8] = [0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xe0, 0xf0, 0x14];
const BUF_LIMIT: usize = 16;

pub struct I8042 {
    ctr: u8,
    status: u8,
    /// Command waiting for its data byte (0x60 write CTR, 0xD1 write output port).
    pending_cmd: Option<u8>,
    outp: u8,
    buf: VecDeque<u8>,
    kbd_irq: EventFdTrigger,
    exit: Arc<ExitHandle>,
}

impl I8042 {
    pub fn new(kbd_irq: EventFdTrigger, exit: Arc<ExitHandle>) -> Self {
        I8042 {
            ctr: CB_KBD_INT | CB_SYS_FLAG | CB_AUX_DISABLE,
            status: SB_SYS_FLAG | SB_KBD_ENABLED,
            pending_cmd: None,
            outp: 0,
            buf: VecDeque::new(),
            kbd_irq,
            exit,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.buf.len() < BUF_LIMIT {
            self.buf.push_back(byte);
        }
        self.update();
    }

    fn update(&mut self) {
        if self.buf.is_empty() {
            self.status &= !SB_OUT_FULL;
        } else {
            self.status |= SB_OUT_FULL;
            if self.ctr & CB_KBD_INT != 0 && self.ctr & CB_KBD_DISABLE == 0 {
                if let Err(e) = self.kbd_irq.trigger() {
                    log::warn!("i8042: cannot raise the keyboard interrupt: {e}");
                }
            }
        }
    }

    /// Sends Ctrl-Alt-Del to the guest (the API's SendCtrlAltDel).
    pub fn send_ctrl_alt_del(&mut self) {
        for b in CTRL_ALT_DEL_PRESS.iter().chain(CTRL_ALT_DEL_RELEASE.iter()) {
            if self.buf.len() < BUF_LIMIT {
                self.buf.push_back(*b);
            }
        }
        self.update();
    }

    fn command(&mut self, cmd: u8) {
        self.status |= SB_LAST_WAS_CMD;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTP => self.pending_cmd = Some(cmd),
            CMD_READ_OUTP => self.push(self.outp),
            CMD_AUX_DISABLE => self.ctr |= CB_AUX_DISABLE,
            CMD_AUX_ENABLE => self.ctr &= !CB_AUX_DISABLE,
            CMD_AUX_TEST => self.push(AUX_TEST_FAIL),
            CMD_SELF_TEST => self.push(SELF_TEST_OK),
            CMD_KBD_TEST => self.push(PORT_TEST_OK),
            CMD_KBD_DISABLE => self.ctr |= CB_KBD_DISABLE,
            CMD_KBD_ENABLE => {
                self.ctr &= !CB_KBD_DISABLE;
                self.update();
            }
            CMD_RESET_CPU => self.exit.request(ExitReason::GuestReset),
            other => log::debug!("i8042: ignoring controller command {other:#x}"),
        }
    }

    fn data(&mut self, byte: u8) {
        self.status &= !SB_LAST_WAS_CMD;
        match self.pending_cmd.take() {
            Some(CMD_WRITE_CTR) => {
                self.ctr = byte;
                self.update();
            }
            Some(_) => self.outp = byte,
            // A byte for the keyboard itself: acknowledge everything.
            None => {
                self.push(KBD_ACK);
                match byte {
                    KBD_CMD_RESET => self.push(KBD_RESET_OK),
                    KBD_CMD_GET_ID => KBD_ID.iter().for_each(|b| self.push(*b)),
                    _ => {}
                }
            }
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 {
            data.fill(0xff);
            return;
        }
        data[0] = match offset {
            OFS_STATUS => self.status,
            OFS_DATA => {
                let b = self.buf.pop_front().unwrap_or(0);
                self.update();
                b
            }
            _ => 0xff,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 {
            return;
        }
        match offset {
            OFS_STATUS => self.command(data[0]),
            OFS_DATA => self.data(data[0]),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn dev() -> (I8042, EventFd, Arc<ExitHandle>) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let exit = Arc::new(ExitHandle::new().unwrap());
        (I8042::new(EventFdTrigger(irq.try_clone().unwrap()), exit.clone()), irq, exit)
    }

    fn rd(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn probe_sequence() {
        let (mut d, _irq, _) = dev();
        d.write(OFS_STATUS, &[CMD_SELF_TEST]);
        assert_ne!(rd(&mut d, OFS_STATUS) & SB_OUT_FULL, 0);
        assert_eq!(rd(&mut d, OFS_DATA), SELF_TEST_OK);
        assert_eq!(rd(&mut d, OFS_STATUS) & SB_OUT_FULL, 0);
        d.write(OFS_STATUS, &[CMD_WRITE_CTR]);
        d.write(OFS_DATA, &[0x45]);
        d.write(OFS_STATUS, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, OFS_DATA), 0x45);
        d.write(OFS_DATA, &[KBD_CMD_RESET]);
        assert_eq!(rd(&mut d, OFS_DATA), KBD_ACK);
        assert_eq!(rd(&mut d, OFS_DATA), KBD_RESET_OK);
    }

    #[test]
    fn reset_requests_exit() {
        let (mut d, _irq, exit) = dev();
        d.write(OFS_STATUS, &[CMD_RESET_CPU]);
        assert_eq!(exit.reason(), Some(ExitReason::GuestReset));
    }

    #[test]
    fn ctrl_alt_del_raises_irq_with_scancodes() {
        let (mut d, irq, exit) = dev();
        d.send_ctrl_alt_del();
        assert!(irq.read().unwrap() >= 1);
        let got: Vec<u8> = (0..5).map(|_| rd(&mut d, OFS_DATA)).collect();
        assert_eq!(got, CTRL_ALT_DEL_PRESS);
        assert_eq!(exit.reason(), None);
        // Wrong widths are ignored.
        d.write(OFS_STATUS, &[CMD_RESET_CPU, 0]);
        assert_eq!(exit.reason(), None);
    }
}
