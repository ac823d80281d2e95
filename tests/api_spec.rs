//! `api_spec.yaml` describes exactly what the API serves: the same routes,
//! request examples the server accepts, response objects with the fields
//! the spec lists, and a document that is valid OpenAPI 3.0.
//!
//! The OpenAPI validator is PyPI's `openapi-spec-validator`, installed on
//! first use into `target/tools/openapi-venv`:
//!   python3 -m venv target/tools/openapi-venv
//!   target/tools/openapi-venv/bin/pip install openapi-spec-validator==0.9.0
//! (or point SHIMVMM_OPENAPI_VALIDATOR at an installed `openapi-spec-validator`).
//! Needs python3 with the venv module (Debian: `apt-get install -y python3-venv`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use api::testing::RecordingController;
use api::{serve_with, ServeOptions};
use serde_json::Value;

const HTTP_METHODS: &[&str] = &["get", "put", "post", "patch", "delete", "head", "options", "trace"];
const VALIDATOR_VERSION: &str = "0.9.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn spec() -> Value {
    let text = std::fs::read_to_string(root().join("api_spec.yaml")).expect("read api_spec.yaml");
    serde_yaml_ng::from_str(&text).expect("api_spec.yaml is not valid YAML")
}

/// (METHOD, path) of every operation in the spec.
fn spec_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (key, _) in item.as_object().expect("path item") {
            if HTTP_METHODS.contains(&key.as_str()) {
                ops.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Resolve a local `$ref` ("#/components/...").
fn deref<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("only local $refs");
            deref(spec, spec.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}")))
        }
        None => v,
    }
}

struct Server {
    handle: Option<api::ApiServerHandle>,
    dir: PathBuf,
    sock: PathBuf,
}

impl Server {
    fn start(name: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("apispec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("api.sock");
        let handle = serve_with(&sock, Arc::new(RecordingController::new()), "spec".into(), ServeOptions::default())
            .expect("serve");
        Server { handle: Some(handle), dir, sock }
    }

    /// One request over a fresh connection: (status, body).
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status =
            resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad response {resp:?}"));
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn spec_paths_and_methods_are_exactly_the_served_routes() {
    let in_spec = spec_operations(&spec());
    let served: BTreeSet<(String, String)> =
        api::routes().iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    let missing: Vec<_> = served.difference(&in_spec).collect();
    let extra: Vec<_> = in_spec.difference(&served).collect();
    assert!(missing.is_empty(), "served but not in api_spec.yaml: {missing:?}");
    assert!(extra.is_empty(), "in api_spec.yaml but not served: {extra:?}");
    assert!(served.len() >= 12);
}

/// (METHOD, path) of the operations marked `x-shimvmm-unsupported`.
fn spec_unsupported(spec: &Value) -> BTreeSet<(String, String)> {
    spec_operations(spec)
        .into_iter()
        .filter(|(method, path)| {
            spec["paths"][path][method.to_lowercase()]["x-shimvmm-unsupported"] == Value::Bool(true)
        })
        .collect()
}

#[test]
fn spec_marks_exactly_the_routes_not_supported_yet() {
    let in_spec = spec_unsupported(&spec());
    let served: BTreeSet<(String, String)> =
        api::unsupported_routes().iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    assert_eq!(in_spec, served, "x-shimvmm-unsupported in api_spec.yaml vs api::unsupported_routes()");
    assert!(served.contains(&("PUT".to_string(), "/balloon".to_string())));
    assert!(!served.contains(&("PUT".to_string(), "/mmds".to_string())), "PUT /mmds is served");
    assert!(!served.contains(&("PUT".to_string(), "/vsock".to_string())), "PUT /vsock is served");
}

/// Every request example in the spec, in an order the server can accept:
/// configuration first, then the actions (InstanceStart before the others).
fn request_examples(spec: &Value) -> Vec<(String, String, String, Value)> {
    let mut out = Vec::new();
    for (method, path) in spec_operations(spec) {
        let op = &spec["paths"][&path][method.to_lowercase()];
        let Some(body) = op.get("requestBody") else {
            continue;
        };
        let media = &deref(spec, body)["content"]["application/json"];
        let mut examples: Vec<(String, Value)> = Vec::new();
        if let Some(map) = media.get("examples").and_then(Value::as_object) {
            for (name, ex) in map {
                examples.push((name.clone(), deref(spec, ex)["value"].clone()));
            }
        }
        if let Some(ex) = media.get("example") {
            examples.push(("example".into(), ex.clone()));
        }
        assert!(!examples.is_empty(), "{method} {path} takes a body but the spec gives no example");
        for (name, value) in examples {
            out.push((method.clone(), path.clone(), name, value));
        }
    }
    let unsupported = spec_unsupported(spec);
    let rank = |(method, path, _, v): &(String, String, String, Value)| {
        if unsupported.contains(&(method.clone(), path.clone())) {
            return 5;
        }
        match (method.as_str(), path.as_str(), v["action_type"].as_str()) {
            // After the document they patch and the interface they name.
            ("PATCH", "/drives/{drive_id}", _) | ("PATCH", "/mmds", _) | ("PUT", "/mmds/config", _) => 1,
            (_, "/actions", Some("InstanceStart")) => 2,
            (_, "/actions", _) => 3,
            ("PATCH", "/network-interfaces/{iface_id}", _) | ("PATCH", "/vm", _) => 4,
            _ => 0,
        }
    };
    out.sort_by_key(rank);
    out
}

/// `/drives/{drive_id}` with the body's `drive_id` filled in.
fn fill_path(template: &str, body: &Value) -> String {
    template
        .split('/')
        .map(|seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                body[name].as_str().unwrap_or_else(|| panic!("example for {template} lacks {name}")).to_string()
            }
            None => seg.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn spec_request_examples_are_accepted_by_the_server() {
    let spec = spec();
    let server = Server::start("examples");
    let examples = request_examples(&spec);
    let unsupported = spec_unsupported(&spec);
    assert!(examples.len() >= 10, "too few examples: {}", examples.len());
    for (method, template, name, body) in &examples {
        let path = fill_path(template, body);
        let (status, resp) = server.request(method, &path, Some(body));
        if unsupported.contains(&(method.clone(), template.clone())) {
            assert_eq!(status, 400, "example {name:?} of unsupported {method} {template}: {resp}");
            assert!(resp.contains("is not supported by shimvmm yet"), "{method} {template}: {resp}");
        } else {
            assert!((200..300).contains(&status), "example {name:?} of {method} {template} got {status}: {resp}");
        }
    }
}

/// Check a JSON value against a spec schema: types, required fields, no
/// undeclared fields, enums. Enough to catch the spec and server drifting.
fn check_against_schema(spec: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = deref(spec, schema);
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        assert!(choices.contains(value), "{at}: {value} is not one of {choices:?}");
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let obj = value.as_object().unwrap_or_else(|| panic!("{at}: expected an object, got {value}"));
            let props = schema.get("properties").and_then(Value::as_object);
            for req in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let req = req.as_str().unwrap();
                assert!(obj.contains_key(req), "{at}: required field {req} missing in {value}");
            }
            if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                for key in obj.keys() {
                    assert!(
                        props.is_some_and(|p| p.contains_key(key)),
                        "{at}: field {key} is served but not in the spec"
                    );
                }
            }
            if let Some(props) = props {
                for (key, v) in obj {
                    if let Some(sub) = props.get(key) {
                        check_against_schema(spec, sub, v, &format!("{at}.{key}"));
                    }
                }
            }
        }
        Some("array") => {
            for (i, item) in value.as_array().unwrap_or_else(|| panic!("{at}: expected an array")).iter().enumerate() {
                check_against_schema(spec, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        Some("string") => assert!(value.is_string(), "{at}: expected a string, got {value}"),
        Some("integer") => assert!(value.is_u64() || value.is_i64(), "{at}: expected an integer, got {value}"),
        Some("boolean") => assert!(value.is_boolean(), "{at}: expected a boolean, got {value}"),
        _ => {}
    }
}

#[test]
fn served_responses_match_the_spec_schemas() {
    let spec = spec();
    let server = Server::start("responses");
    let unsupported = spec_unsupported(&spec);
    let check_gets = |stage: &str| {
        for (method, path) in spec_operations(&spec) {
            if method != "GET" || path.contains('{') {
                continue;
            }
            if unsupported.contains(&(method.clone(), path.clone())) {
                let (status, body) = server.request("GET", &path, None);
                assert_eq!(status, 400, "{stage} GET {path}: {body}");
                continue;
            }
            let op = &spec["paths"][&path]["get"];
            let schema = &deref(&spec, &op["responses"]["200"])["content"]["application/json"]["schema"];
            let (status, body) = server.request("GET", &path, None);
            assert_eq!(status, 200, "{stage} GET {path}: {body}");
            let value: Value = serde_json::from_str(&body).unwrap();
            check_against_schema(&spec, schema, &value, &format!("{stage} GET {path}"));
        }
    };
    check_gets("before configuration");
    for (method, template, _, body) in request_examples(&spec) {
        server.request(&method, &fill_path(&template, &body), Some(&body));
    }
    check_gets("after InstanceStart");
    // Error bodies are the spec's Error object.
    let (status, body) = server.request("PUT", "/boot-source", Some(&serde_json::json!({"x": 1})));
    assert_eq!(status, 400);
    let error_schema = &spec["components"]["schemas"]["Error"];
    check_against_schema(&spec, error_schema, &serde_json::from_str(&body).unwrap(), "400 body");
    // The schema check itself rejects drift.
    let drifted = serde_json::json!({"fault_message": "x", "extra": 1});
    let caught = std::panic::catch_unwind(|| check_against_schema(&spec, error_schema, &drifted, "drift"));
    assert!(caught.is_err(), "an undeclared field must be caught");
}

/// Hold an exclusive lock on `path` while `f` runs (other test processes or
/// the devtool may be installing at the same time).
fn with_lock<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).unwrap();
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}: {}", path.display(), std::io::Error::last_os_error());
    let out = f();
    drop(file); // closing releases the lock
    out
}

/// The `openapi-spec-validator` executable, installing it on first use.
fn validator() -> PathBuf {
    if let Some(path) = std::env::var_os("SHIMVMM_OPENAPI_VALIDATOR") {
        return PathBuf::from(path);
    }
    let tools = root().join("target/tools");
    let venv = tools.join("openapi-venv");
    let exe = venv.join("bin/openapi-spec-validator");
    std::fs::create_dir_all(&tools).unwrap();
    with_lock(&tools.join("openapi-venv.lock"), || {
        if exe.exists() {
            return;
        }
        let how = format!(
            "python3 -m venv {0} && {0}/bin/pip install openapi-spec-validator=={VALIDATOR_VERSION}",
            venv.display()
        );
        let status = Command::new("sh").arg("-c").arg(format!("{how} >&2")).status();
        match status {
            Ok(s) if s.success() && exe.exists() => {}
            other => panic!(
                "cannot install the OpenAPI validator ({other:?}). Install it with:\n  {how}\n\
                 (needs python3 with venv: apt-get install -y python3-venv) or set SHIMVMM_OPENAPI_VALIDATOR"
            ),
        }
    });
    exe
}

fn validate(exe: &Path, file: &Path) -> (bool, String) {
    let out = Command::new(exe)
        .args(["--schema", "3.0"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn spec_is_valid_openapi_3() {
    let exe = validator();
    let (ok, text) = validate(&exe, &root().join("api_spec.yaml"));
    assert!(ok && text.contains("OK"), "api_spec.yaml is not valid OpenAPI 3.0:\n{text}");

    // The validator does reject a broken document (a response without a description).
    let broken = spec_text_with_broken_response();
    let dir = std::env::temp_dir().join(format!("apispec-{}-broken", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.yaml");
    std::fs::write(&file, broken).unwrap();
    let (ok, text) = validate(&exe, &file);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "the validator accepted a broken spec:\n{text}");
}

fn spec_text_with_broken_response() -> String {
    let mut spec = spec();
    let resp = spec.pointer_mut("/paths/~1version/get/responses/200").unwrap().as_object_mut().unwrap();
    resp.remove("description");
    serde_yaml_ng::to_string(&spec).unwrap()
}
