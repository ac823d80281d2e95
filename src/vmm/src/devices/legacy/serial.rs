//! COM1: a 16550 UART (vm-superio) whose output goes to shimvmm's stdout and
//! whose input comes from its stdin (the event loop feeds it).
//!
//! The console is the busiest device of a verbose boot: Linux's 8250 console
//! reads LSR and writes THR for every byte, two exits each. Two things keep
//! that cheap without changing what the guest sees:
//! * output is written to stdout a line at a time ([`LineBuffered`]), not with
//!   one `write` per byte;
//! * while no UART interrupt is enabled (IER = 0, no loopback), THR writes go
//!   through KVM's coalesced ring ([`ThrCoalescing`]) and cost no exit to user
//!   space; the vCPU threads replay them before handling any other exit, so
//!   every register read still sees them. With an interrupt enabled a THR
//!   write must raise THRE at once (the tty driver waits for it), so the port
//!   is unregistered again.

use std::io::Write;
use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, VmFd};
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;

/// Register offsets (16550, DLAB clear).
const THR: u8 = 0;
const IER: u8 = 1;
const LCR: u8 = 3;
const MCR: u8 = 4;
const LSR: u8 = 5;
const REGISTERS: u8 = 8;
const MCR_LOOP: u8 = 1 << 4;
/// Output held back waiting for a newline is written out at this size.
const LINE_BUFFER_MAX: usize = 4096;

/// Guest console output: unbuffered writes to fd 1 ([`LineBuffered`] batches).
pub struct ConsoleOut;

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        let n = out.write(buf)?;
        out.flush()?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// Passes output on a line at a time. [`SerialDevice`] flushes a partial line
/// whenever the guest touches the UART other than to send a byte (the 8250
/// driver restores IER after every console message and after every tty burst,
/// so prompts and echoed keys appear at once), and when the VM stops.
pub struct LineBuffered<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> LineBuffered<W> {
    pub fn new(inner: W) -> Self {
        LineBuffered { inner, buf: Vec::new() }
    }

    /// Writes out everything held, partial line included.
    pub fn write_out(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.emit(self.buf.len())
    }

    fn emit(&mut self, upto: usize) -> std::io::Result<()> {
        let r = self.inner.write_all(&self.buf[..upto]).and_then(|()| self.inner.flush());
        // Dropped on error too: a closed stdout must not make the buffer grow.
        self.buf.drain(..upto);
        r
    }
}

impl<W: Write> Write for LineBuffered<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= LINE_BUFFER_MAX {
            self.emit(self.buf.len())?;
        } else if bytes.contains(&b'\n') {
            let end = self.buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            self.emit(end)?;
        }
        Ok(bytes.len())
    }

    /// A no-op: vm-superio flushes after every byte, which is exactly what
    /// this type exists to avoid. [`LineBuffered::write_out`] is the real flush.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Turns coalescing of the THR port on and off.
pub trait ThrCoalescing: Send {
    fn set(&mut self, on: bool) -> std::io::Result<()>;
}

/// [`ThrCoalescing`] through KVM_(UN)REGISTER_COALESCED_MMIO on a port.
pub struct KvmThrCoalescing {
    pub vm: Arc<VmFd>,
    pub port: u16,
}

impl ThrCoalescing for KvmThrCoalescing {
    fn set(&mut self, on: bool) -> std::io::Result<()> {
        let addr = IoEventAddress::Pio(u64::from(self.port) + u64::from(THR));
        let r = if on { self.vm.register_coalesced_mmio(addr, 1) } else { self.vm.unregister_coalesced_mmio(addr, 1) };
        r.map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

/// Signals its eventfd when the guest has read the last byte of the receive
/// FIFO, so host input that did not fit can follow without waiting for more.
pub struct InputDrained(pub EventFd);

impl vm_superio::serial::SerialEvents for InputDrained {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        // A failed write means the counter is saturated: a wake-up is already pending.
        let _ = self.0.write(1);
    }
}

pub struct SerialDevice<W: Write + Send> {
    uart: Serial<EventFdTrigger, InputDrained, LineBuffered<W>>,
    coalescing: Option<Box<dyn ThrCoalescing>>,
    /// Whether the THR port is registered for coalescing right now.
    coalesced: bool,
}

impl<W: Write + Send> SerialDevice<W> {
    /// `input_drained` fires each time the guest empties the receive FIFO.
    pub fn new(irq: EventFdTrigger, input_drained: EventFd, out: W) -> Self {
        let uart = Serial::with_events(irq, InputDrained(input_drained), LineBuffered::new(out));
        SerialDevice { uart, coalescing: None, coalesced: false }
    }

    /// The eventfd that fires when the guest has emptied the receive FIFO.
    pub fn input_drained(&self) -> &EventFd {
        &self.uart.events().0
    }

    /// Lets THR writes be coalesced while no UART interrupt is enabled. The
    /// caller replays the ring into this device before every other exit.
    pub fn enable_coalescing(&mut self, c: Box<dyn ThrCoalescing>) {
        self.coalescing = Some(c);
        self.update_coalescing();
    }

    /// Whether THR writes currently bypass user space.
    pub fn is_coalescing(&self) -> bool {
        self.coalesced
    }

    fn update_coalescing(&mut self) {
        let Some(c) = self.coalescing.as_mut() else {
            return;
        };
        let st = self.uart.state();
        let want = st.interrupt_enable == 0 && st.modem_control & MCR_LOOP == 0;
        if want == self.coalesced {
            return;
        }
        match c.set(want) {
            Ok(()) => self.coalesced = want,
            Err(e) if want => {
                // Not retried on every later IER write: one warning, then plain exits.
                log::warn!("serial: cannot coalesce console writes ({e}); every byte exits");
                self.coalescing = None;
            }
            Err(e) => {
                // Still registered: THRE interrupts would wait for the next exit.
                log::error!("serial: cannot stop coalescing console writes ({e}); interrupt-driven output may lag");
            }
        }
    }

    /// Writes out any partial line (the VM stopped, or the guest paused output).
    pub fn flush_output(&mut self) {
        if let Err(e) = self.uart.writer_mut().write_out() {
            log::warn!("serial: console output lost: {e}");
        }
    }

    /// Queues host input for the guest; returns how many bytes the FIFO took.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(bytes.len());
        match self.uart.enqueue_raw_bytes(&bytes[..room]) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("serial: dropping console input: {e:?}");
                0
            }
        }
    }

    pub fn fifo_room(&self) -> usize {
        self.uart.fifo_capacity()
    }
}

impl<W: Write + Send> BusDevice for SerialDevice<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART has 8 byte-wide registers; other widths read as all-ones.
        match (u8::try_from(offset), data.len()) {
            (Ok(off), 1) if off < REGISTERS => {
                // LSR is polled before every byte sent; anything else ends a burst.
                if off != LSR {
                    self.flush_output();
                }
                data[0] = self.uart.read(off)
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), 1) = (u8::try_from(offset), data.len()) {
            if off < REGISTERS {
                if off != THR {
                    self.flush_output();
                }
                if let Err(e) = self.uart.write(off, data[0]) {
                    log::warn!("serial: write failed: {e:?}");
                }
                if matches!(off, IER | LCR | MCR) {
                    self.update_coalescing();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn serial(sink: &Sink) -> (SerialDevice<Sink>, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let drained = EventFd::new(EFD_NONBLOCK).unwrap();
        (SerialDevice::new(EventFdTrigger(irq.try_clone().unwrap()), drained, sink.clone()), irq)
    }

    fn send(s: &mut SerialDevice<Sink>, text: &[u8]) {
        let mut lsr = [0u8];
        for b in text {
            s.read(u64::from(LSR), &mut lsr);
            s.write(u64::from(THR), &[*b]);
        }
    }

    #[test]
    fn output_reaches_writer_a_line_at_a_time_and_input_reaches_guest() {
        let sink = Sink::default();
        let (mut s, irq) = serial(&sink);
        send(&mut s, b"hello\nwor");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n", "the partial line waits");
        send(&mut s, b"ld\n");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nworld\n");
        // Enable the "received data available" interrupt (IER bit 0), then feed input.
        s.write(u64::from(IER), &[0x01]);
        assert_eq!(s.enqueue_input(b"x"), 1);
        assert_eq!(irq.read().unwrap(), 1);
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_eq!(b[0], b'x');
        // Bad widths and offsets don't panic.
        let mut w = [0u8; 4];
        s.read(0, &mut w);
        assert_eq!(w, [0xff; 4]);
        s.write(100, &[1]);
    }

    #[test]
    fn input_longer_than_the_fifo_is_signalled_to_follow_once_the_guest_reads_it_all() {
        let sink = Sink::default();
        let (mut s, _irq) = serial(&sink);
        let line = [b'a'; 100];
        let taken = s.enqueue_input(&line);
        assert!(taken < line.len(), "the FIFO takes only part of a 100-byte line");
        assert!(s.input_drained().read().is_err(), "no drained signal while the FIFO holds input");
        let mut b = [0u8];
        for _ in 0..taken - 1 {
            s.read(0, &mut b);
        }
        assert!(s.input_drained().read().is_err(), "one byte still waits");
        s.read(0, &mut b);
        assert_eq!(s.input_drained().read().unwrap(), 1, "the last read signals the rest may follow");
        assert_eq!(s.enqueue_input(&line[taken..]), line.len() - taken);
    }

    #[test]
    fn a_partial_line_goes_out_when_the_guest_does_anything_but_send() {
        let sink = Sink::default();
        let (mut s, _irq) = serial(&sink);
        // A prompt: no newline, then the 8250 driver restores IER.
        send(&mut s, b"login: ");
        assert!(sink.0.lock().unwrap().is_empty());
        s.write(u64::from(IER), &[0]);
        assert_eq!(&*sink.0.lock().unwrap(), b"login: ");
        // Reading the receive buffer (a key was typed) flushes too; LSR polls do not.
        send(&mut s, b"r");
        let mut b = [0u8];
        s.read(u64::from(LSR), &mut b);
        assert_eq!(&*sink.0.lock().unwrap(), b"login: ");
        s.read(u64::from(THR), &mut b);
        assert_eq!(&*sink.0.lock().unwrap(), b"login: r");
        // And the VM stopping.
        send(&mut s, b"oot");
        s.flush_output();
        assert_eq!(&*sink.0.lock().unwrap(), b"login: root");
        // A long line without a newline is not held forever.
        send(&mut s, &vec![b'x'; LINE_BUFFER_MAX]);
        assert_eq!(sink.0.lock().unwrap().len(), 11 + LINE_BUFFER_MAX);
    }

    /// Records every coalescing change; fails when told to.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<bool>>>, Arc<Mutex<bool>>);
    impl ThrCoalescing for Recorder {
        fn set(&mut self, on: bool) -> std::io::Result<()> {
            if *self.1.lock().unwrap() {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.0.lock().unwrap().push(on);
            Ok(())
        }
    }

    #[test]
    fn thr_is_coalesced_only_while_no_interrupt_can_follow_a_write() {
        let sink = Sink::default();
        let (mut s, _irq) = serial(&sink);
        let rec = Recorder::default();
        s.enable_coalescing(Box::new(rec.clone()));
        assert!(s.is_coalescing(), "IER is 0 at reset");
        // The tty driver enables THRE interrupts: each THR write must exit.
        s.write(u64::from(IER), &[0x02]);
        assert!(!s.is_coalescing());
        s.write(u64::from(IER), &[0x01]);
        assert!(!s.is_coalescing(), "receive interrupts on: still not coalesced");
        s.write(u64::from(IER), &[0x00]);
        assert!(s.is_coalescing());
        // Loopback turns THR writes into received bytes: not coalesced either.
        s.write(u64::from(MCR), &[MCR_LOOP]);
        assert!(!s.is_coalescing());
        s.write(u64::from(MCR), &[0]);
        assert!(s.is_coalescing());
        // Writes that change nothing cause no (un)registration.
        s.write(u64::from(LCR), &[0x03]);
        s.write(u64::from(IER), &[0x00]);
        assert_eq!(*rec.0.lock().unwrap(), vec![true, false, true, false, true]);
        // KVM refusing to register leaves the port exiting normally.
        s.write(u64::from(IER), &[0x02]);
        *rec.1.lock().unwrap() = true;
        s.write(u64::from(IER), &[0x00]);
        assert!(!s.is_coalescing());
        // ... and it is not asked again.
        *rec.1.lock().unwrap() = false;
        s.write(u64::from(IER), &[0x02]);
        s.write(u64::from(IER), &[0x00]);
        assert!(!s.is_coalescing());
        assert_eq!(rec.0.lock().unwrap().len(), 6);
    }
}
