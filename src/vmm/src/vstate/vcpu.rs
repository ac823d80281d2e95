//! vCPUs: configuration for a direct 64-bit boot and the KVM_RUN loop that
//! dispatches port I/O and MMIO exits to the buses.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_msr_entry, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::coalesced::CoalescedRing;
use super::cpuid;
use super::regs;
use super::vm::Vm;
use crate::devices::bus::Bus;
use crate::exit::{ExitHandle, ExitReason};
use crate::pause::PauseControl;

// MSRs set at boot (only those KVM lists in KVM_GET_MSR_INDEX_LIST are set).
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_MEM_TYPE_WB: u64 = 6;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

// Local APIC registers and delivery modes (LVT LINT0 = ExtINT, LINT1 = NMI).
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_DELIVERY_MODE_SHIFT: u32 = 8;
const APIC_DELIVERY_MODE_MASK: u32 = 0x700;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot create vCPU {id}: {err}")]
    Create { id: u8, err: kvm_ioctls::Error },
    #[error("cannot configure vCPU {id} ({what}): {err}")]
    Configure { id: u8, what: &'static str, err: kvm_ioctls::Error },
    #[error("cannot spawn vCPU thread: {0}")]
    Spawn(std::io::Error),
}

pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    /// KVM's coalesced port writes, replayed before every exit is handled.
    ring: Option<Arc<CoalescedRing>>,
}

/// Replays the guest's coalesced port writes onto the port bus, so that the
/// exit about to be handled sees the device state the guest expects.
pub(crate) fn replay(ring: Option<&CoalescedRing>, pio: &Bus) {
    if let Some(r) = ring {
        r.drain(|port, data| {
            pio.write(port, data);
        });
    }
}

fn boot_msrs() -> [(u32, u64); 11] {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

fn set_apic_lvt(regs: &mut [i8], reg: usize, mode: u32) {
    let mut v = [0u8; 4];
    for (i, b) in v.iter_mut().enumerate() {
        *b = regs[reg + i] as u8;
    }
    let val = (u32::from_le_bytes(v) & !APIC_DELIVERY_MODE_MASK) | (mode << APIC_DELIVERY_MODE_SHIFT);
    for (i, b) in val.to_le_bytes().iter().enumerate() {
        regs[reg + i] = *b as i8;
    }
}

impl Vcpu {
    pub fn new(vm: &Vm, id: u8) -> Result<Vcpu, VcpuError> {
        let fd = vm.fd().create_vcpu(u64::from(id)).map_err(|err| VcpuError::Create { id, err })?;
        Ok(Vcpu { id, fd, ring: None })
    }

    /// Maps KVM's coalesced I/O ring through this vCPU (`page`: its page
    /// offset from [`Vm::coalesced_pio_ring_page`]); one mapping serves all vCPUs.
    pub fn map_coalesced_ring(&self, page: i32) -> std::io::Result<Arc<CoalescedRing>> {
        CoalescedRing::map(&self.fd, page).map(Arc::new)
    }

    pub fn set_coalesced_ring(&mut self, ring: Arc<CoalescedRing>) {
        self.ring = Some(ring);
    }

    /// CPUID, MSRs, registers, FPU and LAPIC for a 64-bit boot. Only the boot
    /// vCPU (id 0) starts at `entry`; the others wait for INIT/SIPI from the guest.
    pub fn configure(&self, vm: &Vm, nvcpus: u8, entry: u64) -> Result<(), VcpuError> {
        let id = self.id;
        let cfg = |what| move |err| VcpuError::Configure { id, what, err };
        let mut cpuid = vm.kvm().get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(cfg("KVM_GET_SUPPORTED_CPUID"))?;
        cpuid::normalize(&mut cpuid, id, nvcpus);
        self.fd.set_cpuid2(&cpuid).map_err(cfg("KVM_SET_CPUID2"))?;

        let supported = vm.kvm().get_msr_index_list().map_err(cfg("KVM_GET_MSR_INDEX_LIST"))?;
        let supported = supported.as_slice();
        let entries: Vec<kvm_msr_entry> = boot_msrs()
            .iter()
            .filter(|(idx, _)| supported.contains(idx))
            .map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::Configure {
            id,
            what: "MSR list",
            err: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let set = self.fd.set_msrs(&msrs).map_err(cfg("KVM_SET_MSRS"))?;
        if set != entries.len() {
            return Err(VcpuError::Configure {
                id,
                what: "KVM_SET_MSRS (partial)",
                err: kvm_ioctls::Error::new(libc::EINVAL),
            });
        }

        if id == 0 {
            self.fd.set_regs(&regs::boot_regs(entry)).map_err(cfg("KVM_SET_REGS"))?;
            let sregs = self.fd.get_sregs().map_err(cfg("KVM_GET_SREGS"))?;
            self.fd.set_sregs(&regs::boot_sregs(sregs)).map_err(cfg("KVM_SET_SREGS"))?;
        }
        self.fd.set_fpu(&regs::boot_fpu()).map_err(cfg("KVM_SET_FPU"))?;

        // Only the boot CPU takes the legacy PIC (LINT0 ExtINT) and NMI
        // (LINT1), as on a PC; the APs keep KVM's masked reset values until the
        // guest brings them up. An AP with an unmasked ExtINT line could be
        // woken by a PIC interrupt while still in its reset state (seen in the
        // nested testbed as an AP triple fault at 0xf000:0xfff0).
        if id == 0 {
            let mut lapic = self.fd.get_lapic().map_err(cfg("KVM_GET_LAPIC"))?;
            set_apic_lvt(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
            set_apic_lvt(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
            self.fd.set_lapic(&lapic).map_err(cfg("KVM_SET_LAPIC"))?;
        }
        Ok(())
    }

    /// A one-line summary of the registers for error reports.
    fn dump(&self) -> String {
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector
            ),
            (Err(e), _) | (_, Err(e)) => format!("registers unavailable: {e}"),
        }
    }

    /// Runs the vCPU until the guest stops it, it fails or `stop` is set;
    /// reports why through `exit`. The thread installs its seccomp filter
    /// before the first KVM_RUN.
    pub fn spawn(
        mut self,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        exit: Arc<ExitHandle>,
        stop: Arc<AtomicBool>,
        pause: Arc<PauseControl>,
    ) -> Result<JoinHandle<()>, VcpuError> {
        install_kick_handler();
        std::thread::Builder::new()
            .name(format!("fc_vcpu {}", self.id))
            .spawn(move || {
                if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu) {
                    exit.request(ExitReason::VmmError(format!("vcpu{}: {e}", self.id)));
                    return;
                }
                pause.register_vcpu();
                let immediate_exit: *mut u8 = &mut self.fd.get_kvm_run().immediate_exit;
                IMMEDIATE_EXIT.with(|p| p.set(immediate_exit));
                let reason = self.run(&pio, &mmio, &stop, &pause);
                IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
                pause.unregister_vcpu();
                exit.request(reason);
            })
            .map_err(VcpuError::Spawn)
    }

    fn run(&mut self, pio: &Bus, mmio: &Bus, stop: &AtomicBool, pause: &PauseControl) -> ExitReason {
        let reason = self.run_until_stopped(pio, mmio, stop, pause);
        // What the guest wrote last must not be lost with it.
        replay(self.ring.as_deref(), pio);
        reason
    }

    fn run_until_stopped(&mut self, pio: &Bus, mmio: &Bus, stop: &AtomicBool, pause: &PauseControl) -> ExitReason {
        let ring = self.ring.clone();
        let ring = ring.as_deref();
        loop {
            if stop.load(Ordering::Acquire) {
                return ExitReason::Stopped;
            }
            pause.park_vcpu_if_paused(stop);
            if stop.load(Ordering::Acquire) {
                return ExitReason::Stopped;
            }
            let exit = self.fd.run();
            // Writes KVM coalesced happened before this exit: replay them first.
            replay(ring, pio);
            let err = match exit {
                Ok(VcpuExit::IoIn(port, data)) => {
                    pio.read(u64::from(port), data);
                    continue;
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    pio.write(u64::from(port), data);
                    continue;
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    if !mmio.read(addr, data) {
                        log::debug!("vcpu{}: unclaimed MMIO read at {addr:#x}", self.id);
                    }
                    continue;
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    if !mmio.write(addr, data) {
                        log::debug!("vcpu{}: unclaimed MMIO write at {addr:#x}", self.id);
                    }
                    continue;
                }
                // With the in-kernel irqchip HLT stays in the kernel; be tolerant anyway.
                Ok(VcpuExit::Hlt) | Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => continue,
                Ok(VcpuExit::Shutdown) => "KVM_EXIT_SHUTDOWN: the guest triple-faulted".to_string(),
                Ok(VcpuExit::InternalError) => {
                    "KVM_EXIT_INTERNAL_ERROR: KVM could not emulate an instruction".to_string()
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    format!("KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on cpu {cpu}")
                }
                Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => return ExitReason::GuestPoweroff,
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => return ExitReason::GuestReset,
                    other => format!("KVM_EXIT_SYSTEM_EVENT of unknown type {other}"),
                },
                Ok(other) => format!("unexpected vCPU exit {other:?}"),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    // A kick (pause or stop): the next KVM_RUN enters the
                    // guest again unless another kick comes.
                    self.fd.set_kvm_immediate_exit(0);
                    continue;
                }
                Err(e) => format!("KVM_RUN failed: {e}"),
            };
            return ExitReason::VcpuError(format!("vcpu{}: {err}; {}", self.id, self.dump()));
        }
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN (pause, teardown).
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

thread_local! {
    /// The `immediate_exit` byte of this thread's vCPU run structure (null
    /// on other threads): the kick handler sets it, so a kick that arrives
    /// just before KVM_RUN makes that KVM_RUN return at once (EINTR).
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_sig: libc::c_int) {
    // KVM_RUN returns EINTR because of the signal itself; if the thread was
    // not in KVM_RUN yet, immediate_exit makes the next one return.
    let p = IMMEDIATE_EXIT.with(Cell::get);
    if !p.is_null() {
        // SAFETY: set by this thread to the immediate_exit byte of the run
        // structure its VcpuFd keeps mapped, and cleared before that is
        // dropped; a byte store is async-signal-safe.
        unsafe { p.write_volatile(1) };
    }
}

/// Kicks the vCPU thread `t` out of KVM_RUN. The caller guarantees `t` is
/// a running thread (a registered vCPU, see [`PauseControl`]).
pub(crate) fn kick(t: libc::pthread_t) {
    // SAFETY: `t` names a live thread (the caller's guarantee); the kick
    // signal has a handler installed before any vCPU thread starts.
    unsafe { libc::pthread_kill(t, kick_signal()) };
}

pub(crate) fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with an extern "C" fn(c_int) handler and
        // an empty mask is valid; sigaction only reads it. No SA_RESTART, so
        // KVM_RUN returns EINTR.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            log::warn!("cannot install the vCPU kick handler: {}", std::io::Error::last_os_error());
        }
    });
}

/// Stops and joins the vCPU threads: sets `stop`, then kicks every thread
/// still running out of KVM_RUN (again every few ms: a kick that lands just
/// before KVM_RUN is entered is lost) until all have ended or `timeout`
/// passed. Returns how many threads did not end in time (left detached).
pub fn stop_and_join(threads: Vec<JoinHandle<()>>, stop: &AtomicBool, timeout: Duration) -> usize {
    stop.store(true, Ordering::Release);
    let deadline = Instant::now() + timeout;
    let mut running = threads;
    loop {
        let (done, rest): (Vec<_>, Vec<_>) = running.into_iter().partition(|t| t.is_finished());
        for t in done {
            if t.join().is_err() {
                log::error!("a vCPU thread panicked");
            }
        }
        running = rest;
        if running.is_empty() || Instant::now() >= deadline {
            break;
        }
        for t in &running {
            // SAFETY: the pthread_t belongs to a thread we have not joined
            // (its JoinHandle is alive), so it is valid to signal.
            unsafe { libc::pthread_kill(t.as_pthread_t() as libc::pthread_t, kick_signal()) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    running.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_and_join_ends_a_thread_blocked_in_a_syscall() {
        install_kick_handler();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // Stands in for KVM_RUN: a blocking syscall a signal interrupts.
        let t = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                // SAFETY: pause(2) takes no arguments.
                unsafe { libc::pause() };
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(stop_and_join(vec![t], &stop, Duration::from_secs(5)), 0);
    }

    #[test]
    fn lvt_mode_is_replaced() {
        let mut regs = [0i8; 1024];
        regs[APIC_LVT0 + 1] = 0x7f; // some other delivery mode bits + mask
        set_apic_lvt(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_apic_lvt(&mut regs, APIC_LVT1, APIC_MODE_NMI);
        let lvt0 = u32::from_le_bytes([regs[0x350] as u8, regs[0x351] as u8, regs[0x352] as u8, regs[0x353] as u8]);
        let lvt1 = u32::from_le_bytes([regs[0x360] as u8, regs[0x361] as u8, regs[0x362] as u8, regs[0x363] as u8]);
        assert_eq!((lvt0 & APIC_DELIVERY_MODE_MASK) >> 8, APIC_MODE_EXTINT);
        assert_eq!(lvt0 & 0x7800, 0x7800, "other bits kept");
        assert_eq!((lvt1 & APIC_DELIVERY_MODE_MASK) >> 8, APIC_MODE_NMI);
    }

    #[test]
    fn boot_msrs_have_no_duplicates() {
        let list = boot_msrs();
        let mut idx: Vec<u32> = list.iter().map(|m| m.0).collect();
        idx.sort();
        idx.dedup();
        assert_eq!(idx.len(), 11);
    }
}
