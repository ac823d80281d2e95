//! One HTTP request to a VMM's API socket, as a Firecracker client makes it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// `method path` with `body` (JSON) on the API socket `sock`, on a fresh
/// connection: (status, response body). Panics when the socket does not
/// answer within 30 s.
pub fn api_request(sock: &Path, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, String) {
    try_api_request(sock, method, path, body).unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", sock.display()))
}

/// [`api_request`] that returns the connection's error instead of panicking
/// (a readiness probe retries on it).
pub fn try_api_request(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> std::io::Result<(u16, String)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}
