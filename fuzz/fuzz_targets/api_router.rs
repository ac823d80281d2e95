//! The API's request parsing and routing (api/src/router.rs): any sequence
//! of requests (method, path, body) against one `Api`, as the HTTP server
//! (api/src/server.rs) hands them over, with the recording controller as
//! the VMM, so a sequence can configure, start and then reconfigure.
//!
//! Asserts: no panic; every answer has a status the API uses (2xx, 4xx),
//! never 500 (the recording controller does not fail); 204 has no body,
//! every other answer a JSON body, and every error a JSON object with a
//! string `fault_message`; an `Allow` list only comes with a 400.
#![no_main]

use std::sync::Arc;

use api::testing::RecordingController;
use api::{Api, VmConfig};
use libfuzzer_sys::fuzz_target;
use shimvmm_fuzz::Reader;

const METHODS: [&str; 6] = ["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let routes = api::routes();
    let started = r.u8() & 1 == 1;
    let api = Api::new("fuzz".into(), Arc::new(RecordingController::new()), VmConfig::default(), started);
    for _ in 0..16 {
        if r.is_empty() {
            break;
        }
        let m = r.u8();
        let method = if usize::from(m) < METHODS.len() * 40 {
            METHODS[usize::from(m) % METHODS.len()].to_string()
        } else {
            text(r.chunk())
        };
        let p = r.u8();
        let path = match routes.get(usize::from(p)) {
            // A served path, its parameter (if any) the fuzzer's.
            Some(route) if p & 0x80 == 0 => match route.path.find('{') {
                Some(at) => format!("{}{}", &route.path[..at], text(r.chunk())),
                None => route.path.to_string(),
            },
            _ => text(r.chunk()),
        };
        let body = r.chunk();
        let resp = api.handle(&method, &path, body);
        assert!(
            (200..300).contains(&resp.status) || (400..500).contains(&resp.status),
            "{method} {path:?}: status {} ({:?})",
            resp.status,
            resp.body
        );
        if resp.status == 204 {
            assert!(resp.body.is_none(), "204 with a body");
        } else {
            let body = resp.body.as_deref().expect("a non-204 answer has a body");
            let v: serde_json::Value = serde_json::from_str(body).expect("the body is JSON");
            if resp.status >= 300 {
                assert!(v.get("fault_message").is_some_and(|m| m.is_string()), "error without fault_message: {body}");
            }
        }
        if resp.allow.is_some() {
            assert_eq!(resp.status, 400, "Allow with status {}", resp.status);
        }
    }
});
