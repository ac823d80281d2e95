//! The log in Firecracker's line format, to stderr or to the file or FIFO
//! that `--log-path` or `PUT /logger` names:
//!
//! `2026-12-06T11:06:28.727252163 [vm-id:thread(:LEVEL)(:file:line)] message`
//!
//! One global logger (the `log` crate allows one); its target, level and
//! format change at run time.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use api::{LogLevel, Logger};
use log::{LevelFilter, Log, Metadata, Record};
use vmm::config::sync::lock_unpoisoned;

struct Settings {
    level: LevelFilter,
    show_level: bool,
    show_origin: bool,
    module: Option<String>,
    /// `None`: stderr (stdout is the guest's console).
    file: Option<std::sync::Mutex<File>>,
}

struct FcLogger {
    id: OnceLock<String>,
    settings: RwLock<Settings>,
}

static LOGGER: FcLogger = FcLogger {
    id: OnceLock::new(),
    settings: RwLock::new(Settings {
        level: LevelFilter::Warn,
        show_level: false,
        show_origin: false,
        module: None,
        file: None,
    }),
};

pub fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::Off,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warning => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    }
}

/// Install the logger (once, before threads start): instance id, level.
pub fn init(id: &str, level: LevelFilter) {
    let _ = LOGGER.id.set(id.to_string());
    if let Ok(mut s) = LOGGER.settings.write() {
        s.level = level;
    }
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Open a log or metrics destination: a FIFO (opened read-write, so the
/// open never waits for a reader, and non-blocking, so a stalled reader
/// never stalls the VMM) or a file, appended to. Firecracker requires the
/// file to exist; shimvmm creates a missing one (owner-only).
pub fn open_sink(path: &std::path::Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Write one whole line to a non-blocking sink. A FIFO whose reader is
/// behind refuses the line (`WouldBlock`) rather than stall the VMM; a line
/// already partly written is finished (waiting up to 100 ms for room) so a
/// reader never sees half a line followed by another.
pub fn write_line(file: &File, line: &[u8]) -> std::io::Result<()> {
    // Sleeping, not poll(2): this runs on every kind of thread, and each
    // thread's seccomp filter allows nanosleep.
    const RETRY: std::time::Duration = std::time::Duration::from_millis(1);
    const RETRIES: u32 = 100;
    let mut out = file;
    let (mut done, mut waited) = (0, 0);
    while done < line.len() {
        match out.write(&line[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && done > 0 => {
                waited += 1;
                if waited > RETRIES {
                    return Err(std::io::Error::new(e.kind(), "the reader stopped in the middle of a line"));
                }
                std::thread::sleep(RETRY);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Apply `PUT /logger` (or the `--log-path` family of flags): the fields
/// given change, the others stay.
pub fn configure(cfg: &Logger) -> std::io::Result<()> {
    let file = match &cfg.log_path {
        Some(path) => Some(
            open_sink(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot open log file {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let mut s = LOGGER.settings.write().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = file {
        s.file = Some(std::sync::Mutex::new(f));
    }
    if let Some(level) = cfg.level {
        s.level = level_filter(level);
        log::set_max_level(s.level);
    }
    if let Some(v) = cfg.show_level {
        s.show_level = v;
    }
    if let Some(v) = cfg.show_log_origin {
        s.show_origin = v;
    }
    if let Some(m) = &cfg.module {
        s.module = Some(m.clone());
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn` in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// One line in Firecracker's layout (without the newline).
fn format_line(s: &Settings, id: &str, thread: &str, record: &Record<'_>) -> String {
    let mut tag = format!("{id}:{thread}");
    if s.show_level {
        tag.push(':');
        tag.push_str(record.level().as_str());
    }
    if s.show_origin {
        tag.push_str(&format!(":{}:{}", record.file().unwrap_or("?"), record.line().unwrap_or(0)));
    }
    format!("{} [{tag}] {}", timestamp(SystemTime::now()), record.args())
}

impl Log for FcLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let Ok(s) = self.settings.read() else { return false };
        let module_ok = match s.module.as_deref() {
            Some(m) => metadata.target().starts_with(m),
            None => true,
        };
        metadata.level() <= s.level && module_ok
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Ok(s) = self.settings.read() else { return };
        let thread = std::thread::current();
        let id = self.id.get().map_or("anonymous-instance", String::as_str);
        let mut line = format_line(&s, id, thread.name().unwrap_or("unnamed"), record);
        line.push('\n');
        match &s.file {
            // A full FIFO drops the line rather than stall the VMM.
            Some(f) => {
                let _ = write_line(&lock_unpoisoned(f), line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_733_483_188, 727_252_163);
        assert_eq!(timestamp(t), "2024-12-06T11:06:28.727252163");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000000");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000000");
    }

    #[test]
    fn lines_to_a_full_fifo_are_dropped_whole() {
        let dir = std::env::temp_dir().join(format!("shimvmm-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("fifo");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let f = open_sink(&p).unwrap();
        let line = vec![b'x'; 1000];
        let mut written = 0;
        let err = loop {
            match write_line(&f, &line) {
                Ok(()) => written += 1,
                Err(e) => break e,
            }
            assert!(written < 10_000, "the FIFO never filled");
        };
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
        // Whatever was written is whole lines.
        let mut r = std::fs::File::open(&p).unwrap();
        let mut buf = vec![0u8; written * 1000 + 10];
        let mut got = 0;
        while got < written * 1000 {
            got += std::io::Read::read(&mut r, &mut buf[got..]).unwrap();
        }
        assert_eq!(got % 1000, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lines_have_firecrackers_layout() {
        let mut s =
            Settings { level: LevelFilter::Info, show_level: false, show_origin: false, module: None, file: None };
        let rec = Record::builder()
            .args(format_args!("API server started."))
            .level(log::Level::Info)
            .file(Some("src/x.rs"))
            .line(Some(7))
            .build();
        let line = format_line(&s, "vm1", "fc_api", &rec);
        assert!(line.ends_with(" [vm1:fc_api] API server started."), "{line}");
        assert_eq!(line.find(" ["), Some(29), "{line}");
        s.show_level = true;
        s.show_origin = true;
        let line = format_line(&s, "vm1", "fc_api", &rec);
        assert!(line.ends_with(" [vm1:fc_api:INFO:src/x.rs:7] API server started."), "{line}");
    }
}
