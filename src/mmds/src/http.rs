//! The HTTP/1.x the guest speaks to MMDS: one request parsed from the bytes
//! a connection received, one response written back. Small on purpose:
//! request line, headers, an optional `Content-Length` body; no chunked
//! bodies (a PUT for a token has none).

/// Longest request head (request line and headers) accepted.
pub const MAX_HEAD_LEN: usize = 4096;
/// Longest request body accepted (MMDS requests carry none that matter).
pub const MAX_BODY_LEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("Invalid HTTP request line.")]
    BadRequestLine,
    #[error("Unsupported HTTP version.")]
    BadVersion,
    #[error("Invalid header: {0}.")]
    BadHeader(String),
    #[error("Request head longer than {MAX_HEAD_LEN} bytes.")]
    HeadTooLong,
    #[error("Request body longer than {MAX_BODY_LEN} bytes.")]
    BodyTooLong,
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without query string or fragment.
    pub path: String,
    /// HTTP/1.0 (`false`) or 1.1.
    pub http11: bool,
    /// (name, value) in order; names as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The first header with one of `names`: (its name as sent, value).
    pub fn header_of(&self, names: &[&str]) -> Option<(&str, &str)> {
        self.headers
            .iter()
            .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the connection stays open after the answer.
    pub fn keep_alive(&self) -> bool {
        match self.header("connection") {
            Some(v) if v.eq_ignore_ascii_case("close") => false,
            Some(v) if v.eq_ignore_ascii_case("keep-alive") => true,
            _ => self.http11,
        }
    }
}

/// Parses the request at the start of `buf`: `Ok(None)` while it is
/// incomplete, else the request and how many bytes of `buf` it took.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD_LEN { Err(HttpError::HeadTooLong) } else { Ok(None) };
    };
    if head_end > MAX_HEAD_LEN {
        return Err(HttpError::HeadTooLong);
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| HttpError::BadRequestLine)?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !target.starts_with('/') {
        return Err(HttpError::BadRequestLine);
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HttpError::BadVersion),
    };
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(':').ok_or_else(|| HttpError::BadHeader(l.escape_debug().to_string()))?;
        if k.is_empty() || k.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(HttpError::BadHeader(k.escape_debug().to_string()));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let req = Request { method: method.to_string(), path, http11, headers };
    let body_len = match req.header("content-length") {
        Some(v) => v.parse::<usize>().map_err(|_| HttpError::BadHeader(format!("Content-Length: {v}")))?,
        None => 0,
    };
    if body_len > MAX_BODY_LEN {
        return Err(HttpError::BodyTooLong);
    }
    let total = head_end + 4 + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((req, total)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra headers (name, value).
    pub headers: Vec<(String, String)>,
}

pub const TEXT_PLAIN: &str = "text/plain";
pub const APPLICATION_JSON: &str = "application/json";

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Self {
        Response { status, content_type, body: body.into(), headers: Vec::new() }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status, TEXT_PLAIN, body)
    }

    /// The bytes on the wire; `keep_alive` sets the Connection header.
    pub fn to_bytes(&self, http11: bool, keep_alive: bool) -> Vec<u8> {
        let mut s = format!(
            "HTTP/1.{} {} {}\r\nServer: Firecracker API\r\nConnection: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            u8::from(http11),
            self.status,
            reason(self.status),
            if keep_alive { "keep-alive" } else { "close" },
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.push_str(&self.body);
        s.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        501 => "Not Implemented",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_wget_request_with_headers() {
        let raw = b"GET /latest/meta-data?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\nX-metadata-token: abc\r\nConnection: close\r\n\r\n";
        let (r, n) = parse_request(raw).unwrap().unwrap();
        assert_eq!(n, raw.len());
        assert_eq!((r.method.as_str(), r.path.as_str(), r.http11), ("GET", "/latest/meta-data", true));
        assert_eq!(r.header("x-METADATA-token"), Some("abc"));
        assert!(!r.keep_alive());
    }

    #[test]
    fn incomplete_until_head_and_body_are_in() {
        let raw = b"PUT /latest/api/token HTTP/1.0\r\nContent-Length: 3\r\n\r\nabcGET";
        assert_eq!(parse_request(&raw[..20]).unwrap(), None);
        assert_eq!(parse_request(&raw[..raw.len() - 5]).unwrap(), None);
        let (r, n) = parse_request(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 3, "the next request's bytes stay");
        assert!(!r.keep_alive());
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(parse_request(b"GET\r\n\r\n"), Err(HttpError::BadRequestLine));
        assert_eq!(parse_request(b"GET / HTTP/2\r\n\r\n"), Err(HttpError::BadVersion));
        assert_eq!(parse_request(b"get / HTTP/1.1\r\n\r\n"), Err(HttpError::BadRequestLine));
        assert!(matches!(parse_request(b"GET / HTTP/1.1\r\nnocolon\r\n\r\n"), Err(HttpError::BadHeader(_))));
        assert_eq!(parse_request(&vec![b'a'; MAX_HEAD_LEN + 1]), Err(HttpError::HeadTooLong));
        assert_eq!(parse_request(b"PUT / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n"), Err(HttpError::BodyTooLong));
    }

    #[test]
    fn response_bytes() {
        let mut r = Response::text(200, "tok");
        r.headers.push(("X-metadata-token-ttl-seconds".into(), "60".into()));
        let s = String::from_utf8(r.to_bytes(true, false)).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(s.contains("Content-Length: 3\r\n") && s.contains("X-metadata-token-ttl-seconds: 60\r\n"));
        assert!(s.ends_with("\r\n\r\ntok"));
    }
}
