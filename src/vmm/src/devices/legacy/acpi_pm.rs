//! ACPI power management for a hardware-reduced ACPI guest: the sleep control
//! and sleep status registers (ACPI 6.5 §4.8.3.7/§4.8.3.8) that the FADT points
//! at, plus the FADT reset register sharing the sleep control byte.
//!
//! Linux powers off by evaluating `\_S5_` from the DSDT and writing
//! `(SLP_TYP << 2) | SLP_EN` to the sleep control register; it reboots (without
//! `reboot=k`) by writing the FADT `RESET_VALUE` to the reset register. Both end
//! the VM: this device signals an eventfd and the VMM's event loop exits.
//!
//! Register block (one byte each, I/O space, starting at the VMM's PM port):
//! ```text
//! offset 0  sleep control  W: bits 2..4 SLP_TYP, bit 5 SLP_EN; RESET_VALUE = reset   R: 0
//! offset 1  sleep status   W: bit 7 WAK_STS (write-1-to-clear, ignored)              R: 0
//! ```

use vmm_sys_util::eventfd::EventFd;

/// Offset of the sleep control register in the block.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
/// Offset of the sleep status register in the block.
pub const SLEEP_STATUS_OFFSET: u64 = 1;
/// Offset of the FADT reset register: it shares the sleep control byte, whose
/// bits 0..1 are reserved, so `RESET_VALUE` cannot be mistaken for a sleep request.
pub const RESET_REG_OFFSET: u64 = SLEEP_CONTROL_OFFSET;
/// Number of I/O ports the device occupies (the lead's bus range must cover them).
pub const PM_REGS_LEN: u64 = 2;

/// Sleep control register: sleep type field position and mask.
pub const SLP_TYP_SHIFT: u8 = 2;
pub const SLP_TYP_MASK: u8 = 0b111 << SLP_TYP_SHIFT;
/// Sleep control register: sleep enable (the write that starts the transition).
pub const SLP_EN: u8 = 1 << 5;
/// Sleep status register: wake status. Linux clears it before sleeping and then
/// polls for it; never setting it is right for S5, which does not return.
pub const WAK_STS: u8 = 1 << 7;

/// The SLP_TYP value the DSDT's `\_S5_` package advertises for soft-off.
pub const S5_SLP_TYP: u8 = 5;
/// The value the FADT tells the guest to write to the reset register.
pub const RESET_VALUE: u8 = 0x01;

/// What the guest asked for, for the VMM's exit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmRequest {
    /// SLP_EN with SLP_TYP = S5: soft power-off.
    PowerOff,
    /// RESET_VALUE written to the reset register.
    Reset,
}

/// The sleep control/status register block.
pub struct AcpiPmDevice {
    exit_evt: EventFd,
    /// Where reset requests go; `None` sends them to `exit_evt` (a reboot ends
    /// the VM, as in Firecracker).
    reset_evt: Option<EventFd>,
    request: Option<PmRequest>,
}

impl AcpiPmDevice {
    /// `exit_evt` is written when the guest powers off (and, unless
    /// `with_reset_evt` is used, when it resets).
    pub fn new(exit_evt: EventFd) -> Self {
        Self { exit_evt, reset_evt: None, request: None }
    }

    /// Deliver reset requests to a separate eventfd (for a VMM that reboots).
    pub fn with_reset_evt(mut self, reset_evt: EventFd) -> Self {
        self.reset_evt = Some(reset_evt);
        self
    }

    /// The last power request the guest made, if any.
    pub fn request(&self) -> Option<PmRequest> {
        self.request
    }

    /// Both registers read as 0: no wake event ever pending, nothing latched.
    pub fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    /// Handles each byte of an access as a write to the register at its offset,
    /// so a wider access starting at the block's base behaves like byte writes.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(SLEEP_CONTROL_OFFSET) => self.write_sleep_control(value),
                // WAK_STS is write-1-to-clear and never set: nothing to do.
                Some(SLEEP_STATUS_OFFSET) => {}
                _ => log::debug!("acpi_pm: write {value:#04x} past the register block ignored"),
            }
        }
    }

    fn write_sleep_control(&mut self, value: u8) {
        if value == RESET_VALUE {
            self.signal(PmRequest::Reset);
            return;
        }
        if value & SLP_EN == 0 {
            return;
        }
        let slp_typ = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
        if slp_typ == S5_SLP_TYP {
            self.signal(PmRequest::PowerOff);
        } else {
            // Only \_S5_ is in the DSDT, so a well-behaved guest never gets here.
            log::warn!("acpi_pm: guest requested unsupported sleep type {slp_typ}; ignored");
        }
    }

    fn signal(&mut self, request: PmRequest) {
        self.request = Some(request);
        let evt = match (request, &self.reset_evt) {
            (PmRequest::Reset, Some(reset_evt)) => reset_evt,
            _ => &self.exit_evt,
        };
        log::info!("acpi_pm: guest requested {request:?}");
        if let Err(err) = evt.write(1) {
            log::error!("acpi_pm: cannot signal {request:?} to the VMM: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn evt() -> EventFd {
        EventFd::new(EFD_NONBLOCK).unwrap()
    }

    /// The byte Linux's acpi_hw_extended_sleep() writes for S5.
    fn linux_s5_write() -> u8 {
        ((S5_SLP_TYP << SLP_TYP_SHIFT) & SLP_TYP_MASK) | SLP_EN
    }

    #[test]
    fn linux_poweroff_sequence_signals_exit() {
        let exit = evt();
        let mut dev = AcpiPmDevice::new(exit.try_clone().unwrap());
        // Linux first clears WAK_STS in the status register: no exit yet.
        dev.write(SLEEP_STATUS_OFFSET, &[WAK_STS]);
        assert!(exit.read().is_err(), "clearing WAK_STS must not power off");
        assert_eq!(dev.request(), None);
        dev.write(SLEEP_CONTROL_OFFSET, &[linux_s5_write()]);
        assert_eq!(linux_s5_write(), 0x34);
        assert_eq!(exit.read().unwrap(), 1);
        assert_eq!(dev.request(), Some(PmRequest::PowerOff));
    }

    #[test]
    fn sleep_type_without_enable_or_other_types_do_nothing() {
        let exit = evt();
        let mut dev = AcpiPmDevice::new(exit.try_clone().unwrap());
        // SLP_TYP = 5 but no SLP_EN.
        dev.write(SLEEP_CONTROL_OFFSET, &[S5_SLP_TYP << SLP_TYP_SHIFT]);
        // SLP_EN with S3's type (not advertised).
        dev.write(SLEEP_CONTROL_OFFSET, &[(3 << SLP_TYP_SHIFT) | SLP_EN]);
        // Reserved bits with SLP_EN but type 0.
        dev.write(SLEEP_CONTROL_OFFSET, &[SLP_EN | 0x02]);
        assert!(exit.read().is_err());
        assert_eq!(dev.request(), None);
    }

    #[test]
    fn registers_read_zero() {
        let mut dev = AcpiPmDevice::new(evt());
        let mut b = [0xffu8; 1];
        dev.read(SLEEP_CONTROL_OFFSET, &mut b);
        assert_eq!(b, [0]);
        b = [0xff];
        dev.write(SLEEP_STATUS_OFFSET, &[WAK_STS]);
        dev.read(SLEEP_STATUS_OFFSET, &mut b);
        assert_eq!(b, [0], "WAK_STS must never read as set");
        let mut w = [0xffu8; 2];
        dev.read(0, &mut w);
        assert_eq!(w, [0, 0]);
    }

    #[test]
    fn reset_goes_to_exit_evt_by_default_and_to_reset_evt_when_given() {
        let exit = evt();
        let mut dev = AcpiPmDevice::new(exit.try_clone().unwrap());
        dev.write(RESET_REG_OFFSET, &[RESET_VALUE]);
        assert_eq!(exit.read().unwrap(), 1);
        assert_eq!(dev.request(), Some(PmRequest::Reset));

        let exit = evt();
        let reset = evt();
        let mut dev = AcpiPmDevice::new(exit.try_clone().unwrap()).with_reset_evt(reset.try_clone().unwrap());
        dev.write(RESET_REG_OFFSET, &[RESET_VALUE]);
        assert_eq!(reset.read().unwrap(), 1);
        assert!(exit.read().is_err());
        dev.write(SLEEP_CONTROL_OFFSET, &[linux_s5_write()]);
        assert_eq!(exit.read().unwrap(), 1);
        assert!(reset.read().is_err());
    }

    #[test]
    fn wide_and_out_of_range_writes_are_handled_bytewise() {
        let exit = evt();
        let mut dev = AcpiPmDevice::new(exit.try_clone().unwrap());
        // A 2-byte write at the base: control gets the S5 byte, status WAK_STS.
        dev.write(0, &[linux_s5_write(), WAK_STS]);
        assert_eq!(exit.read().unwrap(), 1);
        // Offsets past the block, even near u64::MAX, are ignored without panicking.
        dev.write(PM_REGS_LEN, &[linux_s5_write()]);
        dev.write(u64::MAX, &[linux_s5_write(), linux_s5_write()]);
        dev.write(0, &[]);
        assert!(exit.read().is_err());
    }
}
