//! shimvmm-jailer: starts shimvmm confined, modeled on Firecracker's jailer.
//!
//! Run as root. In order:
//! 1. checks the VMM binary is statically linked (the jail has no libraries)
//!    and copies it into a fresh per-VM directory,
//!    `<chroot-base-dir>/shimvmm/<id>/root`;
//! 2. optionally joins a cgroup v2 directory (`--cgroup`) and a network
//!    namespace (`--netns PATH`), or makes an empty one (`--new-netns`);
//! 3. unshares a new PID namespace and forks: the child is PID 1 of the new
//!    PID namespace (it sees no host process) and unshares a mount namespace;
//! 4. the child makes every mount private to it, bind-mounts into the jail
//!    only the files named with `--file`/`--ro-file` (at the same path as on
//!    the host), creates the device nodes named with `--device` (`/dev/kvm`,
//!    `/dev/net/tun`, `/dev/vfio/vfio`, `/dev/vfio/N`) owned by the VM's
//!    uid/gid, optionally a read-only `/sys` (`--sysfs`, which VFIO's device
//!    lookup needs), and a `/run` the VM's user may write (API socket,
//!    metrics); then `pivot_root`s into the jail and detaches the old root;
//! 5. sets rlimits (`--rlimit-nofile`, `--rlimit-memlock` for VFIO's pinning
//!    of guest memory), drops every group and switches to `--uid`/`--gid`;
//! 6. execs `/shimvmm` with the arguments after `--` and an empty environment.
//!
//! The parent stays outside, forwards SIGINT/SIGTERM/SIGHUP to the VMM,
//! exits with its status (128 + signal when it was killed), and removes the
//! per-VM directory (the mounts lived only in the child's namespace).
//!
//! A separate binary rather than `shimvmm --jail`: it needs root and
//! nothing else shimvmm has (no KVM, no API, no devices), so what runs
//! privileged is small enough to read in one sitting, and the VMM itself
//! never runs as root.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "shimvmm-jailer", version, about = "Start shimvmm confined: namespaces, pivot_root, uid/gid drop")]
struct Args {
    /// The VM's id: letters, digits and '-', 1-64 characters; names its directory.
    #[arg(long)]
    id: String,
    /// The shimvmm binary (statically linked); it is copied into the jail.
    #[arg(long, value_name = "PATH")]
    exec_file: PathBuf,
    /// The user the VMM runs as.
    #[arg(long)]
    uid: u32,
    /// The group the VMM runs as.
    #[arg(long)]
    gid: u32,
    /// Where per-VM directories are made.
    #[arg(long, value_name = "DIR", default_value = "/srv/shimvmm-jailer")]
    chroot_base_dir: PathBuf,
    /// A file the VM uses read-write (a drive), visible in the jail at the same path. Repeatable.
    #[arg(long, value_name = "PATH")]
    file: Vec<PathBuf>,
    /// A file the VM only reads (kernel, initrd, read-only drive), at the same path. Repeatable.
    #[arg(long, value_name = "PATH")]
    ro_file: Vec<PathBuf>,
    /// A character device the VM needs (/dev/kvm, /dev/net/tun, /dev/vfio/vfio, /dev/vfio/N). Repeatable.
    #[arg(long, value_name = "PATH")]
    device: Vec<PathBuf>,
    /// Make /sys visible read-only (the pNIC's VFIO lookup reads it).
    #[arg(long)]
    sysfs: bool,
    /// Join this network namespace (e.g. /var/run/netns/NAME) before starting.
    #[arg(long, value_name = "PATH", conflicts_with = "new_netns")]
    netns: Option<PathBuf>,
    /// Start in a new, empty network namespace (enough for the VFIO shim).
    #[arg(long)]
    new_netns: bool,
    /// A cgroup v2 directory to run in (made if missing), e.g. /sys/fs/cgroup/shimvmm/ID.
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,
    /// RLIMIT_NOFILE for the VMM.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    rlimit_nofile: u64,
    /// RLIMIT_MEMLOCK in bytes ("unlimited" allowed): VFIO pins all guest
    /// memory, so at least the guest's RAM plus a few MiB for the NIC rings.
    #[arg(long, value_name = "BYTES")]
    rlimit_memlock: Option<String>,
    /// shimvmm's own arguments (after `--`).
    #[arg(last = true)]
    vmm_args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
enum JailError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, JailError>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    let what = what.into();
    move |source| JailError::Io { what, source }
}

/// `rc` as a Result: -1 means errno.
fn check(rc: libc::c_int, what: impl Into<String>) -> Result<()> {
    if rc < 0 {
        return Err(JailError::Io { what: what.into(), source: io::Error::last_os_error() });
    }
    Ok(())
}

fn cstr(p: impl AsRef<OsStr>) -> Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| JailError::Invalid(format!("{:?} contains a NUL byte", p.as_ref())))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("shimvmm-jailer: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn validate(args: &Args) -> Result<()> {
    let id_ok =
        !args.id.is_empty() && args.id.len() <= 64 && args.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !id_ok {
        return Err(JailError::Invalid(format!("--id {:?}: use 1-64 letters, digits and '-'", args.id)));
    }
    if args.uid == 0 || args.gid == 0 {
        return Err(JailError::Invalid("--uid and --gid must not be 0: the VMM must not run as root".into()));
    }
    for p in args.file.iter().chain(&args.ro_file).chain(&args.device) {
        if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(JailError::Invalid(format!("{}: give an absolute path without '..'", p.display())));
        }
    }
    Ok(())
}

/// Refuses a dynamically linked VMM: it could not start in a jail without
/// its loader and libraries.
fn check_static(exe: &Path) -> Result<()> {
    let mut head = Vec::new();
    fs::File::open(exe)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(io_err(format!("cannot read {}", exe.display())))?;
    let bad = || JailError::Invalid(format!("{} is not an x86_64 ELF executable", exe.display()));
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(head[0x20..0x28].try_into().map_err(|_| bad())?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let Some(ty) = head.get(o..o + 4) else { return Err(bad()) };
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(ty.try_into().map_err(|_| bad())?) == PT_INTERP {
            return Err(JailError::Invalid(format!(
                "{} is dynamically linked; the jail holds no libraries: build it static \
                 (RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p shimvmm --target x86_64-unknown-linux-gnu)",
                exe.display()
            )));
        }
    }
    Ok(())
}

fn run(args: &Args) -> Result<u8> {
    validate(args)?;
    // SAFETY: geteuid takes no arguments.
    if unsafe { libc::geteuid() } != 0 {
        return Err(JailError::Invalid("run shimvmm-jailer as root (it drops to --uid/--gid)".into()));
    }
    check_static(&args.exec_file)?;
    let vm_dir = args.chroot_base_dir.join("shimvmm").join(&args.id);
    let root = vm_dir.join("root");
    if vm_dir.exists() {
        return Err(JailError::Invalid(format!(
            "{} already exists (another VM with id {}?); remove it first",
            vm_dir.display(),
            args.id
        )));
    }
    fs::create_dir_all(&root).map_err(io_err(format!("cannot create {}", root.display())))?;
    let outcome = jail_and_wait(args, &root);
    if let Err(e) = fs::remove_dir_all(&vm_dir) {
        eprintln!("shimvmm-jailer: warning: cannot remove {}: {e}", vm_dir.display());
    }
    outcome
}

fn jail_and_wait(args: &Args, root: &Path) -> Result<u8> {
    let exe = root.join("shimvmm");
    fs::copy(&args.exec_file, &exe).map_err(io_err(format!("cannot copy {}", args.exec_file.display())))?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o555)).map_err(io_err("cannot chmod the VMM copy"))?;

    if let Some(cg) = &args.cgroup {
        fs::create_dir_all(cg).map_err(io_err(format!("cannot create cgroup {}", cg.display())))?;
        fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
            .map_err(io_err(format!("cannot join cgroup {}", cg.display())))?;
    }
    if let Some(ns) = &args.netns {
        let f = fs::File::open(ns).map_err(io_err(format!("cannot open network namespace {}", ns.display())))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a descriptor we hold open.
        check(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, format!("setns {}", ns.display()))?;
    }
    // The PID (and network) namespace here, so the child is PID 1 of it; the
    // mount namespace in the child only: a pivot_root moves every process
    // of the namespace, and this one must stay on the host's tree.
    let mut flags = libc::CLONE_NEWPID;
    if args.new_netns {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: unshare with namespace flags; this process is single-threaded.
    check(unsafe { libc::unshare(flags) }, "unshare (PID namespace)")?;

    let sigs = stop_signals();
    // SAFETY: blocking signals in this (single) thread with a valid set;
    // the child unblocks them before exec.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &sigs, std::ptr::null_mut()) }, "sigprocmask")?;
    // SAFETY: fork in a single-threaded process; the child only runs our
    // setup code and execs (or _exits).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(JailError::Io { what: "fork".into(), source: io::Error::last_os_error() });
    }
    if pid == 0 {
        let e = child(args, root);
        eprintln!("shimvmm-jailer: error: {}", e.err().map(|e| e.to_string()).unwrap_or_default());
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(1) };
    }
    wait_forwarding(pid, &sigs)
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: initialising and filling a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Waits for the VMM, forwarding stop signals to it; returns its exit code.
fn wait_forwarding(pid: libc::pid_t, sigs: &libc::sigset_t) -> Result<u8> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a status we own.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status) as u8);
            }
            if libc::WIFSIGNALED(status) {
                return Ok(128u8.saturating_add(libc::WTERMSIG(status) as u8));
            }
            continue;
        }
        if r < 0 {
            return Err(JailError::Io { what: "waitpid".into(), source: io::Error::last_os_error() });
        }
        let ts = libc::timespec { tv_sec: 0, tv_nsec: 100_000_000 };
        // SAFETY: sigtimedwait with a valid set and timeout; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(sigs, std::ptr::null_mut(), &ts) };
        if sig > 0 {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// `path` (absolute) under `root`.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn mount(src: Option<&Path>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong) -> Result<()> {
    let s = src.map(cstr).transpose()?;
    let t = cstr(target)?;
    let f = fstype.map(cstr).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map(|c| c.as_ptr()).unwrap_or(std::ptr::null());
    // SAFETY: NUL-terminated strings that outlive the call (or NULL), no data argument.
    let rc = unsafe { libc::mount(ptr(&s), t.as_ptr(), ptr(&f), flags, std::ptr::null()) };
    check(rc, format!("mount {} on {}", src.map(|p| p.display().to_string()).unwrap_or_default(), target.display()))
}

fn bind(src: &Path, dest: &Path, read_only: bool) -> Result<()> {
    mount(Some(src), dest, None, libc::MS_BIND)?;
    if read_only {
        mount(None, dest, None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV)?;
    }
    Ok(())
}

/// The jail's setup, in the child (PID 1 of the new PID namespace); execs
/// the VMM or returns why it could not.
fn child(args: &Args, root: &Path) -> Result<std::convert::Infallible> {
    // SAFETY: unshare with a namespace flag, in this single-threaded child.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, "unshare (mount namespace)")?;
    // Nothing mounted from here on is seen outside this namespace.
    mount(None, Path::new("/"), None, libc::MS_SLAVE | libc::MS_REC)?;
    // pivot_root needs the new root to be a mount point.
    mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC)?;

    for (p, ro) in args.file.iter().map(|p| (p, false)).chain(args.ro_file.iter().map(|p| (p, true))) {
        let meta = fs::metadata(p).map_err(io_err(format!("--file {}", p.display())))?;
        if !meta.is_file() {
            return Err(JailError::Invalid(format!("{} is not a regular file", p.display())));
        }
        let dest = inside(root, p);
        if let Some(d) = dest.parent() {
            fs::create_dir_all(d).map_err(io_err(format!("cannot create {}", d.display())))?;
        }
        fs::write(&dest, b"").map_err(io_err(format!("cannot create {}", dest.display())))?;
        bind(p, &dest, ro)?;
    }
    for p in &args.device {
        let meta = fs::metadata(p).map_err(io_err(format!("--device {}", p.display())))?;
        if !meta.file_type().is_char_device() {
            return Err(JailError::Invalid(format!("{} is not a character device", p.display())));
        }
        let dest = inside(root, p);
        if let Some(d) = dest.parent() {
            fs::create_dir_all(d).map_err(io_err(format!("cannot create {}", d.display())))?;
        }
        let c = cstr(&dest)?;
        // SAFETY: mknod/chown on a NUL-terminated path we own.
        unsafe {
            check(libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, meta.rdev()), format!("mknod {}", dest.display()))?;
            check(libc::chown(c.as_ptr(), args.uid, args.gid), format!("chown {}", dest.display()))?;
        }
    }
    if args.sysfs {
        let dest = root.join("sys");
        fs::create_dir_all(&dest).map_err(io_err("cannot create /sys in the jail"))?;
        mount(Some(Path::new("/sys")), &dest, None, libc::MS_BIND | libc::MS_REC)?;
        mount(
            None,
            &dest,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        )?;
    }
    // The VM user's writable directory (API socket, metrics).
    let run = root.join("run");
    fs::create_dir_all(&run).map_err(io_err("cannot create /run in the jail"))?;
    let c = cstr(&run)?;
    // SAFETY: chown on a NUL-terminated path we own.
    check(unsafe { libc::chown(c.as_ptr(), args.uid, args.gid) }, "chown /run")?;

    // Into the jail; the host's tree goes away.
    let old = root.join("old_root");
    fs::create_dir_all(&old).map_err(io_err("cannot create old_root"))?;
    let (r, o) = (cstr(root)?, cstr(&old)?);
    // SAFETY: pivot_root(2) with two NUL-terminated paths, then chdir/umount2/rmdir on literals.
    unsafe {
        check(libc::syscall(libc::SYS_pivot_root, r.as_ptr(), o.as_ptr()) as libc::c_int, "pivot_root")?;
        check(libc::chdir(c"/".as_ptr()), "chdir /")?;
        check(libc::umount2(c"/old_root".as_ptr(), libc::MNT_DETACH), "umount the old root")?;
        check(libc::rmdir(c"/old_root".as_ptr()), "rmdir /old_root")?;
    }

    set_rlimit(libc::RLIMIT_NOFILE, args.rlimit_nofile, "RLIMIT_NOFILE")?;
    if let Some(m) = &args.rlimit_memlock {
        let v = if m == "unlimited" {
            libc::RLIM_INFINITY
        } else {
            m.parse().map_err(|_| JailError::Invalid(format!("--rlimit-memlock {m:?}: bytes or \"unlimited\"")))?
        };
        set_rlimit(libc::RLIMIT_MEMLOCK, v, "RLIMIT_MEMLOCK")?;
    }

    // SAFETY: dropping privileges with plain integer arguments; the order
    // (groups, gid, uid) matters: after setresuid we could not change groups.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(libc::setresgid(args.gid, args.gid, args.gid), "setresgid")?;
        check(libc::setresuid(args.uid, args.uid, args.uid), "setresuid")?;
        if libc::getuid() != args.uid || libc::geteuid() != args.uid || libc::getegid() != args.gid {
            return Err(JailError::Invalid("the uid/gid drop did not take".into()));
        }
    }

    let prog = cstr("/shimvmm")?;
    let mut argv = vec![prog.clone()];
    for a in &args.vmm_args {
        argv.push(cstr(a)?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let sigs = stop_signals();
    // SAFETY: unblocking the signals blocked before fork; then execve with
    // NULL-terminated arrays of NUL-terminated strings that outlive the call.
    unsafe {
        libc::sigprocmask(libc::SIG_UNBLOCK, &sigs, std::ptr::null_mut());
        libc::execve(prog.as_ptr(), argv_ptrs.as_ptr(), envp.as_ptr());
    }
    Err(JailError::Io { what: "exec /shimvmm".into(), source: io::Error::last_os_error() })
}

/// setrlimit's resource type: an enum typedef on glibc, a plain int on musl.
#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

fn set_rlimit(res: RlimitResource, v: u64, name: &str) -> Result<()> {
    let lim = libc::rlimit { rlim_cur: v, rlim_max: v };
    // SAFETY: setrlimit with a struct we own.
    check(unsafe { libc::setrlimit(res, &lim) }, format!("setrlimit {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_executables_are_refused() {
        let me = std::env::current_exe().unwrap();
        // Test binaries are dynamically linked by default.
        let e = check_static(&me).map(|_| "static".to_string()).unwrap_or_else(|e| e.to_string());
        assert!(e == "static" || e.contains("dynamically linked"), "{e}");
        let e = check_static(Path::new("/etc/hostname")).unwrap_err().to_string();
        assert!(e.contains("not an x86_64 ELF") || e.contains("cannot read"), "{e}");
    }

    #[test]
    fn ids_and_paths_are_checked() {
        let mut a = Args::parse_from(["j", "--id", "vm-1", "--exec-file", "/x", "--uid", "1000", "--gid", "1000"]);
        assert!(validate(&a).is_ok());
        a.id = "../x".into();
        assert!(validate(&a).is_err());
        a.id = "ok".into();
        a.file.push("relative/disk".into());
        assert!(validate(&a).is_err());
        a.file = vec!["/a/../etc/shadow".into()];
        assert!(validate(&a).is_err());
        a.file.clear();
        a.uid = 0;
        assert!(validate(&a).is_err());
        assert_eq!(inside(Path::new("/j/root"), Path::new("/tmp/d.img")), Path::new("/j/root/tmp/d.img"));
    }
}
