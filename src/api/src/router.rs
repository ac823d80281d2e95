//! Routing and request handling, independent of the HTTP library.
//!
//! One table lists every route with its handler, so what [`routes`] reports
//! (and the OpenAPI test checks) is exactly what is served.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use vmm_config::sync::lock_unpoisoned;
use vmm_config::{
    parse_json, BootSource, Drive, MachineConfig, MachineConfigUpdate, Metrics, NetworkInterface, ValidationError,
    VmConfig, VmSpec,
};

use crate::controller::{ControllerError, VmmController};
use crate::types::{ActionType, Fault, InstanceActionInfo, InstanceInfo, VmmVersion, APP_NAME, VMM_VERSION};

/// HTTP status codes the router produces.
pub mod status {
    pub const OK: u16 = 200;
    pub const NO_CONTENT: u16 = 204;
    pub const BAD_REQUEST: u16 = 400;
    pub const NOT_FOUND: u16 = 404;
    pub const METHOD_NOT_ALLOWED: u16 = 405;
    pub const REQUEST_TIMEOUT: u16 = 408;
    pub const PAYLOAD_TOO_LARGE: u16 = 413;
    pub const TOO_MANY_REQUESTS: u16 = 429;
    pub const INTERNAL_SERVER_ERROR: u16 = 500;
}

/// One served method and path; `{name}` marks a path parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

/// A response, ready for whatever HTTP layer sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    /// JSON text; `None` for 204.
    pub body: Option<String>,
    /// For 405: the methods the path does serve (the `Allow` header).
    pub allow: Option<String>,
}

impl ApiResponse {
    fn json<T: Serialize>(status: u16, value: &T) -> Self {
        // Our response types always serialize; a failure would be a bug worth a 500.
        match serde_json::to_string(value) {
            Ok(body) => ApiResponse { status, body: Some(body), allow: None },
            Err(e) => ApiResponse::fault(status::INTERNAL_SERVER_ERROR, format!("cannot encode the response: {e}")),
        }
    }

    /// `{"fault_message": ...}` with `status`.
    pub fn fault(status: u16, message: impl Into<String>) -> Self {
        let body = serde_json::to_string(&Fault { fault_message: message.into() })
            .unwrap_or_else(|_| r#"{"fault_message":"unencodable error"}"#.to_string());
        ApiResponse { status, body: Some(body), allow: None }
    }

    fn no_content() -> Self {
        ApiResponse { status: status::NO_CONTENT, body: None, allow: None }
    }
}

type Reply = Result<ApiResponse, ApiResponse>;
type Handler = fn(&Api, &str, &[u8]) -> Reply;

struct Entry {
    route: Route,
    handler: Handler,
}

macro_rules! entry {
    ($method:literal, $path:literal, $handler:expr) => {
        Entry { route: Route { method: $method, path: $path }, handler: $handler }
    };
}

static TABLE: &[Entry] = &[
    entry!("GET", "/", Api::get_instance_info),
    entry!("GET", "/version", Api::get_version),
    entry!("PUT", "/boot-source", Api::put_boot_source),
    entry!("GET", "/machine-config", Api::get_machine_config),
    entry!("PUT", "/machine-config", Api::put_machine_config),
    entry!("PATCH", "/machine-config", Api::patch_machine_config),
    entry!("PUT", "/drives/{drive_id}", Api::put_drive),
    entry!("PUT", "/network-interfaces/{iface_id}", Api::put_network_interface),
    entry!("PUT", "/actions", Api::put_action),
    entry!("PUT", "/metrics", Api::put_metrics),
    entry!("GET", "/metrics", Api::get_metrics),
    entry!("GET", "/vm/config", Api::get_vm_config),
];

/// Every method and path the API serves.
pub fn routes() -> Vec<Route> {
    TABLE.iter().map(|e| e.route).collect()
}

/// Match `path` against a template; on success, the path parameter ("" if none).
fn match_path<'p>(template: &str, path: &'p str) -> Option<&'p str> {
    let mut param = "";
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(param),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return None;
                }
                param = g;
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// What the API holds before and after boot.
#[derive(Debug, Default)]
struct ApiState {
    config: VmConfig,
    started: bool,
    /// A controller `start` is running: configuration is frozen, but reads
    /// are answered (the state lock is not held across the call).
    starting: bool,
}

/// The API's state and handlers; shared by the server's connections.
pub struct Api {
    id: String,
    controller: Arc<dyn VmmController>,
    state: Mutex<ApiState>,
    /// Serialises the controller's actions (start, Ctrl+Alt+Del, flush).
    actions: Mutex<()>,
}

/// Clears `starting` however `start` ends, a panic included.
struct StartingGuard<'a>(&'a Api);

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().starting = false;
    }
}

fn bad_request(message: impl Into<String>) -> ApiResponse {
    ApiResponse::fault(status::BAD_REQUEST, message)
}

/// Parse a request body, naming the field that is wrong.
fn body_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request(format!("the request body is empty; {what} expects a JSON object")));
    }
    parse_json(body).map_err(|e| bad_request(e.to_string()))
}

impl Api {
    /// `initial` seeds the configuration (from `--config-file`); `started`
    /// says the VMM already booted it, so pre-boot changes are refused.
    pub fn new(id: String, controller: Arc<dyn VmmController>, initial: VmConfig, started: bool) -> Self {
        Api {
            id,
            controller,
            state: Mutex::new(ApiState { config: initial, started, starting: false }),
            actions: Mutex::new(()),
        }
    }

    /// Answer one request.
    pub fn handle(&self, method: &str, path: &str, body: &[u8]) -> ApiResponse {
        let mut allowed = Vec::new();
        for entry in TABLE {
            if let Some(param) = match_path(entry.route.path, path) {
                if entry.route.method == method {
                    return (entry.handler)(self, param, body).unwrap_or_else(|fault| fault);
                }
                allowed.push(entry.route.method);
            }
        }
        if allowed.is_empty() {
            return ApiResponse::fault(status::NOT_FOUND, format!("no such path: {}", path.escape_debug()));
        }
        let allow = allowed.join(", ");
        let mut resp = ApiResponse::fault(
            status::METHOD_NOT_ALLOWED,
            format!("{} is not served on {path}; use {allow}", method.escape_debug()),
        );
        resp.allow = Some(allow);
        resp
    }

    fn lock(&self) -> MutexGuard<'_, ApiState> {
        // A panicking controller must not take the API down with it: the
        // state is only written after every check passed, so it is consistent.
        lock_unpoisoned(&self.state)
    }

    /// The state, if pre-boot changes are still allowed.
    fn lock_pre_boot(&self, what: &str) -> Result<MutexGuard<'_, ApiState>, ApiResponse> {
        let state = self.lock();
        if state.started {
            return Err(bad_request(format!("{what} cannot be changed after InstanceStart")));
        }
        if state.starting {
            return Err(bad_request(format!("{what} cannot be changed while InstanceStart is in progress")));
        }
        Ok(state)
    }

    /// Validate `candidate` as a whole (each object and the rules between
    /// them: `VmConfig::validate`, the one place they are checked) and, if it
    /// passes, make it the configuration.
    fn commit(state: &mut ApiState, candidate: VmConfig, own_prefix: &str) -> Reply {
        candidate.validate().map_err(|e| bad_request(strip_own_prefix(e, own_prefix)))?;
        state.config = candidate;
        Ok(ApiResponse::no_content())
    }

    fn get_instance_info(&self, _: &str, _: &[u8]) -> Reply {
        let info = InstanceInfo {
            id: self.id.clone(),
            state: self.controller.state(),
            vmm_version: VMM_VERSION.to_string(),
            app_name: APP_NAME.to_string(),
        };
        Ok(ApiResponse::json(status::OK, &info))
    }

    fn get_version(&self, _: &str, _: &[u8]) -> Reply {
        Ok(ApiResponse::json(status::OK, &VmmVersion { vmm_version: VMM_VERSION.to_string() }))
    }

    fn put_boot_source(&self, _: &str, body: &[u8]) -> Reply {
        let boot: BootSource = body_json(body, "PUT /boot-source")?;
        let mut state = self.lock_pre_boot("boot-source")?;
        let candidate = VmConfig { boot_source: Some(boot), ..state.config.clone() };
        Self::commit(&mut state, candidate, "boot-source.")
    }

    fn get_machine_config(&self, _: &str, _: &[u8]) -> Reply {
        Ok(ApiResponse::json(status::OK, &self.lock().config.machine_config))
    }

    fn put_machine_config(&self, _: &str, body: &[u8]) -> Reply {
        let mc: MachineConfig = body_json(body, "PUT /machine-config")?;
        let mut state = self.lock_pre_boot("machine-config")?;
        let candidate = VmConfig { machine_config: mc, ..state.config.clone() };
        Self::commit(&mut state, candidate, "machine-config.")
    }

    fn patch_machine_config(&self, _: &str, body: &[u8]) -> Reply {
        let update: MachineConfigUpdate = body_json(body, "PATCH /machine-config")?;
        let mut state = self.lock_pre_boot("machine-config")?;
        let mc = update.apply_to(&state.config.machine_config);
        let candidate = VmConfig { machine_config: mc, ..state.config.clone() };
        Self::commit(&mut state, candidate, "machine-config.")
    }

    fn put_drive(&self, id: &str, body: &[u8]) -> Reply {
        let drive: Drive = body_json(body, "PUT /drives/{drive_id}")?;
        self.put_listed(id, drive, "drive_id", "drives", |c| &mut c.drives, |d| &d.drive_id)
    }

    fn put_network_interface(&self, id: &str, body: &[u8]) -> Reply {
        let iface: NetworkInterface = body_json(body, "PUT /network-interfaces/{iface_id}")?;
        self.put_listed(id, iface, "iface_id", "network-interfaces", |c| &mut c.network_interfaces, |i| &i.iface_id)
    }

    /// PUT of one item of a list (`drives`, `network-interfaces`): the id in
    /// the body must be the one in the path; the item replaces the one with
    /// its id, or is appended.
    fn put_listed<T>(
        &self,
        path_id: &str,
        item: T,
        id_field: &str,
        list: &str,
        items: fn(&mut VmConfig) -> &mut Vec<T>,
        id_of: fn(&T) -> &str,
    ) -> Reply {
        if id_of(&item) != path_id {
            return Err(bad_request(format!(
                "{id_field}: \"{}\" in the body does not match \"{}\" in the path",
                id_of(&item).escape_debug(),
                path_id.escape_debug()
            )));
        }
        let mut state = self.lock_pre_boot(list)?;
        let mut candidate = state.config.clone();
        let index = upsert(items(&mut candidate), item, |x| id_of(x) == path_id);
        Self::commit(&mut state, candidate, &format!("{list}[{index}]."))
    }

    fn put_metrics(&self, _: &str, body: &[u8]) -> Reply {
        let metrics: Metrics = body_json(body, "PUT /metrics")?;
        let mut state = self.lock_pre_boot("metrics")?;
        let candidate = VmConfig { metrics: Some(metrics), ..state.config.clone() };
        Self::commit(&mut state, candidate, "metrics.")
    }

    fn get_metrics(&self, _: &str, _: &[u8]) -> Reply {
        Ok(ApiResponse::json(status::OK, &self.controller.metrics()))
    }

    fn get_vm_config(&self, _: &str, _: &[u8]) -> Reply {
        Ok(ApiResponse::json(status::OK, &self.lock().config))
    }

    fn put_action(&self, _: &str, body: &[u8]) -> Reply {
        let action: InstanceActionInfo = body_json(body, "PUT /actions")?;
        let result = match action.action_type {
            ActionType::InstanceStart => self.start_vm()?,
            ActionType::SendCtrlAltDel => {
                {
                    let state = self.lock();
                    if state.starting {
                        return Err(bad_request("SendCtrlAltDel: InstanceStart is still in progress"));
                    }
                    if !state.started {
                        return Err(bad_request("SendCtrlAltDel: the VM is not started; send InstanceStart first"));
                    }
                }
                let _serial = lock_unpoisoned(&self.actions);
                self.controller.send_ctrl_alt_del()
            }
            ActionType::FlushMetrics => {
                let path = self.lock().config.metrics.as_ref().map(|m| m.metrics_path.clone());
                let _serial = lock_unpoisoned(&self.actions);
                self.controller.flush_metrics(path.as_deref())
            }
        };
        result
            .map(|()| ApiResponse::no_content())
            .map_err(|err| bad_request(format!("{:?} failed: {err}", action.action_type)))
    }

    /// InstanceStart: freeze the configuration, call the controller without
    /// holding the state lock, then record the outcome.
    fn start_vm(&self) -> Result<Result<(), ControllerError>, ApiResponse> {
        let spec = {
            let mut state = self.lock();
            if state.started {
                return Err(bad_request("InstanceStart: the VM was already started"));
            }
            if state.starting {
                return Err(bad_request("InstanceStart: already in progress"));
            }
            let spec = VmSpec::try_from(state.config.clone())
                .map_err(|e| bad_request(format!("InstanceStart: the configuration is incomplete: {e}")))?;
            state.starting = true;
            spec
        };
        let _starting = StartingGuard(self);
        let _serial = lock_unpoisoned(&self.actions);
        let result = self.controller.start(&spec);
        if result.is_ok() {
            let mut state = self.lock();
            state.started = true;
            // Show what was booted (the root drive first).
            state.config = spec.into();
        }
        Ok(result)
    }
}

/// Replace the item `matches` selects, or append; the item's index.
fn upsert<T>(items: &mut Vec<T>, item: T, matches: impl Fn(&T) -> bool) -> usize {
    match items.iter().position(matches) {
        Some(i) => {
            items[i] = item;
            i
        }
        None => {
            items.push(item);
            items.len() - 1
        }
    }
}

/// Errors about the object being PUT read better without its list index.
fn strip_own_prefix(err: ValidationError, prefix: &str) -> String {
    match err.field.strip_prefix(prefix) {
        Some(rest) => ValidationError::new(rest, err.problem).to_string(),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::VmState;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct Recorder {
        started: Mutex<Vec<VmSpec>>,
        fail_start: AtomicBool,
        cad: Mutex<u32>,
        flushed: Mutex<Vec<Option<std::path::PathBuf>>>,
    }

    impl VmmController for Recorder {
        fn start(&self, spec: &VmSpec) -> Result<(), ControllerError> {
            if self.fail_start.load(Ordering::SeqCst) {
                return Err(ControllerError::vmm("cannot open /k: No such file or directory"));
            }
            self.started.lock().unwrap().push(spec.clone());
            Ok(())
        }
        fn send_ctrl_alt_del(&self) -> Result<(), ControllerError> {
            *self.cad.lock().unwrap() += 1;
            Ok(())
        }
        fn flush_metrics(&self, path: Option<&Path>) -> Result<(), ControllerError> {
            self.flushed.lock().unwrap().push(path.map(Path::to_owned));
            Ok(())
        }
        fn metrics(&self) -> serde_json::Value {
            serde_json::json!({"net": {"rx_packets": 7}})
        }
        fn state(&self) -> VmState {
            if self.started.lock().unwrap().is_empty() {
                VmState::NotStarted
            } else {
                VmState::Running
            }
        }
    }

    fn api() -> (Api, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (Api::new("vm0".into(), rec.clone(), VmConfig::default(), false), rec)
    }

    fn fault(resp: &ApiResponse) -> String {
        let f: Fault = serde_json::from_str(resp.body.as_deref().unwrap()).unwrap();
        f.fault_message
    }

    fn put(api: &Api, path: &str, body: &str) -> ApiResponse {
        api.handle("PUT", path, body.as_bytes())
    }

    #[test]
    fn path_matching() {
        assert_eq!(match_path("/", "/"), Some(""));
        assert_eq!(match_path("/drives/{drive_id}", "/drives/root"), Some("root"));
        assert_eq!(match_path("/drives/{drive_id}", "/drives/"), None);
        assert_eq!(match_path("/drives/{drive_id}", "/drives/a/b"), None);
        assert_eq!(match_path("/drives/{drive_id}", "/drives"), None);
        assert_eq!(match_path("/vm/config", "/vm/config/"), None);
        assert_eq!(match_path("/version", "/versio"), None);
    }

    #[test]
    fn route_table_has_no_duplicates() {
        let all = routes();
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
        assert!(all.contains(&Route { method: "PATCH", path: "/machine-config" }));
    }

    #[test]
    fn unknown_path_is_404_and_wrong_method_is_405() {
        let (api, _) = api();
        let r = api.handle("GET", "/nope", b"");
        assert_eq!(r.status, status::NOT_FOUND);
        assert!(fault(&r).contains("no such path: /nope"));
        let r = api.handle("DELETE", "/machine-config", b"");
        assert_eq!(r.status, status::METHOD_NOT_ALLOWED);
        assert_eq!(r.allow.as_deref(), Some("GET, PUT, PATCH"));
    }

    #[test]
    fn info_and_version() {
        let (api, _) = api();
        let r = api.handle("GET", "/", b"");
        assert_eq!(r.status, 200);
        let info: InstanceInfo = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!((info.id.as_str(), info.state, info.app_name.as_str()), ("vm0", VmState::NotStarted, "shimvmm"));
        let v: VmmVersion = serde_json::from_str(api.handle("GET", "/version", b"").body.as_deref().unwrap()).unwrap();
        assert_eq!(v.vmm_version, VMM_VERSION);
    }

    #[test]
    fn full_configuration_then_start() {
        let (api, rec) = api();
        assert_eq!(put(&api, "/boot-source", r#"{"kernel_image_path":"/k","boot_args":"console=ttyS0"}"#).status, 204);
        assert_eq!(put(&api, "/machine-config", r#"{"vcpu_count":2,"mem_size_mib":256}"#).status, 204);
        assert_eq!(api.handle("PATCH", "/machine-config", br#"{"mem_size_mib":512}"#).status, 204);
        assert_eq!(
            put(&api, "/drives/data", r#"{"drive_id":"data","path_on_host":"/d","is_root_device":false}"#).status,
            204
        );
        assert_eq!(
            put(
                &api,
                "/drives/root",
                r#"{"drive_id":"root","path_on_host":"/r","is_root_device":true,"is_read_only":false}"#
            )
            .status,
            204
        );
        assert_eq!(
            put(
                &api,
                "/network-interfaces/eth0",
                r#"{"iface_id":"eth0","pnic_bdf":"0000:01:00.0","guest_mac":"06:00:00:00:00:01"}"#
            )
            .status,
            204
        );
        assert_eq!(put(&api, "/metrics", r#"{"metrics_path":"/tmp/m"}"#).status, 204);

        let mc: MachineConfig =
            serde_json::from_str(api.handle("GET", "/machine-config", b"").body.as_deref().unwrap()).unwrap();
        assert_eq!((mc.vcpu_count, mc.mem_size_mib), (2, 512));

        assert_eq!(put(&api, "/actions", r#"{"action_type":"InstanceStart"}"#).status, 204);
        let started = rec.started.lock().unwrap().clone();
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].drives[0].drive_id, "root");
        assert_eq!(started[0].machine_config.mem_size_mib, 512);

        let cfg: serde_json::Value =
            serde_json::from_str(api.handle("GET", "/vm/config", b"").body.as_deref().unwrap()).unwrap();
        assert_eq!(cfg["network-interfaces"][0]["pnic_bdf"], "0000:01:00.0");
        assert_eq!(cfg["boot-source"]["kernel_image_path"], "/k");
        assert_eq!(cfg["metrics"]["metrics_path"], "/tmp/m");

        for (path, body, what) in [
            ("/boot-source", r#"{"kernel_image_path":"/k2"}"#, "boot-source"),
            ("/machine-config", r#"{"vcpu_count":1,"mem_size_mib":128}"#, "machine-config"),
            ("/drives/x", r#"{"drive_id":"x","path_on_host":"/x","is_root_device":false}"#, "drives"),
            ("/network-interfaces/e1", r#"{"iface_id":"e1","host_dev_name":"tap1"}"#, "network-interfaces"),
            ("/metrics", r#"{"metrics_path":"/tmp/n"}"#, "metrics"),
        ] {
            let r = put(&api, path, body);
            assert_eq!(r.status, 400, "{path}");
            assert_eq!(fault(&r), format!("{what} cannot be changed after InstanceStart"));
        }
        let r = api.handle("PATCH", "/machine-config", br#"{"vcpu_count":1}"#);
        assert_eq!(fault(&r), "machine-config cannot be changed after InstanceStart");
        let r = put(&api, "/actions", r#"{"action_type":"InstanceStart"}"#);
        assert_eq!(fault(&r), "InstanceStart: the VM was already started");

        assert_eq!(put(&api, "/actions", r#"{"action_type":"SendCtrlAltDel"}"#).status, 204);
        assert_eq!(*rec.cad.lock().unwrap(), 1);
        assert_eq!(put(&api, "/actions", r#"{"action_type":"FlushMetrics"}"#).status, 204);
        assert_eq!(rec.flushed.lock().unwrap()[0].as_deref(), Some(Path::new("/tmp/m")));
        let m = api.handle("GET", "/metrics", b"");
        assert_eq!(m.body.as_deref(), Some(r#"{"net":{"rx_packets":7}}"#));
    }

    #[test]
    fn start_needs_a_boot_source_and_failures_keep_pre_boot() {
        let (api, rec) = api();
        let r = put(&api, "/actions", r#"{"action_type":"InstanceStart"}"#);
        assert_eq!(r.status, 400);
        assert!(fault(&r).contains("boot-source: is required"), "{}", fault(&r));
        let r = put(&api, "/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
        assert!(fault(&r).contains("not started"));

        put(&api, "/boot-source", r#"{"kernel_image_path":"/k"}"#);
        rec.fail_start.store(true, Ordering::SeqCst);
        let r = put(&api, "/actions", r#"{"action_type":"InstanceStart"}"#);
        assert_eq!(fault(&r), "InstanceStart failed: cannot open /k: No such file or directory");
        // Still configurable, and a retry can succeed.
        assert_eq!(put(&api, "/boot-source", r#"{"kernel_image_path":"/k2"}"#).status, 204);
        rec.fail_start.store(false, Ordering::SeqCst);
        assert_eq!(put(&api, "/actions", r#"{"action_type":"InstanceStart"}"#).status, 204);
        assert_eq!(rec.started.lock().unwrap()[0].boot_source.kernel_image_path, Path::new("/k2"));
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let (api, _) = api();
        let cases: &[(&str, &str, &str)] = &[
            ("/boot-source", "", "the request body is empty; PUT /boot-source expects a JSON object"),
            ("/boot-source", "{", "the JSON ends early"),
            ("/boot-source", "[1]", "expected a JSON object"),
            ("/boot-source", "\"x\"", "expected a JSON object"),
            ("/boot-source", r#"{"kernel_image_path":"/k","x":1}"#, "unknown field `x`"),
            ("/machine-config", r#"{"vcpu_count":"2","mem_size_mib":128}"#, "vcpu_count: invalid type: string"),
            ("/machine-config", r#"{"vcpu_count":2}"#, "missing field `mem_size_mib`"),
            (
                "/machine-config",
                r#"{"vcpu_count":2,"mem_size_mib":128,"smt":true}"#,
                "smt: simultaneous multithreading is not supported",
            ),
            ("/machine-config", r#"{"vcpu_count":-1,"mem_size_mib":128}"#, "vcpu_count: invalid value: integer `-1`"),
            (
                "/drives/a",
                r#"{"drive_id":"b","path_on_host":"/x","is_root_device":true}"#,
                "drive_id: \"b\" in the body does not match \"a\" in the path",
            ),
            (
                "/drives/a%2F",
                r#"{"drive_id":"a%2F","path_on_host":"/x","is_root_device":true}"#,
                "drive_id: \"a%2F\" may only contain",
            ),
            ("/network-interfaces/e", r#"{"iface_id":"e"}"#, "host_dev_name: missing"),
            (
                "/network-interfaces/e",
                r#"{"iface_id":"e","pnic_bdf":"01:00"}"#,
                "pnic_bdf: invalid PCI address \"01:00\": missing '.function'",
            ),
            (
                "/network-interfaces/e",
                r#"{"iface_id":"e","host_dev_name":"t","guest_mac":"ff:ff:ff:ff:ff:ff"}"#,
                "guest_mac: ff:ff:ff:ff:ff:ff is a multicast address",
            ),
            ("/actions", r#"{"action_type":"Pause"}"#, "action_type: unknown variant `Pause`"),
            ("/metrics", r#"{"metrics_path":""}"#, "metrics_path: must not be empty"),
        ];
        for (path, body, want) in cases {
            let r = put(&api, path, body);
            assert_eq!(r.status, 400, "{path} {body}");
            assert!(fault(&r).contains(want), "{path} {body}: got {:?}, want {want:?}", fault(&r));
        }
        let r = api.handle("PATCH", "/machine-config", br#"{"vcpu_count":99}"#);
        assert_eq!(fault(&r), "vcpu_count: 99 is out of range; expected 1 to 32");
        // Nothing above changed the configuration.
        let cfg: VmConfig =
            serde_json::from_str(api.handle("GET", "/vm/config", b"").body.as_deref().unwrap()).unwrap();
        assert_eq!(cfg, VmConfig::default());
    }

    #[test]
    fn cross_object_rules_apply_to_puts() {
        let (api, _) = api();
        assert_eq!(put(&api, "/drives/a", r#"{"drive_id":"a","path_on_host":"/a","is_root_device":true}"#).status, 204);
        let r = put(&api, "/drives/b", r#"{"drive_id":"b","path_on_host":"/b","is_root_device":true}"#);
        assert_eq!(fault(&r), "is_root_device: drive \"a\" is already the root device; only one drive can be");
        // Re-PUT of the same drive replaces it, so it may stay the root.
        assert_eq!(
            put(&api, "/drives/a", r#"{"drive_id":"a","path_on_host":"/a2","is_root_device":true}"#).status,
            204
        );
        assert_eq!(put(&api, "/network-interfaces/e0", r#"{"iface_id":"e0","host_dev_name":"tap0"}"#).status, 204);
        let r = put(&api, "/network-interfaces/e1", r#"{"iface_id":"e1","host_dev_name":"tap0"}"#);
        assert_eq!(fault(&r), "host_dev_name: tap \"tap0\" is used by two interfaces");
        for i in 0..vmm_config::MAX_DRIVES - 1 {
            let body = format!(r#"{{"drive_id":"d{i}","path_on_host":"/d","is_root_device":false}}"#);
            assert_eq!(put(&api, &format!("/drives/d{i}"), &body).status, 204);
        }
        let r = put(&api, "/drives/z", r#"{"drive_id":"z","path_on_host":"/z","is_root_device":false}"#);
        assert!(fault(&r).starts_with("drives: 17 drives given; at most 16"), "{}", fault(&r));
    }

    #[test]
    fn initial_config_and_already_started() {
        let rec = Arc::new(Recorder::default());
        let spec = VmSpec::try_from(VmConfig {
            boot_source: Some(BootSource { kernel_image_path: "/k".into(), boot_args: None, initrd_path: None }),
            ..Default::default()
        })
        .unwrap();
        let api = Api::new("vm1".into(), rec, spec.into(), true);
        let r = put(&api, "/boot-source", r#"{"kernel_image_path":"/k"}"#);
        assert_eq!(fault(&r), "boot-source cannot be changed after InstanceStart");
        let cfg: VmConfig =
            serde_json::from_str(api.handle("GET", "/vm/config", b"").body.as_deref().unwrap()).unwrap();
        assert_eq!(cfg.boot_source.unwrap().kernel_image_path, Path::new("/k"));
    }
}
