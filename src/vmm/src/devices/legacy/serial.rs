//! COM1: a 16550 UART (vm-superio) whose output goes to shimvmm's stdout and
//! whose input comes from its stdin (the event loop feeds it).

use std::io::Write;

use vm_superio::Serial;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;

/// Guest console output: unbuffered writes to fd 1.
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

pub struct SerialDevice<W: Write + Send> {
    uart: Serial<EventFdTrigger, vm_superio::serial::NoEvents, W>,
}

impl<W: Write + Send> SerialDevice<W> {
    pub fn new(irq: EventFdTrigger, out: W) -> Self {
        SerialDevice { uart: Serial::new(irq, out) }
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
            (Ok(off), 1) if off < 8 => data[0] = self.uart.read(off),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), 1) = (u8::try_from(offset), data.len()) {
            if off < 8 {
                if let Err(e) = self.uart.write(off, data[0]) {
                    log::warn!("serial: write failed: {e:?}");
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

    #[test]
    fn output_reaches_writer_and_input_reaches_guest() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let sink = Sink::default();
        let mut s = SerialDevice::new(EventFdTrigger(irq.try_clone().unwrap()), sink.clone());
        s.write(0, b"h");
        s.write(0, b"i");
        assert_eq!(&*sink.0.lock().unwrap(), b"hi");
        // Enable the "received data available" interrupt (IER bit 0), then feed input.
        s.write(1, &[0x01]);
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
}
