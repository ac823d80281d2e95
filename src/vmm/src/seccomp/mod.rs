//! Per-thread seccomp filters (seccompiler) and the SIGSYS report.
//!
//! Filters stack: the kernel runs every filter a thread has and the strictest
//! answer wins. shimvmm uses that in two steps:
//!
//! 1. [`ThreadKind::Boot`], installed on the main thread first thing, before
//!    any other thread exists, so every thread inherits it. It allows what
//!    building a VM takes (opening files, KVM/VFIO/TUN ioctls, sockets for the
//!    API and the tap), and nothing a VMM never does: no `execve`, no `fork`
//!    (`clone` must carry `CLONE_THREAD`, `clone3` fails with ENOSYS so libc
//!    falls back to `clone`), no `ptrace`, `mount`, `setuid`, module loading,
//!    `bpf`, `keyctl`, ... and no executable memory (`mmap`/`mprotect` with
//!    `PROT_EXEC`).
//! 2. Each thread then narrows itself to its role: [`ThreadKind::Vcpu`] at the
//!    top of a vCPU thread (before its first `KVM_RUN`), [`ThreadKind::Api`]
//!    at the top of the API thread (its worker pool inherits it), and
//!    [`ThreadKind::Vmm`] on the main thread once the VM is built, before the
//!    event loop handles the first guest event.
//!
//! A call outside a thread's filter traps (`SECCOMP_RET_TRAP`): the SIGSYS
//! handler writes one line naming the thread's role and the syscall, and the
//! process exits with [`EXIT_SECCOMP_VIOLATION`]. The handler uses only
//! `write(2)` and `exit_group(2)`, which every filter allows.
//!
//! The lists were worked out from `strace -f` of real runs (on the host: API
//! only and a KVM run; in the testbed: the boot, tap and shim guest tests)
//! plus a reading of the code paths each thread can reach (device activation
//! and reset run on the vCPU thread that wrote the status register, the
//! virtio queues on the event loop). docs/security.md summarises them.

mod names;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};

pub use names::syscall_name;

/// Exit status after a seccomp violation: 128 + SIGSYS, as a shell reports a
/// process killed by SIGSYS.
pub const EXIT_SECCOMP_VIOLATION: i32 = 128 + libc::SIGSYS;

/// The roles threads play; each has its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread before the VM runs; inherited by every thread.
    Boot,
    /// The main thread running the event loop (devices, signals, teardown).
    Vmm,
    /// The API server thread and its handler pool.
    Api,
    /// A vCPU thread.
    Vcpu,
}

impl ThreadKind {
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Boot => "boot",
            ThreadKind::Vmm => "vmm",
            ThreadKind::Api => "api",
            ThreadKind::Vcpu => "vcpu",
        }
    }

    fn code(self) -> u8 {
        match self {
            ThreadKind::Boot => 1,
            ThreadKind::Vmm => 2,
            ThreadKind::Api => 3,
            ThreadKind::Vcpu => 4,
        }
    }

    fn from_code(c: u8) -> Option<ThreadKind> {
        [ThreadKind::Boot, ThreadKind::Vmm, ThreadKind::Api, ThreadKind::Vcpu].into_iter().find(|k| k.code() == c)
    }
}

impl std::str::FromStr for ThreadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "boot" => Ok(ThreadKind::Boot),
            "vmm" => Ok(ThreadKind::Vmm),
            "api" => Ok(ThreadKind::Api),
            "vcpu" => Ok(ThreadKind::Vcpu),
            _ => Err(format!("unknown thread kind {s:?} (boot, vmm, api or vcpu)")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the {kind} seccomp filter: {source}")]
    Build { kind: &'static str, source: seccompiler::BackendError },
    #[error("cannot install the {kind} seccomp filter: {source}")]
    Install { kind: &'static str, source: seccompiler::Error },
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

/// Filters are on unless `--no-seccomp` turned them off (see [`set_enabled`]).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the filters on or off for every later [`install`] (`--no-seccomp`).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// The VM has a vsock device: the VMM thread accepts and makes Unix stream
/// connections (host processes connecting to `uds_path`, guest connections
/// to `<uds_path>_P`). Set by the builder before the VMM filter is made.
static VSOCK_SOCKETS: AtomicBool = AtomicBool::new(false);

pub fn allow_vsock_sockets() {
    VSOCK_SOCKETS.store(true, Ordering::SeqCst);
}

/// What the VMM thread needs for a vsock device's host side. `connect` takes
/// an address a filter cannot see: with a vsock device the VMM thread could
/// also connect the AF_INET datagram socket it may make (SIOCGIF*); without
/// one it cannot.
fn vsock_sockets(r: &mut Rules) -> Result<(), seccompiler::BackendError> {
    allow(r, &[libc::SYS_accept4, libc::SYS_connect, libc::SYS_shutdown]);
    allow_if(
        r,
        libc::SYS_socket,
        vec![cond(0, Op::Eq, libc::AF_UNIX as u64)?, cond(1, Op::MaskedEq(0xff), libc::SOCK_STREAM as u64)?],
    )?;
    ioctl_eq(r, FIONBIO)
}

thread_local! {
    /// The role of this thread's newest filter, for the SIGSYS report (a
    /// const-initialised Cell: reading it in a signal handler takes no lock
    /// and allocates nothing).
    static KIND: Cell<u8> = const { Cell::new(0) };
}

/// The filter every thread inherited (Boot once it is installed), for threads
/// that installed none of their own.
static BASE_KIND: AtomicU8 = AtomicU8::new(0);

/// Installs `kind`'s filter on the calling thread (and so on every thread it
/// spawns afterwards). A no-op when filters are off.
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    if !enabled() {
        return Ok(());
    }
    if kind == ThreadKind::Boot {
        // First, so the Boot filter (which allows clone3) cannot override it:
        // the stricter answer (ENOSYS) wins and libc falls back to clone(2),
        // whose flags a filter can see.
        let p = clone3_enosys().map_err(|source| SeccompError::Build { kind: "clone3", source })?;
        seccompiler::apply_filter(&p).map_err(|source| SeccompError::Install { kind: "clone3", source })?;
    }
    let prog = filter(kind)?;
    seccompiler::apply_filter(&prog).map_err(|source| SeccompError::Install { kind: kind.name(), source })?;
    KIND.with(|k| k.set(kind.code()));
    if kind == ThreadKind::Boot {
        BASE_KIND.store(kind.code(), Ordering::SeqCst);
    }
    Ok(())
}

/// `kind`'s filter as a BPF program (traps on anything not listed).
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let build = |source| SeccompError::Build { kind: kind.name(), source };
    let f = SeccompFilter::new(rules(kind).map_err(build)?, SeccompAction::Trap, SeccompAction::Allow, arch())
        .map_err(build)?;
    BpfProgram::try_from(f).map_err(build)
}

fn arch() -> TargetArch {
    TargetArch::x86_64
}

fn clone3_enosys() -> Result<BpfProgram, seccompiler::BackendError> {
    let rules = BTreeMap::from([(libc::SYS_clone3, vec![])]);
    let f = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch())?;
    BpfProgram::try_from(f)
}

// ---- the SIGSYS report ---------------------------------------------------

/// Installs the SIGSYS handler that reports a filter violation and exits.
/// Call before the first filter.
pub fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: a zeroed sigaction is a valid starting point; we fill in the
    // handler (an extern "C" fn with the SA_SIGINFO signature) and flags, and
    // sigaction only reads it.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(SeccompError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Offset of `_sigsys._syscall` in x86_64 `siginfo_t`: si_signo, si_errno,
/// si_code (3 x int) and padding to 16, then `void *_call_addr`, then the int.
const SIGINFO_SYSCALL_OFFSET: usize = 24;

/// Async-signal-safe: formats into a stack buffer, then write(2) and _exit(2).
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel hands a SIGSYS handler a valid siginfo_t whose
    // _sigsys member holds the syscall number at this offset (the struct is
    // 128 bytes, so the read is in bounds); read_unaligned needs no alignment.
    let nr = unsafe { std::ptr::read_unaligned((info as *const u8).add(SIGINFO_SYSCALL_OFFSET) as *const i32) };
    let kind = match KIND.with(|k| k.get()) {
        0 => BASE_KIND.load(Ordering::SeqCst),
        k => k,
    };
    let mut buf = Report::default();
    buf.push(b"shimvmm: seccomp: the ");
    buf.push(ThreadKind::from_code(kind).map(|k| k.name()).unwrap_or("unfiltered").as_bytes());
    buf.push(b" thread called ");
    buf.push(syscall_name(i64::from(nr)).as_bytes());
    buf.push(b" (syscall ");
    buf.push_num(nr);
    buf.push(b"), which its seccomp filter does not allow; exiting\n");
    // SAFETY: write(2) from a buffer we own, then _exit(2): both are
    // async-signal-safe and allowed by every filter.
    unsafe {
        libc::write(libc::STDERR_FILENO, buf.bytes.as_ptr() as *const libc::c_void, buf.len);
        libc::_exit(EXIT_SECCOMP_VIOLATION);
    }
}

/// A fixed-size line buffer (no allocation in a signal handler).
struct Report {
    bytes: [u8; 192],
    len: usize,
}

impl Default for Report {
    fn default() -> Self {
        Report { bytes: [0; 192], len: 0 }
    }
}

impl Report {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_num(&mut self, n: i32) {
        let mut digits = [0u8; 12];
        let mut i = digits.len();
        let neg = n < 0;
        let mut v = i64::from(n).unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if neg {
            i -= 1;
            digits[i] = b'-';
        }
        self.push(&digits[i..]);
    }
}

// ---- the lists -----------------------------------------------------------

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

const IOC_NONE: u64 = 0;
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `_IOC(dir, type, nr, size)` as Linux encodes an ioctl request.
const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}

const KVMIO: u64 = 0xae;
pub(crate) const KVM_RUN: u64 = ioc(IOC_NONE, KVMIO, 0x80, 0);
pub(crate) const KVM_GET_REGS: u64 = ioc(IOC_READ, KVMIO, 0x81, std::mem::size_of::<kvm_bindings::kvm_regs>());
pub(crate) const KVM_GET_SREGS: u64 = ioc(IOC_READ, KVMIO, 0x83, std::mem::size_of::<kvm_bindings::kvm_sregs>());
const KVM_ZONE: usize = std::mem::size_of::<kvm_bindings::kvm_coalesced_mmio_zone>();
pub(crate) const KVM_REGISTER_COALESCED_MMIO: u64 = ioc(IOC_WRITE, KVMIO, 0x67, KVM_ZONE);
pub(crate) const KVM_UNREGISTER_COALESCED_MMIO: u64 = ioc(IOC_WRITE, KVMIO, 0x68, KVM_ZONE);
/// VFIO's ioctls are all `_IO(';', 100 + n)`: type ';', no size, no direction.
const VFIO_TYPE: u64 = b';' as u64;
const TUN_TYPE: u64 = b'T' as u64;
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TIOCGWINSZ: u64 = 0x5413;
const FIONBIO: u64 = 0x5421;
const FIOCLEX: u64 = 0x5451;

fn cond(arg: u8, op: Op, val: u64) -> Result<Cond, seccompiler::BackendError> {
    Cond::new(arg, Len::Dword, op, val)
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(conds)
}

/// Adds unconditional syscalls.
fn allow(r: &mut Rules, nrs: &[i64]) {
    for &nr in nrs {
        r.insert(nr, vec![]);
    }
}

/// Adds a conditional rule for `nr`, unless `nr` is already unconditional.
fn allow_if(r: &mut Rules, nr: i64, conds: Vec<Cond>) -> Result<(), seccompiler::BackendError> {
    match r.get_mut(&nr) {
        Some(v) if v.is_empty() => {}
        Some(v) => v.push(rule(conds)?),
        None => {
            r.insert(nr, vec![rule(conds)?]);
        }
    }
    Ok(())
}

/// ioctl(fd, request) with exactly `request`.
fn ioctl_eq(r: &mut Rules, request: u64) -> Result<(), seccompiler::BackendError> {
    allow_if(r, libc::SYS_ioctl, vec![cond(1, Op::Eq, request)?])
}

/// ioctl(fd, request) for any request of ioctl type `ty` and no size/direction.
fn ioctl_type_io(r: &mut Rules, ty: u64) -> Result<(), seccompiler::BackendError> {
    allow_if(r, libc::SYS_ioctl, vec![cond(1, Op::MaskedEq(0xffff_ff00), ty << 8)?])
}

/// ioctl(fd, request) for any request of ioctl type `ty`, any size/direction.
fn ioctl_type_any(r: &mut Rules, ty: u64) -> Result<(), seccompiler::BackendError> {
    allow_if(r, libc::SYS_ioctl, vec![cond(1, Op::MaskedEq(0xff00), ty << 8)?])
}

/// What every thread does: memory, locks, time, its own exit, stderr, and
/// the pieces of panic=abort (abort raises SIGABRT at itself).
fn common(r: &mut Rules) -> Result<(), seccompiler::BackendError> {
    allow(
        r,
        &[
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_close,
            libc::SYS_futex,
            libc::SYS_brk,
            libc::SYS_munmap,
            libc::SYS_madvise,
            libc::SYS_mremap,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_rt_sigreturn,
            libc::SYS_rt_sigprocmask,
            libc::SYS_sigaltstack,
            libc::SYS_sched_yield,
            libc::SYS_getrandom,
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_gettid,
            libc::SYS_getpid,
            libc::SYS_restart_syscall,
            libc::SYS_fcntl,
            libc::SYS_statx,
            libc::SYS_fstat,
            libc::SYS_newfstatat,
            // musl's stat(3)/lstat(3) use these where glibc uses newfstatat.
            libc::SYS_stat,
            libc::SYS_lstat,
            libc::SYS_lseek,
        ],
    );
    // No executable mappings, ever.
    let no_exec = || cond(2, Op::MaskedEq(libc::PROT_EXEC as u64), 0);
    allow_if(r, libc::SYS_mmap, vec![no_exec()?])?;
    allow_if(r, libc::SYS_mprotect, vec![no_exec()?])?;
    // abort(): SIGABRT to ourselves, and resetting its disposition.
    allow_if(r, libc::SYS_tgkill, vec![cond(2, Op::Eq, libc::SIGABRT as u64)?])?;
    // musl's raise(3)/abort(3) use tkill(tid, sig) where glibc uses tgkill.
    allow_if(r, libc::SYS_tkill, vec![cond(1, Op::Eq, libc::SIGABRT as u64)?])?;
    allow_if(r, libc::SYS_rt_sigaction, vec![cond(0, Op::Eq, libc::SIGABRT as u64)?])?;
    Ok(())
}

/// Creating threads: clone only with CLONE_THREAD (a thread, never a process).
fn spawn_threads(r: &mut Rules) -> Result<(), seccompiler::BackendError> {
    allow(r, &[libc::SYS_clone3, libc::SYS_set_robust_list, libc::SYS_rseq, libc::SYS_sched_getaffinity]);
    let thread = libc::CLONE_THREAD as u64;
    allow_if(r, libc::SYS_clone, vec![cond(0, Op::MaskedEq(thread), thread)?])?;
    allow_if(r, libc::SYS_prctl, vec![cond(0, Op::Eq, libc::PR_SET_NAME as u64)?])?;
    // glibc's internal signals (SIGCANCEL, SIGSETXID: 32 and 33), whose
    // handlers it installs when the first thread is created.
    for sig in [32, 33] {
        allow_if(r, libc::SYS_rt_sigaction, vec![cond(0, Op::Eq, sig)?])?;
    }
    Ok(())
}

/// The device work a thread that touches devices may do: a virtio-net
/// backend's offloads and link state (tap), the pNIC's VFIO device (config
/// space reads/writes, resets, DMA maps) and eventfd signalling.
fn device_control(r: &mut Rules) -> Result<(), seccompiler::BackendError> {
    // VFIO config space; the tap's link monitor drained on activation
    // (netlink recv); a zero-timeout poll for a backend fd's error state.
    allow(r, &[libc::SYS_pread64, libc::SYS_pwrite64, libc::SYS_recvfrom, libc::SYS_poll, libc::SYS_ppoll]);
    ioctl_type_io(r, VFIO_TYPE)?;
    ioctl_eq(r, libc::TUNSETOFFLOAD as _)?; // c_ulong on glibc, c_int on musl
    ioctl_eq(r, libc::SIOCGIFMTU)?;
    ioctl_eq(r, libc::SIOCGIFFLAGS)?;
    // The throwaway socket the SIOCGIF* ioctls go through.
    allow_if(
        r,
        libc::SYS_socket,
        vec![cond(0, Op::Eq, libc::AF_INET as u64)?, cond(1, Op::MaskedEq(0xff), libc::SOCK_DGRAM as u64)?],
    )?;
    // The serial device turns KVM's coalescing of its THR port on and off.
    ioctl_eq(r, KVM_REGISTER_COALESCED_MMIO)?;
    ioctl_eq(r, KVM_UNREGISTER_COALESCED_MMIO)?;
    Ok(())
}

/// `sendto` on a connected socket only (no destination address): a thread
/// that may make an AF_INET datagram socket (for SIOCGIF*) must not be able
/// to send it anywhere. `sendmsg` (whose address a filter cannot see) is not
/// allowed at all.
fn send_connected(r: &mut Rules) -> Result<(), seccompiler::BackendError> {
    allow_if(r, libc::SYS_sendto, vec![Cond::new(4, Len::Qword, Op::Eq, 0)?])
}

/// Writing the metrics file (temp file, rename) and removing the API socket.
fn metrics_files(r: &mut Rules) {
    allow(
        r,
        &[
            libc::SYS_openat,
            // musl's open(3) uses open(2) where glibc uses openat(2).
            libc::SYS_open,
            libc::SYS_rename,
            libc::SYS_renameat,
            libc::SYS_renameat2,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
        ],
    );
}

fn rules(kind: ThreadKind) -> Result<Rules, seccompiler::BackendError> {
    rules_for(kind, VSOCK_SOCKETS.load(Ordering::SeqCst))
}

/// `kind`'s rules, with or without a vsock device's sockets.
fn rules_for(kind: ThreadKind, vsock: bool) -> Result<Rules, seccompiler::BackendError> {
    let mut r = Rules::new();
    common(&mut r)?;
    match kind {
        ThreadKind::Vcpu => {
            for req in [KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS] {
                ioctl_eq(&mut r, req)?;
            }
            device_control(&mut r)?;
            // Kicked out of KVM_RUN by a signal at teardown.
        }
        ThreadKind::Vmm => {
            allow(
                &mut r,
                &[
                    libc::SYS_epoll_wait,
                    libc::SYS_epoll_pwait,
                    libc::SYS_epoll_ctl,
                    libc::SYS_preadv,
                    libc::SYS_pwritev,
                    libc::SYS_recvfrom,
                    libc::SYS_recvmsg,
                ],
            );
            send_connected(&mut r)?;
            device_control(&mut r)?;
            metrics_files(&mut r);
            // Teardown: vfio-ioctls finds a device's group again through
            // sysfs (readlink of iommu_group) when the device is dropped.
            allow(&mut r, &[libc::SYS_readlink, libc::SYS_readlinkat]);
            // Teardown: kicking vCPU threads out of KVM_RUN (any real-time
            // signal: the kick signal is SIGRTMIN-based).
            allow_if(&mut r, libc::SYS_tgkill, vec![cond(2, Op::Ge, libc::SIGRTMIN() as u64)?])?;
            // Rate limiters: arming the timer that resumes a throttled queue.
            allow(&mut r, &[libc::SYS_timerfd_settime]);
            // musl's pthread_kill(3) uses tkill(tid, sig) where glibc uses tgkill.
            allow_if(&mut r, libc::SYS_tkill, vec![cond(1, Op::Ge, libc::SIGRTMIN() as u64)?])?;
            // Restoring the terminal.
            for req in [TCGETS, TCSETS, TCSETSW] {
                ioctl_eq(&mut r, req)?;
            }
            if vsock {
                vsock_sockets(&mut r)?;
            }
        }
        ThreadKind::Api => {
            allow(
                &mut r,
                &[
                    libc::SYS_epoll_wait,
                    libc::SYS_epoll_pwait,
                    libc::SYS_epoll_ctl,
                    libc::SYS_accept4,
                    libc::SYS_recvfrom,
                    libc::SYS_shutdown,
                    libc::SYS_getsockopt,
                ],
            );
            send_connected(&mut r)?;
            ioctl_eq(&mut r, FIONBIO)?;
            ioctl_eq(&mut r, FIOCLEX)?;
            spawn_threads(&mut r)?;
            metrics_files(&mut r);
            // PATCH /vm Paused: kicking vCPU threads out of KVM_RUN (the
            // kick signal is SIGRTMIN-based).
            allow_if(&mut r, libc::SYS_tgkill, vec![cond(2, Op::Ge, libc::SIGRTMIN() as u64)?])?;
        }
        ThreadKind::Boot => {
            // Everything the other threads do, plus building the VM.
            for k in [ThreadKind::Vcpu, ThreadKind::Vmm, ThreadKind::Api] {
                for (nr, v) in rules_for(k, vsock)? {
                    if v.is_empty() {
                        r.insert(nr, v);
                    } else {
                        for rl in v {
                            match r.get_mut(&nr) {
                                Some(e) if e.is_empty() => {}
                                Some(e) => {
                                    if !e.contains(&rl) {
                                        e.push(rl)
                                    }
                                }
                                None => {
                                    r.insert(nr, vec![rl]);
                                }
                            }
                        }
                    }
                }
            }
            allow(
                &mut r,
                &[
                    // Files: kernel, initrd, drives, /dev/kvm, /dev/net/tun, VFIO, sysfs.
                    libc::SYS_readlink,
                    libc::SYS_readlinkat,
                    libc::SYS_getdents64,
                    libc::SYS_access,
                    libc::SYS_faccessat,
                    libc::SYS_faccessat2,
                    libc::SYS_getcwd,
                    libc::SYS_fstatfs,
                    libc::SYS_statfs,
                    libc::SYS_dup,
                    libc::SYS_dup3,
                    libc::SYS_pipe2,
                    libc::SYS_poll,
                    libc::SYS_ppoll,
                    libc::SYS_mlock,
                    libc::SYS_munlock,
                    libc::SYS_uname,
                    libc::SYS_sysinfo,
                    libc::SYS_getuid,
                    libc::SYS_geteuid,
                    libc::SYS_getgid,
                    libc::SYS_getegid,
                    // Event sources.
                    libc::SYS_eventfd2,
                    libc::SYS_epoll_create1,
                    libc::SYS_signalfd4,
                    libc::SYS_timerfd_create,
                    libc::SYS_timerfd_settime,
                    // The API socket and the tap's netlink socket.
                    libc::SYS_bind,
                    libc::SYS_listen,
                    libc::SYS_setsockopt,
                    libc::SYS_getsockname,
                    libc::SYS_chmod,
                    libc::SYS_fchmod,
                    libc::SYS_fchmodat,
                    // Waiting for InstanceStart: is SIGINT/SIGTERM pending?
                    libc::SYS_rt_sigpending,
                    // Narrowing itself further (the per-role filters).
                    libc::SYS_seccomp,
                    // A vsock device's guest connections (the VMM thread's
                    // own filter allows it only when there is one; a PUT
                    // /vsock comes after this filter is installed).
                    libc::SYS_connect,
                ],
            );
            for domain in [libc::AF_UNIX, libc::AF_INET, libc::AF_NETLINK] {
                allow_if(&mut r, libc::SYS_socket, vec![cond(0, Op::Eq, domain as u64)?])?;
            }
            allow_if(&mut r, libc::SYS_prctl, vec![cond(0, Op::Eq, libc::PR_SET_NO_NEW_PRIVS as u64)?])?;
            // The vCPU kick signal's handler (SIGRTMIN).
            allow_if(&mut r, libc::SYS_rt_sigaction, vec![cond(0, Op::Eq, libc::SIGRTMIN() as u64)?])?;
            // Any KVM, VFIO or TUN ioctl, the terminal's, and SIOCGIF*.
            ioctl_type_any(&mut r, KVMIO)?;
            ioctl_type_any(&mut r, TUN_TYPE)?;
            ioctl_eq(&mut r, TIOCGWINSZ)?;
            allow_if(&mut r, libc::SYS_ioctl, vec![cond(1, Op::MaskedEq(0xffff_ff00), 0x8900)?])?;
            spawn_threads(&mut r)?;
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(KVM_REGISTER_COALESCED_MMIO, 0x4010_ae67);
        assert_eq!(KVM_UNREGISTER_COALESCED_MMIO, 0x4010_ae68);
    }

    #[test]
    fn every_filter_compiles() {
        for k in [ThreadKind::Boot, ThreadKind::Vmm, ThreadKind::Api, ThreadKind::Vcpu] {
            assert!(!filter(k).unwrap().is_empty(), "{k:?}");
        }
        assert!(!clone3_enosys().unwrap().is_empty());
    }

    #[test]
    fn roles_narrow_the_boot_filter() {
        let boot = rules(ThreadKind::Boot).unwrap();
        for k in [ThreadKind::Vmm, ThreadKind::Api, ThreadKind::Vcpu] {
            for nr in rules(k).unwrap().keys() {
                assert!(boot.contains_key(nr), "{k:?} allows {} which Boot does not", syscall_name(*nr));
            }
        }
        for forbidden in [libc::SYS_execve, libc::SYS_fork, libc::SYS_ptrace, libc::SYS_mount, libc::SYS_setuid] {
            assert!(!boot.contains_key(&forbidden), "{}", syscall_name(forbidden));
        }
        let vcpu = rules(ThreadKind::Vcpu).unwrap();
        assert!(!vcpu.contains_key(&libc::SYS_openat));
        assert!(!boot.contains_key(&libc::SYS_sendmsg));
        let vmm = rules_for(ThreadKind::Vmm, false).unwrap();
        assert!(!vmm.contains_key(&libc::SYS_connect) && !vmm.contains_key(&libc::SYS_accept4), "no vsock, no sockets");
        for k in [ThreadKind::Api, ThreadKind::Vcpu] {
            assert!(!rules(k).unwrap().contains_key(&libc::SYS_connect), "{k:?}");
        }
        assert!(!boot[&libc::SYS_sendto].is_empty(), "sendto only without an address");
    }

    #[test]
    fn a_vsock_device_lets_the_vmm_thread_use_unix_stream_sockets() {
        let vmm = rules_for(ThreadKind::Vmm, true).unwrap();
        for nr in [libc::SYS_accept4, libc::SYS_connect, libc::SYS_shutdown, libc::SYS_socket] {
            assert!(vmm.contains_key(&nr), "{}", syscall_name(nr));
        }
        // The Boot filter is installed before a PUT /vsock can say so.
        let boot = rules_for(ThreadKind::Boot, false).unwrap();
        for nr in vmm.keys() {
            assert!(boot.contains_key(nr), "Vmm allows {} which Boot does not", syscall_name(*nr));
        }
        assert!(!rules_for(ThreadKind::Api, true).unwrap().contains_key(&libc::SYS_connect));
    }

    #[test]
    fn names_and_numbers_in_the_report() {
        assert_eq!(syscall_name(libc::SYS_getppid), "getppid");
        assert_eq!(syscall_name(100_000), "?");
        let mut r = Report::default();
        r.push_num(0);
        r.push(b" ");
        r.push_num(-12);
        r.push(b" ");
        r.push_num(110);
        assert_eq!(&r.bytes[..r.len], b"0 -12 110");
        assert_eq!(ThreadKind::from_code(ThreadKind::Vcpu.code()), Some(ThreadKind::Vcpu));
    }
}
