//! The API's HTTP layer (api/src/server.rs) in front of the router: the
//! fuzzer's bytes are what a client writes on one connection to the real
//! server (hyper, the body limits and timeouts, the request handling), which
//! runs for the whole fuzzing process on a Unix socket in the temp dir with
//! the recording controller. State carries over between inputs (as it does
//! for a real client), so a crash may need the inputs before it: libFuzzer
//! keeps them in its corpus.
//!
//! Asserts: no panic (on any thread: libfuzzer-sys aborts on one); each
//! connection is answered within 3 s or closed; every answer is an HTTP/1.x
//! status line (1.0 for a 1.0 client) with a status the API uses (2xx, 4xx) or hyper's own 4xx/5xx
//! for what it cannot parse.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use api::testing::RecordingController;
use api::{ApiServerHandle, ServeOptions};
use libfuzzer_sys::fuzz_target;

fn server() -> &'static PathBuf {
    static SERVER: OnceLock<(PathBuf, usize)> = OnceLock::new();
    &SERVER
        .get_or_init(|| {
            let path = std::env::temp_dir().join(format!("shimvmm-fuzz-api-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let opts = ServeOptions {
                header_read_timeout: Duration::from_secs(1),
                body_read_timeout: Duration::from_secs(1),
                write_timeout: Duration::from_secs(1),
                ..ServeOptions::default()
            };
            let handle: ApiServerHandle =
                api::serve_with(&path, Arc::new(RecordingController::new()), "fuzz".into(), opts).expect("API server");
            // Serves until the process ends.
            let leaked: &'static ApiServerHandle = Box::leak(Box::new(handle));
            (leaked.socket_path().to_path_buf(), 0)
        })
        .0
}

fuzz_target!(|data: &[u8]| {
    let mut s = UnixStream::connect(server()).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("read timeout");
    s.set_write_timeout(Some(Duration::from_secs(3))).expect("write timeout");
    // The server may answer and close before reading everything.
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
        Err(e) => panic!("no answer or close within 3 s: {e} (got {} bytes)", out.len()),
    }
    // Every response on the connection (pipelined requests get one each).
    let text = String::from_utf8_lossy(&out);
    for (i, line) in text.split("\r\n").enumerate() {
        if i == 0 && !out.is_empty() {
            assert!(line.starts_with("HTTP/1.1 ") || line.starts_with("HTTP/1.0 "), "not a status line: {line:?}");
        }
        if let Some(rest) = line.strip_prefix("HTTP/1.1 ").or_else(|| line.strip_prefix("HTTP/1.0 ")) {
            let code: u16 = rest.get(..3).and_then(|c| c.parse().ok()).expect("a 3-digit status");
            assert!(
                (200..300).contains(&code) || (400..600).contains(&code) && code != 500 || code == 100,
                "status {code}: {text}"
            );
        }
    }
});
