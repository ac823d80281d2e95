//! The request sequences of Firecracker's orchestrators, written from their
//! documented calls, as data: one definition each, sent in-process to
//! `api::Api` by `tests/api_clients.rs` and over a real API socket to a
//! booting shimvmm by `tests/fc_orchestrators.rs`.
//!
//! - firecracker-go-sdk (handlers.go's default chain): [`go_sdk_start`],
//!   [`go_sdk_running`], [`go_sdk_stop`].
//! - firecracker-containerd: [`containerd_start`], [`drive_swap`],
//!   [`containerd_running`].
//! - Kata Containers (fc.go): [`kata_config_file`] given with `--api-sock`
//!   and `--config-file` ([`kata_args`]), [`kata_running`], then
//!   [`drive_swap`] for the container's rootfs.
//!
//! Each [`Request`] must answer 2xx, and with `expect` a JSON body holding at
//! least those fields ([`assert_subset`]); [`run`] checks both.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One API request of a sequence.
#[derive(Clone, Debug)]
pub struct Request {
    /// HTTP method.
    pub method: &'static str,
    /// Path, e.g. `/drives/rootfs`.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// Fields the JSON reply must hold (a subset), if the client reads it.
    pub expect: Option<Value>,
    /// A readiness probe: the client sends it again (every 10 ms, for up to
    /// [`PROBE_TIMEOUT`]) until it answers 2xx, as go-sdk's waitForSocket
    /// and Kata's waitVMMRunning do.
    pub probe: bool,
}

/// How long a probe is retried.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

fn req(method: &'static str, path: &str, body: Option<Value>) -> Request {
    Request { method, path: path.to_string(), body, expect: None, probe: false }
}

fn probe(r: Request) -> Request {
    Request { probe: true, ..r }
}

fn get(path: &str, expect: Value) -> Request {
    Request { method: "GET", path: path.to_string(), body: None, expect: Some(expect), probe: false }
}

fn put(path: &str, body: Value) -> Request {
    req("PUT", path, Some(body))
}

fn action(kind: &str) -> Request {
    put("/actions", json!({"action_type": kind}))
}

/// Sends each request with `send` (method, path, body -> status, body;
/// status 0 when the socket did not answer) and checks its answer; returns
/// the replies' bodies (JSON, or Null).
pub fn run(reqs: &[Request], mut send: impl FnMut(&str, &str, Option<&Value>) -> (u16, String)) -> Vec<Value> {
    reqs.iter()
        .map(|r| {
            let started = Instant::now();
            let (status, body) = loop {
                let (status, body) = send(r.method, &r.path, r.body.as_ref());
                let ok = (200..300).contains(&status) && r.expect.as_ref().is_none_or(|w| subset(&body, w));
                if ok || !r.probe || started.elapsed() > PROBE_TIMEOUT {
                    break (status, body);
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let sent = r.body.as_ref().map(Value::to_string).unwrap_or_default();
            assert!((200..300).contains(&status), "{} {} {sent}: {status} {body}", r.method, r.path);
            let got: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if let Some(want) = &r.expect {
                assert_subset(&got, want, &format!("{} {}", r.method, r.path));
            }
            got
        })
        .collect()
}

/// Whether `body` is JSON holding `want`'s fields (as [`assert_subset`]).
fn subset(body: &str, want: &Value) -> bool {
    fn holds(got: &Value, want: &Value) -> bool {
        match (got, want) {
            (Value::Object(g), Value::Object(w)) => w.iter().all(|(k, v)| holds(g.get(k).unwrap_or(&Value::Null), v)),
            (Value::Array(g), Value::Array(w)) => g.len() == w.len() && g.iter().zip(w).all(|(g, w)| holds(g, w)),
            _ => got == want,
        }
    }
    holds(&serde_json::from_str(body).unwrap_or(Value::Null), want)
}

/// Every field `want` gives has that value in `got` (objects recursively,
/// arrays element by element with equal lengths).
pub fn assert_subset(got: &Value, want: &Value, what: &str) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, v) in w {
                assert_subset(g.get(k).unwrap_or(&Value::Null), v, &format!("{what}.{k}"));
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: {got} vs {want}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_subset(g, w, &format!("{what}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "{what}"),
    }
}

/// The guest every sequence boots: what the orchestrator's own
/// configuration would name.
#[derive(Clone, Debug)]
pub struct Guest {
    /// `kernel_image_path`.
    pub kernel: PathBuf,
    /// `initrd_path` (the Alpine guest needs one; the orchestrators' own
    /// kernels boot without).
    pub initrd: Option<PathBuf>,
    /// `boot_args`.
    pub boot_args: String,
    /// The root image.
    pub rootfs: PathBuf,
    /// `vcpu_count`.
    pub vcpus: u32,
    /// `mem_size_mib`.
    pub mem_mib: u32,
}

impl Guest {
    fn boot_source(&self) -> Value {
        let mut b = json!({"kernel_image_path": self.kernel, "boot_args": self.boot_args});
        if let Some(initrd) = &self.initrd {
            b["initrd_path"] = json!(initrd);
        }
        b
    }
}

/// What firecracker-go-sdk's `Config` names.
#[derive(Clone, Debug)]
pub struct GoSdk {
    /// `VMID` (`--id`).
    pub id: String,
    /// The guest.
    pub guest: Guest,
    /// `LogFifo` / `LogPath`.
    pub log: PathBuf,
    /// `MetricsFifo` / `MetricsPath`.
    pub metrics: PathBuf,
    /// The tap of the one `NetworkInterface`.
    pub tap: String,
    /// Its `MacAddress` (upper case, as users write it).
    pub mac: String,
    /// `VsockDevices[0].Path`.
    pub vsock_uds: PathBuf,
    /// The `firecracker_version` `GET /version` must report
    /// (`api::FIRECRACKER_API_VERSION`).
    pub version: String,
}

/// The drive ID go-sdk gives the root drive (`NewDrivesBuilder`: "1").
pub const GO_SDK_ROOT_DRIVE: &str = "1";
/// go-sdk's interface IDs count from "1".
pub const GO_SDK_IFACE: &str = "1";

/// firecracker-go-sdk's default handler chain up to the start: readiness
/// probe, BootstrapLogging (logger, metrics), CreateMachine, CreateBootSource,
/// AttachDrives, CreateNetworkInterfaces, AddVsocks, SetMetadata (mmds config
/// and document), StartInstance.
pub fn go_sdk_start(c: &GoSdk) -> Vec<Request> {
    vec![
        probe(req("GET", "/machine-config", None)), // waitForSocket's probe
        put("/logger", json!({"log_path": c.log, "level": "Debug", "show_level": true, "show_log_origin": false})),
        put("/metrics", json!({"metrics_path": c.metrics})),
        put(
            "/machine-config",
            json!({"vcpu_count": c.guest.vcpus, "mem_size_mib": c.guest.mem_mib, "smt": false,
                "track_dirty_pages": false}),
        ),
        put("/boot-source", c.guest.boot_source()),
        put(
            &format!("/drives/{GO_SDK_ROOT_DRIVE}"),
            json!({"drive_id": GO_SDK_ROOT_DRIVE, "path_on_host": c.guest.rootfs, "is_root_device": true,
                "is_read_only": false}),
        ),
        put(
            &format!("/network-interfaces/{GO_SDK_IFACE}"),
            json!({"iface_id": GO_SDK_IFACE, "host_dev_name": c.tap, "guest_mac": c.mac}),
        ),
        // Optional in the SDK: only when the machine config asks for them.
        // Firecracker listens on uds_path at PUT: its directory exists by then.
        put("/vsock", json!({"guest_cid": 3, "uds_path": c.vsock_uds})),
        put("/mmds/config", json!({"version": "V2", "network_interfaces": [GO_SDK_IFACE]})),
        put("/mmds", go_sdk_metadata()),
        action("InstanceStart"),
    ]
}

/// The document go-sdk's `SetMetadata` puts.
pub fn go_sdk_metadata() -> Value {
    json!({"latest": {"meta-data": {"instance-id": "i-1"}}})
}

/// What a go-sdk user calls on the running machine: DescribeInstance,
/// GetExportVmConfig, GetFirecrackerVersion, PauseVM / ResumeVM (with a
/// DescribeInstance between), FlushMetrics.
pub fn go_sdk_running(c: &GoSdk) -> Vec<Request> {
    vec![
        get("/", json!({"id": c.id, "state": "Running"})),
        get(
            "/vm/config",
            json!({"drives": [{"drive_id": GO_SDK_ROOT_DRIVE}],
                "network-interfaces": [{"iface_id": GO_SDK_IFACE, "guest_mac": c.mac.to_lowercase()}]}),
        ),
        get("/version", json!({"firecracker_version": c.version})),
        get("/mmds", go_sdk_metadata()),
        req("PATCH", "/vm", Some(json!({"state": "Paused"}))),
        get("/", json!({"state": "Paused"})),
        req("PATCH", "/vm", Some(json!({"state": "Resumed"}))),
        get("/", json!({"state": "Running"})),
        action("FlushMetrics"),
    ]
}

/// `Machine.Shutdown`: SendCtrlAltDel.
pub fn go_sdk_stop() -> Vec<Request> {
    vec![action("SendCtrlAltDel")]
}

/// What firecracker-containerd's runtime names.
#[derive(Clone, Debug)]
pub struct Containerd {
    /// The guest.
    pub guest: Guest,
    /// Whether the root drive is read-only (firecracker-containerd's is).
    pub root_read_only: bool,
    /// The logger FIFO.
    pub log: PathBuf,
    /// The metrics FIFO.
    pub metrics: PathBuf,
    /// The placeholder ("stub") drive images, `stub0`, `stub1`, ...
    pub stubs: Vec<PathBuf>,
    /// The agent's vsock `uds_path`.
    pub vsock_uds: PathBuf,
}

/// ID of the `i`-th firecracker-containerd placeholder drive.
pub fn containerd_stub_id(i: usize) -> String {
    format!("stub{i}")
}

/// firecracker-containerd's runtime up to the start: logger and metrics to
/// FIFOs, machine, boot source, root drive, the placeholder drives, the
/// agent's vsock, InstanceStart.
pub fn containerd_start(c: &Containerd) -> Vec<Request> {
    let mut reqs = vec![
        put("/logger", json!({"log_path": c.log, "level": "Info"})),
        put("/metrics", json!({"metrics_path": c.metrics})),
        put("/machine-config", json!({"vcpu_count": c.guest.vcpus, "mem_size_mib": c.guest.mem_mib})),
        put("/boot-source", c.guest.boot_source()),
        put(
            "/drives/root_drive",
            json!({"drive_id": "root_drive", "path_on_host": c.guest.rootfs, "is_root_device": true,
                "is_read_only": c.root_read_only}),
        ),
    ];
    for (i, stub) in c.stubs.iter().enumerate() {
        let id = containerd_stub_id(i);
        reqs.push(put(
            &format!("/drives/{id}"),
            json!({"drive_id": id, "path_on_host": stub, "is_root_device": false, "is_read_only": false}),
        ));
    }
    reqs.push(put("/vsock", json!({"guest_cid": 3, "uds_path": c.vsock_uds})));
    reqs.push(action("InstanceStart"));
    reqs
}

/// The placeholder `drive_id` gets the image at `path` while the VM runs
/// (firecracker-containerd for a container's snapshot, Kata for its rootfs).
pub fn drive_swap(drive_id: &str, path: &Path) -> Request {
    req("PATCH", &format!("/drives/{drive_id}"), Some(json!({"drive_id": drive_id, "path_on_host": path})))
}

/// firecracker-containerd on the running VM: PauseVM, ResumeVM, and the
/// metrics flush of its shutdown path.
pub fn containerd_running() -> Vec<Request> {
    vec![
        req("PATCH", "/vm", Some(json!({"state": "Paused"}))),
        get("/", json!({"state": "Paused"})),
        req("PATCH", "/vm", Some(json!({"state": "Resumed"}))),
        get("/", json!({"state": "Running"})),
        action("FlushMetrics"),
    ]
}

/// What Kata's `[hypervisor.firecracker]` configuration and sandbox name.
#[derive(Clone, Debug)]
pub struct Kata {
    /// The guest (Kata attaches its image as a non-root drive).
    pub guest: Guest,
    /// `logs.fifo`.
    pub log: PathBuf,
    /// `metrics.fifo`.
    pub metrics: PathBuf,
    /// The disk pool's placeholder files (Kata: 8, empty).
    pub pool: Vec<PathBuf>,
    /// The sandbox's tap.
    pub tap: String,
    /// The hybrid vsock's `uds_path` (`kata.hvsock`).
    pub vsock_uds: PathBuf,
}

/// Kata's disk pool size (fcDiskPoolSize).
pub const KATA_DISK_POOL: usize = 8;
/// The network rate limit Kata derives from `rx/tx_rate_limiter_max_rate`
/// (here 10 Mbit/s: bytes per 1000 ms).
pub const KATA_RATE_BYTES: u64 = 1_250_000;

/// ID of Kata's `i`-th pool drive (fcDriveIndexToID).
pub fn kata_drive_id(i: usize) -> String {
    format!("drive_{i}")
}

/// The `--config-file` Kata writes (fcInitConfiguration): boot source, its
/// image as a non-root drive, the disk pool, the machine, logger and
/// metrics FIFOs, the tap with rate limiters, the hybrid vsock.
pub fn kata_config_file(k: &Kata) -> Value {
    let mut drives = vec![json!({"drive_id": "rootfs", "path_on_host": k.guest.rootfs, "is_root_device": false,
        "is_read_only": false})];
    for (i, p) in k.pool.iter().enumerate() {
        drives.push(json!({"drive_id": kata_drive_id(i), "path_on_host": p, "is_root_device": false,
            "is_read_only": false}));
    }
    let limiter = json!({"bandwidth": {"size": KATA_RATE_BYTES, "refill_time": 1000}});
    json!({
        "boot-source": k.guest.boot_source(),
        "drives": drives,
        "machine-config": {"vcpu_count": k.guest.vcpus, "mem_size_mib": k.guest.mem_mib, "smt": false},
        "logger": {"log_path": k.log, "level": "Error"},
        "metrics": {"metrics_path": k.metrics},
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": k.tap, "guest_mac": "02:00:ca:fe:00:01",
            "rx_rate_limiter": limiter, "tx_rate_limiter": limiter}],
        "vsock": {"guest_cid": 3, "uds_path": k.vsock_uds},
    })
}

/// Kata's command line without the jailer (fcStartVM).
pub fn kata_args(api_sock: &Path, config_file: &Path) -> Vec<OsString> {
    vec!["--api-sock".into(), api_sock.into(), "--config-file".into(), config_file.into()]
}

/// Kata after the start: waitVMMRunning's DescribeInstance.
pub fn kata_running() -> Vec<Request> {
    vec![probe(get("/", json!({"state": "Running"})))]
}

/// Kata's version check (getVersionNumber): the second word of
/// `--version`'s first line, `v` stripped, as (major, minor, patch).
pub fn kata_parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text.lines().next()?.split_whitespace().nth(1)?;
    let mut parts = word.strip_prefix('v').unwrap_or(word).split('.').map(|p| p.parse().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}
