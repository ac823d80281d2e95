//! Input files are opened without following symlinks and without hanging on
//! FIFOs (issue 19), from the command line (host test, no guest needed):
//! - `fifo_or_symlink_inputs_fail_at_once_with_one_line`: a FIFO given as a
//!   drive (`--disk path=FIFO`), as the kernel or the initrd, a symlink as
//!   the kernel or a drive, and a host block device as a drive each make
//!   shimvmm exit 1 within seconds with one `shimvmm: error:` line naming the
//!   file and the problem. (The metrics temp-file cases are unit tests in
//!   src/vmm/src/files.rs: a symlink or FIFO at the temporary path is never
//!   opened.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shimvmm_tests::shimvmm_bin;

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Runs shimvmm with `args` (and `--no-api`), killing it after 20 s.
fn run(args: &[String]) -> (Option<i32>, String, Duration) {
    let t = Instant::now();
    let mut child = Command::new(shimvmm_bin())
        .args(args)
        .arg("--no-api")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), t.elapsed())
}

#[test]
fn fifo_or_symlink_inputs_fail_at_once_with_one_line() {
    let dir: PathBuf = std::env::temp_dir().join(format!("shimvmm-inputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("kernel");
    std::fs::write(&kernel, vec![0u8; 4096]).unwrap();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let kernel_link = dir.join("kernel-link");
    std::os::unix::fs::symlink(&kernel, &kernel_link).unwrap();
    let disk_link = dir.join("disk-link");
    std::os::unix::fs::symlink(&disk, &disk_link).unwrap();
    let s = |p: &Path| p.display().to_string();
    let mut cases: Vec<(Vec<String>, &str, String)> = vec![
        (vec!["--kernel".into(), s(&kernel), "--disk".into(), format!("path={}", s(&fifo))], "FIFO", s(&fifo)),
        (
            vec!["--kernel".into(), s(&kernel), "--disk".into(), format!("path={},readonly=on", s(&fifo))],
            "FIFO",
            s(&fifo),
        ),
        (vec!["--kernel".into(), s(&fifo)], "FIFO", s(&fifo)),
        (vec!["--kernel".into(), s(&kernel), "--initrd".into(), s(&fifo)], "FIFO", s(&fifo)),
        (vec!["--kernel".into(), s(&kernel_link)], "symbolic link", s(&kernel_link)),
        (
            vec!["--kernel".into(), s(&kernel), "--disk".into(), format!("path={}", s(&disk_link))],
            "symbolic link",
            s(&disk_link),
        ),
    ];
    // A host block device, where the machine has one we can name.
    if let Some(b) = ["/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1"].iter().find(|p| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::symlink_metadata(p).map(|m| m.file_type().is_block_device()).unwrap_or(false)
    }) {
        cases.push((
            vec!["--kernel".into(), s(&kernel), "--disk".into(), format!("path={b},readonly=on")],
            "--allow-block-devices",
            b.to_string(),
        ));
    }
    for (args, problem, path) in cases {
        let (code, err, took) = run(&args);
        assert!(took < Duration::from_secs(10), "{args:?}: took {took:?} (a hang?): {err}");
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("shimvmm: error: "), "{args:?}: {err}");
        assert!(err.contains(problem) && err.contains(&path), "{args:?}: want {problem:?} and {path:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
