//! Helpers for the block unit tests: throwaway disk images.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

static N: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "shimvmm-blk-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A disk image holding `bytes`; keep the returned dir alive while using it.
pub fn image(bytes: &[u8]) -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
    (dir, path)
}
