//! Routing and request handling, independent of the HTTP library.
//!
//! One table lists every route with its handler, so what [`routes`] reports
//! (and the OpenAPI test checks) is exactly what is served.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use vmm_config::sync::lock_unpoisoned;
use vmm_config::Vsock;
use vmm_config::{
    not_supported_yet, parse_json, BootSource, Drive, DriveUpdate, Entropy, Logger, MachineConfig, MachineConfigUpdate,
    Metrics, MmdsConfig, NetworkInterface, NetworkInterfaceUpdate, RateLimiter, ValidationError, VmConfig, VmSpec,
};

use crate::controller::{ControllerError, Preflight, VmmController};
use crate::types::{
    ActionType, Fault, FirecrackerVersion, InstanceActionInfo, InstanceInfo, RequestedVmState, VmStateUpdate, APP_NAME,
    FIRECRACKER_API_VERSION, VMM_VERSION,
};

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
    /// For a method a path does not serve: the methods it does (the `Allow`
    /// header beside the 400 Firecracker answers with).
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
    entry!("PATCH", "/drives/{drive_id}", Api::patch_drive),
    entry!("PUT", "/network-interfaces/{iface_id}", Api::put_network_interface),
    entry!("PATCH", "/network-interfaces/{iface_id}", Api::patch_network_interface),
    entry!("PUT", "/actions", Api::put_action),
    entry!("PUT", "/logger", Api::put_logger),
    entry!("PUT", "/metrics", Api::put_metrics),
    entry!("GET", "/metrics", Api::get_metrics),
    entry!("GET", "/vm/config", Api::get_vm_config),
    entry!("PATCH", "/vm", Api::patch_vm),
    // Firecracker's devices and features shimvmm does not build yet: a 400
    // that says so (after the body parsed as JSON), never a silent accept.
    entry!("PUT", "/vsock", Api::put_vsock),
    entry!("PUT", "/entropy", Api::put_entropy),
    entry!("PUT", "/cpu-config", Api::unsupported_cpu_config),
    entry!("PUT", "/mmds", Api::put_mmds),
    entry!("PATCH", "/mmds", Api::patch_mmds),
    entry!("GET", "/mmds", Api::get_mmds),
    // Firecracker answers GET /mmds/config with the document too.
    entry!("GET", "/mmds/config", Api::get_mmds),
    entry!("PUT", "/mmds/config", Api::put_mmds_config),
    entry!("PUT", "/balloon", Api::unsupported_balloon),
    entry!("PATCH", "/balloon", Api::unsupported_balloon),
    entry!("GET", "/balloon", Api::unsupported_balloon),
    entry!("GET", "/balloon/statistics", Api::unsupported_balloon),
    entry!("PATCH", "/balloon/statistics", Api::unsupported_balloon),
    entry!("PUT", "/snapshot/create", Api::unsupported_snapshot),
    entry!("PUT", "/snapshot/load", Api::unsupported_snapshot),
];

/// `uds_path` can be listened on at boot: its directory exists and nothing
/// is there yet (a stale socket file must be removed by its owner).
fn check_uds_path(path: &std::path::Path) -> Result<(), String> {
    let shown = path.display();
    if path.symlink_metadata().is_ok() {
        return Err(format!("uds_path: {shown} already exists; remove it or pick another path"));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(format!("uds_path: directory {} does not exist", dir.display()));
    }
    Ok(())
}

/// The body of a change of the metadata document: any JSON value (a
/// patch that is not an object replaces the document, RFC 7396).
fn mmds_body(body: &[u8], what: &str) -> Result<serde_json::Value, ApiResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request(format!("the request body is empty; {what} expects a JSON value")));
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("{what}: the body is not JSON: {e}")))
}

/// A refused change of the metadata document: 413 when it would outgrow
/// the size limit (as Firecracker), else 400.
fn mmds_fault(e: mmds::DataStoreError) -> ApiResponse {
    let status = match e {
        mmds::DataStoreError::LimitExceeded(_) => status::PAYLOAD_TOO_LARGE,
        _ => status::BAD_REQUEST,
    };
    ApiResponse::fault(status, e.to_string())
}

/// The routes that answer "not supported by shimvmm yet" (400) whatever
/// the request: `api_spec.yaml` marks them `x-shimvmm-unsupported`.
pub fn unsupported_routes() -> Vec<Route> {
    let unsupported: &[Handler] = &[Api::unsupported_cpu_config, Api::unsupported_balloon, Api::unsupported_snapshot];
    TABLE.iter().filter(|e| unsupported.iter().any(|h| std::ptr::fn_addr_eq(*h, e.handler))).map(|e| e.route).collect()
}

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
    /// Serialises logger and metrics set-up (opening their files).
    setup: Mutex<()>,
    /// The metadata document, shared with the running VM's interfaces.
    mmds: Arc<Mutex<mmds::Mmds>>,
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
            setup: Mutex::new(()),
            mmds: Arc::new(Mutex::new(mmds::Mmds::default())),
        }
    }

    /// Serves `store` as the metadata document (the one the VMM's
    /// interfaces read), with the version of the initial `mmds-config`.
    pub fn with_mmds(mut self, store: Arc<Mutex<mmds::Mmds>>) -> Self {
        if let Some(c) = &self.lock().config.mmds_config {
            let mut s = lock_unpoisoned(&store);
            s.set_version(c.version);
            s.set_imds_compat(c.imds_compat);
        }
        self.mmds = store;
        self
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
        // Firecracker answers both with 400 "Invalid request method and/or path".
        if allowed.is_empty() {
            return bad_request(format!("invalid request path: {} {}", method.escape_debug(), path.escape_debug()));
        }
        let allow = allowed.join(", ");
        let mut resp = bad_request(format!(
            "invalid request method: {} is not served on {}; use {allow}",
            method.escape_debug(),
            path.escape_debug()
        ));
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

    /// Fail early, before a slow host check, if pre-boot changes are over.
    fn check_pre_boot(&self, what: &str) -> Result<(), ApiResponse> {
        self.lock_pre_boot(what).map(drop)
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
        let version = FirecrackerVersion { firecracker_version: FIRECRACKER_API_VERSION.to_string() };
        Ok(ApiResponse::json(status::OK, &version))
    }

    /// Ask the VMM whether the host can provide `item` (its files open),
    /// as Firecracker checks when the object is PUT.
    fn preflight(&self, item: Preflight<'_>) -> Result<(), ApiResponse> {
        self.controller.preflight(item).map_err(|e| bad_request(e.to_string()))
    }

    fn put_boot_source(&self, _: &str, body: &[u8]) -> Reply {
        let boot: BootSource = body_json(body, "PUT /boot-source")?;
        self.check_pre_boot("boot-source")?;
        boot.validate().map_err(|e| bad_request(e.to_string()))?;
        self.preflight(Preflight::BootSource(&boot))?;
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
        if update.is_empty() {
            return Err(bad_request("empty PATCH request: give at least one machine-config field"));
        }
        let mut state = self.lock_pre_boot("machine-config")?;
        let mc = update.apply_to(&state.config.machine_config);
        let candidate = VmConfig { machine_config: mc, ..state.config.clone() };
        Self::commit(&mut state, candidate, "machine-config.")
    }

    fn put_drive(&self, id: &str, body: &[u8]) -> Reply {
        let drive: Drive = body_json(body, "PUT /drives/{drive_id}")?;
        self.check_drive_host(id, &drive)?;
        self.put_listed(id, drive, "drive_id", "drives", |c| &mut c.drives, |d| &d.drive_id)
    }

    /// The drive's own rules, then its backing file opens on this host.
    fn check_drive_host(&self, id: &str, drive: &Drive) -> Result<(), ApiResponse> {
        if drive.drive_id == id {
            self.check_pre_boot("drives")?;
            drive.validate().map_err(|e| bad_request(e.to_string()))?;
            self.preflight(Preflight::Drive(drive))?;
        }
        Ok(())
    }

    /// A new backing file and/or rate limiter: before boot with the checks
    /// of a PUT; after boot the running drive's image is swapped and the
    /// guest told its capacity may have changed (what firecracker-containerd
    /// and Kata do with their placeholder drives), and its buckets replaced
    /// (those the body names; see [`RateLimiter::patched`]).
    fn patch_drive(&self, id: &str, body: &[u8]) -> Reply {
        let update: DriveUpdate = body_json(body, "PATCH /drives/{drive_id}")?;
        check_path_id("drive_id", &update.drive_id, id)?;
        let (current, started) = {
            let state = self.lock();
            if state.starting {
                return Err(bad_request("drives cannot be changed while InstanceStart is in progress"));
            }
            (state.config.drives.iter().find(|d| d.drive_id == id).cloned(), state.started)
        };
        let mut drive =
            current.ok_or_else(|| bad_request(format!("drive_id: no drive \"{}\" to update", id.escape_debug())))?;
        if update.path_on_host.is_none() && update.rate_limiter.is_none() {
            return Ok(ApiResponse::no_content());
        }
        let new_path = update.path_on_host.is_some();
        if let Some(path) = update.path_on_host {
            drive.path_on_host = path;
        }
        drive.rate_limiter = RateLimiter::patched(drive.rate_limiter, update.rate_limiter);
        if !started {
            self.check_drive_host(id, &drive)?;
            return self.put_listed(id, drive, "drive_id", "drives", |c| &mut c.drives, |d| &d.drive_id);
        }
        drive.validate().map_err(|e| bad_request(e.to_string()))?;
        let _serial = lock_unpoisoned(&self.actions);
        if new_path {
            self.preflight(Preflight::Drive(&drive))?;
            self.controller
                .replace_drive(id, &drive.path_on_host)
                .map_err(|e| bad_request(format!("PATCH /drives/{id}: {e}")))?;
        }
        if update.rate_limiter.is_some() {
            self.controller
                .set_drive_rate_limiter(id, drive.rate_limiter.as_ref())
                .map_err(|e| bad_request(format!("PATCH /drives/{id}: {e}")))?;
        }
        let mut state = self.lock();
        if let Some(d) = state.config.drives.iter_mut().find(|d| d.drive_id == id) {
            d.path_on_host = drive.path_on_host;
            d.rate_limiter = drive.rate_limiter;
        }
        Ok(ApiResponse::no_content())
    }

    fn put_network_interface(&self, id: &str, body: &[u8]) -> Reply {
        let iface: NetworkInterface = body_json(body, "PUT /network-interfaces/{iface_id}")?;
        self.put_listed(id, iface, "iface_id", "network-interfaces", |c| &mut c.network_interfaces, |i| &i.iface_id)
    }

    /// Firecracker's PATCH only changes the rate limiters of a started VM:
    /// the buckets the body names replace the running ones
    /// ([`RateLimiter::patched`]).
    fn patch_network_interface(&self, id: &str, body: &[u8]) -> Reply {
        let update: NetworkInterfaceUpdate = body_json(body, "PATCH /network-interfaces/{iface_id}")?;
        check_path_id("iface_id", &update.iface_id, id)?;
        let current = {
            let state = self.lock();
            if !state.started {
                return Err(bad_request(
                    "PATCH /network-interfaces changes a started VM; before InstanceStart, PUT the interface again",
                ));
            }
            state.config.network_interfaces.iter().find(|i| i.iface_id == id).cloned()
        };
        let current =
            current.ok_or_else(|| bad_request(format!("iface_id: no network interface \"{}\"", id.escape_debug())))?;
        if update.rx_rate_limiter.is_none() && update.tx_rate_limiter.is_none() {
            return Ok(ApiResponse::no_content());
        }
        let rx = RateLimiter::patched(current.rx_rate_limiter, update.rx_rate_limiter);
        let tx = RateLimiter::patched(current.tx_rate_limiter, update.tx_rate_limiter);
        let _serial = lock_unpoisoned(&self.actions);
        self.controller
            .set_net_rate_limiters(id, rx.as_ref(), tx.as_ref())
            .map_err(|e| bad_request(format!("PATCH /network-interfaces/{id}: {e}")))?;
        let mut state = self.lock();
        if let Some(i) = state.config.network_interfaces.iter_mut().find(|i| i.iface_id == id) {
            (i.rx_rate_limiter, i.tx_rate_limiter) = (rx, tx);
        }
        Ok(ApiResponse::no_content())
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
        check_path_id(id_field, id_of(&item), path_id)?;
        let mut state = self.lock_pre_boot(list)?;
        let mut candidate = state.config.clone();
        let index = upsert(items(&mut candidate), item, |x| id_of(x) == path_id);
        Self::commit(&mut state, candidate, &format!("{list}[{index}]."))
    }

    /// Firecracker sets up its metrics once; so does shimvmm.
    fn put_metrics(&self, _: &str, body: &[u8]) -> Reply {
        let metrics: Metrics = body_json(body, "PUT /metrics")?;
        metrics.validate().map_err(|e| bad_request(e.to_string()))?;
        let _serial = lock_unpoisoned(&self.setup);
        {
            let state = self.lock_pre_boot("metrics")?;
            if let Some(m) = &state.config.metrics {
                return Err(bad_request(format!(
                    "metrics are already written to {}; they can be set up once",
                    m.metrics_path.display()
                )));
            }
        }
        self.controller.configure_metrics(&metrics).map_err(|e| bad_request(format!("metrics: {e}")))?;
        let mut state = self.lock();
        let candidate = VmConfig { metrics: Some(metrics), ..state.config.clone() };
        Self::commit(&mut state, candidate, "metrics.")
    }

    /// The logger changes at once; absent fields keep their value.
    fn put_logger(&self, _: &str, body: &[u8]) -> Reply {
        let update: Logger = body_json(body, "PUT /logger")?;
        update.validate().map_err(|e| bad_request(e.to_string()))?;
        let _serial = lock_unpoisoned(&self.setup);
        let current = self.lock_pre_boot("logger")?.config.logger.clone().unwrap_or_default();
        let logger = Logger {
            log_path: update.log_path.or(current.log_path),
            level: update.level.or(current.level),
            show_level: update.show_level.or(current.show_level),
            show_log_origin: update.show_log_origin.or(current.show_log_origin),
            module: update.module.or(current.module),
        };
        self.controller.configure_logger(&logger).map_err(|e| bad_request(format!("logger: {e}")))?;
        let mut state = self.lock();
        let candidate = VmConfig { logger: Some(logger), ..state.config.clone() };
        Self::commit(&mut state, candidate, "logger.")
    }

    /// Pause and resume, as Firecracker: only a started VM; asking for the
    /// state it is in is not an error.
    fn patch_vm(&self, _: &str, body: &[u8]) -> Reply {
        let update: VmStateUpdate = body_json(body, "PATCH /vm")?;
        if !self.lock().started {
            return Err(bad_request(format!("{:?}: the VM is not started; send InstanceStart first", update.state)));
        }
        let _serial = lock_unpoisoned(&self.actions);
        match update.state {
            RequestedVmState::Paused => self.controller.pause(),
            RequestedVmState::Resumed => self.controller.resume(),
        }
        .map_err(|e| bad_request(format!("{:?}: {e}", update.state)))?;
        Ok(ApiResponse::no_content())
    }

    /// A 400 for a feature not built yet, once the body is valid JSON.
    fn unsupported(section: &str, body: &[u8]) -> Reply {
        if !body.iter().all(u8::is_ascii_whitespace) {
            parse_json::<serde_json::Value>(body).map_err(|e| bad_request(e.to_string()))?;
        }
        Err(bad_request(not_supported_yet(section)))
    }

    /// A virtio-vsock device. Firecracker binds `uds_path` here; shimvmm
    /// binds it at boot, and refuses here what that bind would refuse.
    fn put_vsock(&self, _: &str, body: &[u8]) -> Reply {
        let vsock: Vsock = body_json(body, "PUT /vsock")?;
        self.check_pre_boot("vsock")?;
        vsock.validate().map_err(|e| bad_request(e.to_string()))?;
        check_uds_path(&vsock.uds_path).map_err(bad_request)?;
        let mut state = self.lock_pre_boot("vsock")?;
        let candidate = VmConfig { vsock: Some(vsock), ..state.config.clone() };
        Self::commit(&mut state, candidate, "vsock.")
    }

    /// A virtio-rng device, with its rate limiter.
    fn put_entropy(&self, _: &str, body: &[u8]) -> Reply {
        let entropy: Entropy = body_json(body, "PUT /entropy")?;
        let mut state = self.lock_pre_boot("entropy")?;
        let candidate = VmConfig { entropy: Some(entropy), ..state.config.clone() };
        Self::commit(&mut state, candidate, "entropy.")
    }

    fn unsupported_cpu_config(&self, _: &str, body: &[u8]) -> Reply {
        Self::unsupported("cpu-config", body)
    }

    /// Replaces the metadata document (before and after boot).
    fn put_mmds(&self, _: &str, body: &[u8]) -> Reply {
        let doc = mmds_body(body, "PUT /mmds")?;
        lock_unpoisoned(&self.mmds).put(doc).map_err(mmds_fault)?;
        Ok(ApiResponse::no_content())
    }

    /// Merges a JSON merge patch (RFC 7396) into the metadata document.
    fn patch_mmds(&self, _: &str, body: &[u8]) -> Reply {
        let patch = mmds_body(body, "PATCH /mmds")?;
        lock_unpoisoned(&self.mmds).patch(&patch).map_err(mmds_fault)?;
        Ok(ApiResponse::no_content())
    }

    /// The whole metadata document (`{}` before the first PUT).
    fn get_mmds(&self, _: &str, _: &[u8]) -> Reply {
        Ok(ApiResponse::json(status::OK, &lock_unpoisoned(&self.mmds).document()))
    }

    /// Which interfaces reach MMDS, at which address, with which version;
    /// before boot only. The version applies to the store at once.
    fn put_mmds_config(&self, _: &str, body: &[u8]) -> Reply {
        let mut config: MmdsConfig = body_json(body, "PUT /mmds/config")?;
        // Shown in GET /vm/config as Firecracker does: with the address.
        config.ipv4_address.get_or_insert(vmm_config::MMDS_DEFAULT_IPV4);
        let mut state = self.lock_pre_boot("mmds-config")?;
        let (version, imds_compat) = (config.version, config.imds_compat);
        let candidate = VmConfig { mmds_config: Some(config), ..state.config.clone() };
        let reply = Self::commit(&mut state, candidate, "mmds-config.")?;
        let mut store = lock_unpoisoned(&self.mmds);
        store.set_version(version);
        store.set_imds_compat(imds_compat);
        Ok(reply)
    }

    fn unsupported_balloon(&self, _: &str, body: &[u8]) -> Reply {
        Self::unsupported("balloon", body)
    }

    fn unsupported_snapshot(&self, _: &str, body: &[u8]) -> Reply {
        Self::unsupported("snapshots", body)
    }

    fn get_metrics(&self, _: &str, _: &[u8]) -> Reply {
        Ok(ApiResponse::json(status::OK, &self.controller.metrics()))
    }

    /// The configuration in Firecracker's full shape: every section it has
    /// is present, `null` when unset (a missing boot source is
    /// Firecracker's empty one).
    fn get_vm_config(&self, _: &str, _: &[u8]) -> Reply {
        let mut value = serde_json::to_value(&self.lock().config)
            .map_err(|e| ApiResponse::fault(status::INTERNAL_SERVER_ERROR, format!("cannot encode: {e}")))?;
        if let Some(obj) = value.as_object_mut() {
            obj.entry("boot-source").or_insert_with(
                || serde_json::json!({"kernel_image_path": "", "initrd_path": null, "boot_args": null}),
            );
            for key in ["logger", "metrics"] {
                obj.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        Ok(ApiResponse::json(status::OK, &value))
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
                let (path, started) = {
                    let state = self.lock();
                    (state.config.metrics.as_ref().map(|m| m.metrics_path.clone()), state.started)
                };
                if !started {
                    return Err(bad_request("FlushMetrics: the VM is not started; send InstanceStart first"));
                }
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

/// The id in a body must be the one in the path.
fn check_path_id(field: &str, body_id: &str, path_id: &str) -> Result<(), ApiResponse> {
    if body_id != path_id {
        return Err(bad_request(format!(
            "{field}: \"{}\" in the body does not match \"{}\" in the path",
            body_id.escape_debug(),
            path_id.escape_debug()
        )));
    }
    Ok(())
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

    /// (id, first limiter, second limiter) of a rate-limiter call.
    type LimitCall = (String, Option<RateLimiter>, Option<RateLimiter>);

    #[derive(Default)]
    struct Recorder {
        started: Mutex<Vec<VmSpec>>,
        fail_start: AtomicBool,
        cad: Mutex<u32>,
        flushed: Mutex<Vec<Option<std::path::PathBuf>>>,
        /// Each rate-limiter call.
        limits: Mutex<Vec<LimitCall>>,
        paused: AtomicBool,
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
        fn configure_logger(&self, _: &Logger) -> Result<(), ControllerError> {
            Ok(())
        }
        fn configure_metrics(&self, _: &Metrics) -> Result<(), ControllerError> {
            Ok(())
        }
        fn replace_drive(&self, id: &str, path: &Path) -> Result<(), ControllerError> {
            if path == Path::new("/broken") {
                return Err(ControllerError::vmm(format!("drive {id}: cannot open {}", path.display())));
            }
            Ok(())
        }
        fn set_drive_rate_limiter(&self, id: &str, l: Option<&RateLimiter>) -> Result<(), ControllerError> {
            self.limits.lock().unwrap().push((id.to_string(), l.copied(), None));
            Ok(())
        }
        fn set_net_rate_limiters(
            &self,
            id: &str,
            rx: Option<&RateLimiter>,
            tx: Option<&RateLimiter>,
        ) -> Result<(), ControllerError> {
            self.limits.lock().unwrap().push((id.to_string(), rx.copied(), tx.copied()));
            Ok(())
        }
        fn pause(&self) -> Result<(), ControllerError> {
            self.paused.store(true, Ordering::SeqCst);
            Ok(())
        }
        fn resume(&self) -> Result<(), ControllerError> {
            self.paused.store(false, Ordering::SeqCst);
            Ok(())
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
    fn unknown_path_and_wrong_method_are_400_as_in_firecracker() {
        let (api, _) = api();
        let r = api.handle("GET", "/nope", b"");
        assert_eq!(r.status, status::BAD_REQUEST);
        assert_eq!(fault(&r), "invalid request path: GET /nope");
        let r = api.handle("DELETE", "/machine-config", b"");
        assert_eq!(r.status, status::BAD_REQUEST);
        assert_eq!(fault(&r), "invalid request method: DELETE is not served on /machine-config; use GET, PUT, PATCH");
        assert_eq!(r.allow.as_deref(), Some("GET, PUT, PATCH"));
    }

    #[test]
    fn info_and_version() {
        let (api, _) = api();
        let r = api.handle("GET", "/", b"");
        assert_eq!(r.status, 200);
        let info: InstanceInfo = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!((info.id.as_str(), info.state, info.app_name.as_str()), ("vm0", VmState::NotStarted, "shimvmm"));
        let v: FirecrackerVersion =
            serde_json::from_str(api.handle("GET", "/version", b"").body.as_deref().unwrap()).unwrap();
        assert_eq!(v.firecracker_version, FIRECRACKER_API_VERSION);
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
        assert_eq!(api.lock().config, VmConfig::default());
        // Firecracker's shape: every section, an empty boot source.
        let cfg: serde_json::Value =
            serde_json::from_str(api.handle("GET", "/vm/config", b"").body.as_deref().unwrap()).unwrap();
        assert_eq!(
            cfg["boot-source"],
            serde_json::json!({"kernel_image_path": "", "initrd_path": null, "boot_args": null})
        );
        for key in ["vsock", "balloon", "entropy", "mmds-config", "cpu-config", "logger", "metrics"] {
            assert_eq!(cfg[key], serde_json::Value::Null, "{key}");
        }
        assert_eq!(cfg["machine-config"]["huge_pages"], "None");
    }

    #[test]
    fn mmds_document_and_config() {
        let (api, _rec) = api();
        let get = |api: &Api| api.handle("GET", "/mmds", b"").body.unwrap();
        assert_eq!(get(&api), "{}");
        assert_eq!(api.handle("PATCH", "/mmds", br#"{"a":1}"#).status, 400, "PATCH before PUT");
        assert_eq!(put(&api, "/mmds", r#"{"latest":{"meta-data":{"id":"i-1","x":1}}}"#).status, 204);
        let r = api.handle("PATCH", "/mmds", br#"{"latest":{"meta-data":{"x":null,"zone":"z"}}}"#);
        assert_eq!(r.status, 204);
        assert_eq!(get(&api), r#"{"latest":{"meta-data":{"id":"i-1","zone":"z"}}}"#);
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(mmds_limit() + 1));
        assert_eq!(put(&api, "/mmds", &big).status, status::PAYLOAD_TOO_LARGE);
        assert_eq!(put(&api, "/mmds", "").status, 400);
        // The config names existing interfaces and sets the store's version.
        let r = put(&api, "/mmds/config", r#"{"version":"V2","network_interfaces":["eth0"]}"#);
        assert!(fault(&r).contains("no network interface \"eth0\""), "{}", fault(&r));
        assert_eq!(put(&api, "/network-interfaces/eth0", r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#).status, 204);
        assert_eq!(put(&api, "/mmds/config", r#"{"network_interfaces":[]}"#).status, 400);
        assert_eq!(
            put(&api, "/mmds/config", r#"{"network_interfaces":["eth0"],"ipv4_address":"10.0.0.1"}"#).status,
            400
        );
        assert_eq!(put(&api, "/mmds/config", r#"{"version":"V2","network_interfaces":["eth0"]}"#).status, 204);
        assert_eq!(lock_unpoisoned(&api.mmds).version(), vmm_config::MmdsVersion::V2);
        let cfg: serde_json::Value =
            serde_json::from_str(api.handle("GET", "/vm/config", b"").body.as_deref().unwrap()).unwrap();
        assert_eq!(
            cfg["mmds-config"],
            serde_json::json!({"version":"V2","network_interfaces":["eth0"],"ipv4_address":"169.254.169.254"})
        );
    }

    fn mmds_limit() -> usize {
        vmm_config::MMDS_DEFAULT_SIZE_LIMIT
    }

    #[test]
    fn firecracker_features_not_built_are_refused_by_name() {
        let (api, rec) = api();
        for (method, path, body, want) in [
            ("PUT", "/mmds/config", r#"{"network_interfaces":["eth0"]}"#, "no network interface \"eth0\""),
            ("PUT", "/balloon", r#"{"amount_mib":1,"deflate_on_oom":true}"#, "the balloon device is not supported"),
            ("PUT", "/snapshot/create", "{}", "snapshots is not supported by shimvmm yet"),
            ("PUT", "/vsock", "{", "the JSON ends early"),
            ("PUT", "/vsock", r#"{"guest_cid":2,"uds_path":"/tmp/x.sock"}"#, "guest_cid: 2 is reserved"),
            ("PUT", "/vsock", r#"{"guest_cid":3}"#, "missing field `uds_path`"),
            (
                "PUT",
                "/vsock",
                r#"{"guest_cid":3,"uds_path":"/no-such-dir/v.sock"}"#,
                "directory /no-such-dir does not exist",
            ),
            ("PUT", "/vsock", r#"{"guest_cid":3,"uds_path":"/tmp"}"#, "uds_path: /tmp already exists"),
        ] {
            let r = api.handle(method, path, body.as_bytes());
            assert_eq!(r.status, 400, "{method} {path}");
            assert!(fault(&r).contains(want), "{method} {path}: {}", fault(&r));
        }
        assert_eq!(put(&api, "/entropy", "{}").status, 204);
        assert_eq!(api.lock().config.entropy, Some(Entropy::default()));
        let limited = r#"{"rate_limiter":{"ops":{"size":1,"refill_time":1}}}"#;
        assert_eq!(put(&api, "/entropy", limited).status, 204);
        assert!(api.lock().config.entropy.as_ref().unwrap().rate_limiter.is_some());
        let sock = std::env::temp_dir().join(format!("router-vsock-{}.sock", std::process::id()));
        let body = format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, sock.display());
        assert_eq!(put(&api, "/vsock", &body).status, 204);
        assert_eq!(api.lock().config.vsock.as_ref().map(|v| v.guest_cid), Some(3));
        let routes = unsupported_routes();
        assert!(routes.contains(&Route { method: "PUT", path: "/balloon" }));
        assert!(!routes.contains(&Route { method: "GET", path: "/mmds" }));
        assert!(!routes.contains(&Route { method: "PUT", path: "/drives/{drive_id}" }));
        // Rate limiters: null buckets are no limiter, buckets are kept.
        let ok = r#"{"drive_id":"a","path_on_host":"/a","is_root_device":true,"rate_limiter":{"bandwidth":null}}"#;
        assert_eq!(put(&api, "/drives/a", ok).status, 204);
        assert_eq!(api.lock().config.drives[0].rate_limiter, None);
        let r = put(
            &api,
            "/drives/b",
            r#"{"drive_id":"b","path_on_host":"/b","is_root_device":false,"rate_limiter":{"ops":{"size":1,"refill_time":1}}}"#,
        );
        assert_eq!(r.status, 204);
        assert_eq!(api.lock().config.drives[1].rate_limiter.unwrap().ops.unwrap().size, 1);
        // PATCH /drives before boot swaps the file; an unknown drive is named.
        assert_eq!(api.handle("PATCH", "/drives/a", br#"{"drive_id":"a","path_on_host":"/a2"}"#).status, 204);
        assert_eq!(api.lock().config.drives[0].path_on_host, std::path::Path::new("/a2"));
        let r = api.handle("PATCH", "/drives/z", br#"{"drive_id":"z","path_on_host":"/z"}"#);
        assert_eq!(fault(&r), "drive_id: no drive \"z\" to update");
        // PATCH /vm and /network-interfaces need a started VM, as in Firecracker.
        let r = api.handle("PATCH", "/vm", br#"{"state":"Paused"}"#);
        assert_eq!(fault(&r), "Paused: the VM is not started; send InstanceStart first");
        let r = api.handle("PATCH", "/vm", br#"{"state":"Frozen"}"#);
        assert!(fault(&r).contains("unknown variant `Frozen`"), "{}", fault(&r));
        assert_eq!(api.handle("PATCH", "/machine-config", b"{}").status, 400);
        assert_eq!(put(&api, "/actions", r#"{"action_type":"FlushMetrics"}"#).status, 400);
        // Metrics are set up once.
        assert_eq!(put(&api, "/metrics", r#"{"metrics_path":"/m"}"#).status, 204);
        let r = put(&api, "/metrics", r#"{"metrics_path":"/m"}"#);
        assert_eq!(fault(&r), "metrics are already written to /m; they can be set up once");
        // The logger merges fields.
        assert_eq!(put(&api, "/logger", r#"{"log_path":"/l","level":"Info"}"#).status, 204);
        assert_eq!(put(&api, "/logger", r#"{"show_level":true}"#).status, 204);
        let l = api.lock().config.logger.clone().unwrap();
        assert_eq!((l.log_path.unwrap(), l.show_level), ("/l".into(), Some(true)));

        put(&api, "/boot-source", r#"{"kernel_image_path":"/k"}"#);
        put(&api, "/network-interfaces/e0", r#"{"iface_id":"e0","host_dev_name":"tap0"}"#);
        assert_eq!(put(&api, "/actions", r#"{"action_type":"InstanceStart"}"#).status, 204);
        // Pause and resume, each twice (asking for the current state is fine).
        for (state, paused) in [("Paused", true), ("Paused", true), ("Resumed", false), ("Resumed", false)] {
            let body = format!(r#"{{"state":"{state}"}}"#);
            assert_eq!(api.handle("PATCH", "/vm", body.as_bytes()).status, 204, "{state}");
            assert_eq!(rec.paused.load(Ordering::SeqCst), paused, "{state}");
        }
        // After boot the running drive's image is swapped.
        assert_eq!(api.handle("PATCH", "/drives/a", br#"{"drive_id":"a","path_on_host":"/a3"}"#).status, 204);
        assert_eq!(api.lock().config.drives[0].path_on_host, std::path::Path::new("/a3"));
        let r = api.handle("PATCH", "/drives/a", br#"{"drive_id":"a","path_on_host":"/broken"}"#);
        assert_eq!(fault(&r), "PATCH /drives/a: drive a: cannot open /broken");
        assert_eq!(api.lock().config.drives[0].path_on_host, std::path::Path::new("/a3"));
        let r = api.handle("PATCH", "/drives/zz", br#"{"drive_id":"zz","path_on_host":"/z"}"#);
        assert_eq!(fault(&r), "drive_id: no drive \"zz\" to update");
        let body = br#"{"iface_id":"e0","rx_rate_limiter":{"bandwidth":null,"ops":null}}"#;
        assert_eq!(api.handle("PATCH", "/network-interfaces/e0", body).status, 204);
        assert!(rec.limits.lock().unwrap().is_empty(), "null buckets change nothing");
        let body = br#"{"iface_id":"e0","tx_rate_limiter":{"bandwidth":{"size":1,"refill_time":1}}}"#;
        assert_eq!(api.handle("PATCH", "/network-interfaces/e0", body).status, 204);
        let body = br#"{"iface_id":"e0","tx_rate_limiter":{"ops":{"size":2,"refill_time":1}}}"#;
        assert_eq!(api.handle("PATCH", "/network-interfaces/e0", body).status, 204);
        let (id, rx, tx) = rec.limits.lock().unwrap().last().cloned().unwrap();
        let tx = tx.unwrap();
        assert_eq!((id.as_str(), rx, tx.bandwidth.unwrap().size, tx.ops.unwrap().size), ("e0", None, 1, 2), "merged");
        assert_eq!(api.lock().config.network_interfaces[0].tx_rate_limiter, Some(tx));
        // A drive's limiter changes without its file.
        let body = br#"{"drive_id":"a","rate_limiter":{"bandwidth":{"size":9,"refill_time":1}}}"#;
        assert_eq!(api.handle("PATCH", "/drives/a", body).status, 204);
        let (id, l, _) = rec.limits.lock().unwrap().last().cloned().unwrap();
        assert_eq!((id.as_str(), l.unwrap().bandwidth.unwrap().size), ("a", 9));
        assert_eq!(api.lock().config.drives[0].path_on_host, std::path::Path::new("/a3"), "file kept");
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
