//! Where tests run: can this machine run guests, and which shimvmm binary.

use std::path::{Path, PathBuf};

/// Env var the testbed sets inside L1: guests can run here.
pub const TESTBED_ENV: &str = "SHIMVMM_TESTBED";
/// Env var CI sets inside the testbed: a guest test that cannot run fails
/// instead of skipping, so nothing is silently skipped.
pub const REQUIRE_GUEST_ENV: &str = "SHIMVMM_REQUIRE_GUEST";

/// True when `flags` (the value of a /proc/cpuinfo `flags` line) has
/// hardware virtualisation.
fn has_virt_flag(cpuinfo: &str) -> bool {
    cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Why guests cannot run here, or `None` if they can. The host's paravirtual
/// /dev/kvm (no vmx/svm in cpuinfo) cannot run a stock Linux guest.
fn guest_env_problem() -> Option<String> {
    if !Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm does not exist".into());
    }
    if std::env::var(TESTBED_ENV).as_deref() == Ok("1") {
        return None;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if has_virt_flag(&cpuinfo) {
        None
    } else {
        Some("/proc/cpuinfo has no vmx/svm flag (paravirtual or no KVM)".into())
    }
}

/// Whether guest tests can run here. If not, prints a loud SKIPPED line and
/// returns false — or panics when SHIMVMM_REQUIRE_GUEST=1.
pub fn require_guest_env(test_name: &str) -> bool {
    let Some(problem) = guest_env_problem() else {
        return true;
    };
    if std::env::var(REQUIRE_GUEST_ENV).as_deref() == Ok("1") {
        panic!("{test_name}: {REQUIRE_GUEST_ENV}=1 but guests cannot run here: {problem}");
    }
    eprintln!(
        "\n*** SKIPPED {test_name}: needs KVM that can run guests ({problem}); \
         run it with tools/testbed run -- <test binary> ***\n"
    );
    false
}

/// Candidate cargo target directories, best first.
fn target_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        dirs.push(if dir.is_absolute() { dir } else { crate::repo_root().join(dir) });
    }
    // A test binary lives in <target>/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(t) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            dirs.push(t.to_path_buf());
        }
    }
    dirs.push(crate::repo_root().join("target"));
    dirs
}

/// The shimvmm binary: $SHIMVMM_BIN, else <target>/release/shimvmm, else
/// <target>/debug/shimvmm. Panics with a build hint if there is none.
pub fn shimvmm_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SHIMVMM_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "SHIMVMM_BIN={} is not a file", bin.display());
        return bin;
    }
    let dirs = target_dirs();
    for profile in ["release", "debug"] {
        for dir in &dirs {
            let bin = dir.join(profile).join("shimvmm");
            if bin.is_file() {
                return bin;
            }
        }
    }
    panic!(
        "no shimvmm binary in {:?}: build it with `cargo build -p shimvmm --release` or set SHIMVMM_BIN",
        dirs.iter().map(|d| d.join("{release,debug}/shimvmm")).collect::<Vec<_>>()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virt_flags() {
        assert!(has_virt_flag("processor: 0\nflags\t\t: fpu vme svm lm\n"));
        assert!(has_virt_flag("flags\t\t: fpu vmx\n"));
        assert!(!has_virt_flag("flags\t\t: fpu vmxnet svmx\n"));
        assert!(!has_virt_flag("vmx flags\t: ept\nbugs\t: svm\n"));
    }
}
