//! The Alpine guest (kernel, initrd, rootfs) and per-test scripted images.
//!
//! Everything goes through `tools/guest-artifacts`, so the shell and Rust
//! paths build identical images.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Kernel command line for the Alpine linux-virt kernel with its initrd.
/// virtio_blk and ext4 are modules the initrd loads; the initrd mounts root
/// with `rootflags` (default ro) and the image has no openrc `root` service
/// to remount it, hence `rootflags=rw`. `reboot=k` makes a guest reboot use
/// the i8042 reset line, `panic=-1` turns a panic into an immediate reboot.
const ALPINE_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 modules=virtio_blk,ext4 root=/dev/vda rootfstype=ext4 rootflags=rw rw";

/// The guest kernel command line every test uses with [`artifacts`].
pub fn alpine_cmdline() -> &'static str {
    ALPINE_CMDLINE
}

/// [`alpine_cmdline`] plus `quiet`, for guest tests: they judge a guest by its
/// markers, not by its kernel log (the benchmarks boot verbose to time the
/// kernel's "Run /init" line). Warnings,
/// errors, RCU stall reports and panics still reach the console. Each console
/// byte is a VM exit or two; the full kernel log is tens of thousands of them
/// in the first seconds of a boot, and the nested testbed's faults come most
/// often in that stretch (docs/testbed.md).
pub fn alpine_test_cmdline() -> String {
    format!("{ALPINE_CMDLINE} quiet")
}

/// The repository root (the root package's manifest directory).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the artifacts tool.
pub fn guest_artifacts_tool() -> PathBuf {
    repo_root().join("tools/guest-artifacts")
}

/// Paths of the cached Alpine guest.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// bzImage (Alpine linux-virt).
    pub kernel: PathBuf,
    /// mkinitfs initramfs that loads virtio_blk + ext4 and mounts /dev/vda.
    pub initrd: PathBuf,
    /// Raw ext4 rootfs (no partition table). Never boot it read-write:
    /// use [`test_image`] for a private copy.
    pub rootfs: PathBuf,
}

/// The Alpine guest, fetched into the cache on first use. Panics with the
/// tool's message if it cannot be fetched (e.g. no network, read-only cache).
pub fn artifacts() -> &'static Artifacts {
    static ART: OnceLock<Artifacts> = OnceLock::new();
    ART.get_or_init(|| {
        let out = Command::new(guest_artifacts_tool())
            .arg("paths")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", guest_artifacts_tool().display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            panic!(
                "`tools/guest-artifacts paths` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_paths(&stdout).unwrap_or_else(|e| panic!("`tools/guest-artifacts paths`: {e}; output was:\n{stdout}"))
    })
}

/// Parses the tool's `KEY=value` lines (values as printed by bash `%q`).
fn parse_paths(text: &str) -> Result<Artifacts, String> {
    let get = |key: &str| -> Result<PathBuf, String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .ok_or_else(|| format!("no {key}= line"))?;
        Ok(PathBuf::from(shell_unquote(line)?))
    };
    Ok(Artifacts { kernel: get("KERNEL")?, initrd: get("INITRD")?, rootfs: get("ROOTFS")? })
}

/// Undoes bash `printf %q` for the backslash and single-quote forms.
fn shell_unquote(s: &str) -> Result<String, String> {
    if s.starts_with("$'") {
        return Err(format!("unsupported $'...' quoting in {s:?} (path with control characters?)"));
    }
    let mut out = String::new();
    let mut chars = s.chars();
    let mut in_single = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => in_single = !in_single,
            '\\' if !in_single => out.push(chars.next().ok_or("trailing backslash")?),
            c => out.push(c),
        }
    }
    if in_single {
        return Err(format!("unterminated quote in {s:?}"));
    }
    Ok(out)
}

/// What the guest does after its test script ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// `poweroff -f`: ACPI power-off (QEMU microvm exits); without ACPI the
    /// kernel halts and the VMM keeps running.
    Poweroff,
    /// `reboot -f`: with `reboot=k` the i8042 reset line, which VMMs treat as exit.
    Reboot,
    /// Keep the guest up (the test ends it).
    None,
}

impl PowerAction {
    /// The tool's `--after` value.
    pub fn as_arg(self) -> &'static str {
        match self {
            PowerAction::Poweroff => "poweroff",
            PowerAction::Reboot => "reboot",
            PowerAction::None => "none",
        }
    }
}

/// A private scripted rootfs in a temporary directory, removed on drop
/// (kept if SHIMVMM_KEEP_IMAGES=1, for debugging).
#[derive(Debug)]
pub struct TempImage {
    dir: PathBuf,
    image: PathBuf,
}

impl TempImage {
    /// The raw ext4 image.
    pub fn path(&self) -> &Path {
        &self.image
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        if std::env::var("SHIMVMM_KEEP_IMAGES").as_deref() == Ok("1") {
            eprintln!("keeping test image {}", self.image.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh private directory for one image.
fn temp_image_dir() -> TempImage {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "shimvmm-img-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    TempImage { image: dir.join("rootfs.raw"), dir }
}

/// A private copy of the plain Alpine rootfs (boots to a login prompt on
/// ttyS0; no test script). Sparse copy, so cheap.
pub fn plain_image() -> TempImage {
    let art = artifacts();
    let temp = temp_image_dir();
    let status = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(&art.rootfs)
        .arg(&temp.image)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cp: {e}"));
    assert!(status.success(), "cp {} {} failed ({status})", art.rootfs.display(), temp.image.display());
    temp
}

/// Builds a private copy of the Alpine rootfs that runs `script` (POSIX sh,
/// sourced after the helpers, so `marker NAME VALUE` and `guest_uptime` are
/// available) from openrc at boot, prints `SHIMVMM-EXIT <status>` and then
/// does `after`. Panics with the tool's message on failure.
pub fn test_image(script: &str, after: PowerAction) -> TempImage {
    let art = artifacts();
    let temp = temp_image_dir();
    let script_path = temp.dir.join("test.sh");
    std::fs::write(&script_path, script).unwrap_or_else(|e| panic!("cannot write {}: {e}", script_path.display()));
    let out = Command::new(guest_artifacts_tool())
        .arg("test-image")
        .arg("--script")
        .arg(&script_path)
        .arg("--out")
        .arg(&temp.image)
        .arg("--after")
        .arg(after.as_arg())
        .arg("--rootfs")
        .arg(&art.rootfs)
        .env("TMPDIR", &temp.dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", guest_artifacts_tool().display()));
    if !out.status.success() {
        panic!(
            "`tools/guest-artifacts test-image` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    temp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_paths() {
        let a = parse_paths("KERNEL=/c/k\nINITRD=/c/i\\ x\nROOTFS='/c/r'\nCMDLINE=a\\ b\n").unwrap();
        assert_eq!(a.kernel, PathBuf::from("/c/k"));
        assert_eq!(a.initrd, PathBuf::from("/c/i x"));
        assert_eq!(a.rootfs, PathBuf::from("/c/r"));
        assert!(parse_paths("KERNEL=/k\n").unwrap_err().contains("INITRD"));
        assert!(shell_unquote("$'\\n'").is_err());
        assert!(shell_unquote("'open").is_err());
    }

    /// The tool keeps its own copy of the command line for shell users; it
    /// must not drift from the harness's.
    #[test]
    fn tool_cmdline_matches_harness() {
        let out = Command::new(guest_artifacts_tool()).arg("cmdline").output().expect("run tools/guest-artifacts");
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), alpine_cmdline());
    }
}
