//! What MMDS answers a guest's request, as Firecracker does: GET reads
//! the document (V2: only with a valid session token), PUT
//! `/latest/api/token` issues a token; anything else is refused.

use std::time::Instant;

use vmm_config::MmdsVersion;

use crate::data_store::{DataStoreError, Mmds, OutputFormat};
use crate::http::{Request, Response, APPLICATION_JSON, TEXT_PLAIN};

/// Where a guest asks for a session token.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Headers carrying the session token (Firecracker's and EC2's names).
pub const TOKEN_HEADERS: &[&str] = &["x-metadata-token", "x-aws-ec2-metadata-token"];
/// Headers carrying the lifetime asked for a new token.
pub const TTL_HEADERS: &[&str] = &["x-metadata-token-ttl-seconds", "x-aws-ec2-metadata-token-ttl-seconds"];
/// A token request through a proxy is refused (EC2's defence against SSRF).
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// Firecracker's wording of the refusals a guest script may look for.
pub const NO_TOKEN: &str =
    "No MMDS token provided. Use `X-metadata-token` or `X-aws-ec2-metadata-token` header to specify the session token.";
pub const INVALID_TOKEN: &str = "MMDS token not valid.";
pub const NO_TTL: &str = "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or `X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime.";

/// Which request was answered how (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Served,
    TokenIssued,
    /// Refused for want of a (valid) token under V2.
    Unauthorized,
    /// Any other refusal (bad path, method, header).
    Refused,
}

/// The answer to `req` at `now`.
pub fn respond(mmds: &mut Mmds, req: &Request, now: Instant) -> (Response, Outcome) {
    if req.path.is_empty() {
        return (Response::text(400, "Invalid URI."), Outcome::Refused);
    }
    match req.method.as_str() {
        "GET" => get(mmds, req, now),
        "PUT" => put(mmds, req, now),
        _ => {
            let mut r = Response::text(405, "Not allowed HTTP method.");
            r.headers.push(("Allow".into(), "GET, PUT".into()));
            (r, Outcome::Refused)
        }
    }
}

fn get(mmds: &Mmds, req: &Request, now: Instant) -> (Response, Outcome) {
    if mmds.version() == MmdsVersion::V2 {
        match req.header_of(TOKEN_HEADERS) {
            None => return (Response::text(401, NO_TOKEN), Outcome::Unauthorized),
            Some((_, tok)) if !mmds.token_valid(tok, now) => {
                return (Response::text(401, INVALID_TOKEN), Outcome::Unauthorized)
            }
            Some(_) => {}
        }
    }
    let json = req.header("accept").is_some_and(|a| a.contains(APPLICATION_JSON));
    let (format, ctype) = if json { (OutputFormat::Json, APPLICATION_JSON) } else { (OutputFormat::Imds, TEXT_PLAIN) };
    match mmds.get(&req.path, format) {
        Ok(body) => (Response::new(200, ctype, body), Outcome::Served),
        Err(DataStoreError::NotFound) => {
            (Response::text(404, format!("Resource not found: {}.", req.path)), Outcome::Refused)
        }
        Err(e @ DataStoreError::UnsupportedValueType) => (Response::text(501, e.to_string()), Outcome::Refused),
        Err(e) => (Response::text(400, e.to_string()), Outcome::Refused),
    }
}

fn put(mmds: &mut Mmds, req: &Request, now: Instant) -> (Response, Outcome) {
    if let Some((name, _)) = req.header_of(&[FORWARDED_FOR]) {
        return (Response::text(400, format!("Unsupported header name. Key: {name}")), Outcome::Refused);
    }
    let mut path = req.path.clone();
    while path.contains("//") {
        path = path.replace("//", "/");
    }
    if path != TOKEN_PATH {
        return (Response::text(404, format!("Resource not found: {}.", req.path)), Outcome::Refused);
    }
    let Some((name, value)) = req.header_of(TTL_HEADERS) else {
        return (Response::text(400, NO_TTL), Outcome::Refused);
    };
    let Ok(ttl) = value.parse::<u32>() else {
        return (Response::text(400, format!("Invalid value. Key:{name}; Value:{value}")), Outcome::Refused);
    };
    match mmds.issue_token(ttl, now) {
        Ok(token) => {
            let mut r = Response::text(200, token);
            r.headers.push((name.to_string(), ttl.to_string()));
            (r, Outcome::TokenIssued)
        }
        Err(e) => (Response::text(400, e.to_string()), Outcome::Refused),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::http::parse_request;

    fn req(raw: &str) -> Request {
        parse_request(raw.as_bytes()).unwrap().unwrap().0
    }

    fn store(version: MmdsVersion) -> Mmds {
        let mut m = Mmds::default();
        m.set_version(version);
        m.put(json!({"latest": {"meta-data": {"instance-id": "i-42", "net": {"mac": "aa"}}}})).unwrap();
        m
    }

    #[test]
    fn v2_token_then_nested_get() {
        let mut m = store(MmdsVersion::V2);
        let now = Instant::now();
        let (r, o) =
            respond(&mut m, &req("PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n"), now);
        assert_eq!((r.status, o), (200, Outcome::TokenIssued));
        assert_eq!(r.headers, vec![("X-metadata-token-ttl-seconds".to_string(), "60".to_string())]);
        let tok = r.body;
        let (r, o) = respond(
            &mut m,
            &req(&format!("GET /latest/meta-data/net/mac HTTP/1.1\r\nX-metadata-token: {tok}\r\n\r\n")),
            now,
        );
        assert_eq!((r.status, r.body.as_str(), o), (200, "aa", Outcome::Served));
        let (r, _) = respond(
            &mut m,
            &req(&format!(
                "GET /latest/meta-data HTTP/1.1\r\nX-aws-ec2-metadata-token: {tok}\r\nAccept: application/json\r\n\r\n"
            )),
            now,
        );
        assert_eq!((r.status, r.content_type), (200, APPLICATION_JSON));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["net"]["mac"], "aa");
    }

    #[test]
    fn v2_refuses_v1_requests_and_bad_tokens() {
        let mut m = store(MmdsVersion::V2);
        let now = Instant::now();
        let (r, o) = respond(&mut m, &req("GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n"), now);
        assert_eq!((r.status, r.body.as_str(), o), (401, NO_TOKEN, Outcome::Unauthorized));
        let (r, o) = respond(&mut m, &req("GET /latest HTTP/1.1\r\nX-metadata-token: forged\r\n\r\n"), now);
        assert_eq!((r.status, r.body.as_str(), o), (401, INVALID_TOKEN, Outcome::Unauthorized));
    }

    #[test]
    fn v1_serves_without_token() {
        let mut m = store(MmdsVersion::V1);
        let (r, _) = respond(&mut m, &req("GET /latest/meta-data/ HTTP/1.0\r\n\r\n"), Instant::now());
        assert_eq!((r.status, r.body.as_str()), (200, "instance-id\nnet/"));
    }

    #[test]
    fn refusals() {
        let mut m = store(MmdsVersion::V2);
        let now = Instant::now();
        let s = |m: &mut Mmds, raw: &str| respond(m, &req(raw), now).0.status;
        assert_eq!(s(&mut m, "PUT /latest/api/token HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(s(&mut m, "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 0\r\n\r\n"), 400);
        assert_eq!(s(&mut m, "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: x\r\n\r\n"), 400);
        assert_eq!(
            s(
                &mut m,
                "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 5\r\nX-Forwarded-For: a\r\n\r\n"
            ),
            400
        );
        assert_eq!(s(&mut m, "PUT /latest HTTP/1.1\r\nX-metadata-token-ttl-seconds: 5\r\n\r\n"), 404);
        assert_eq!(s(&mut m, "POST /latest HTTP/1.1\r\n\r\n"), 405);
        m.set_version(MmdsVersion::V1);
        assert_eq!(s(&mut m, "GET /nope HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(TEXT_PLAIN, "text/plain");
    }
}
