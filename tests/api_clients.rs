//! The request sequences Firecracker's orchestrators send, written from their
//! documented calls, against shimvmm's API (in-process, with the recording
//! controller: nothing boots). The go-sdk, firecracker-containerd and Kata
//! sequences are tests/common/orchestrators.rs, which tests/fc_orchestrators.rs
//! also sends to a real shimvmm that boots the Alpine guest. Each request is expected either to succeed or
//! to be refused as "not supported by shimvmm yet" - so these tests say
//! exactly which calls still stand between each orchestrator and shimvmm,
//! and fail when that changes (for better or worse).

use std::sync::Arc;

use api::testing::{Call, RecordingController};
use api::{Api, VmConfig};
use serde_json::{json, Value};
use shimvmm_tests::orchestrators::{self, Containerd, GoSdk, Guest, Kata, Request};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// 2xx.
    Ok,
}

struct Client {
    api: Api,
    ctl: Arc<RecordingController>,
}

impl Client {
    fn new(id: &str) -> Client {
        let ctl = Arc::new(RecordingController::new());
        Client { api: Api::new(id.into(), ctl.clone(), VmConfig::default(), false), ctl }
    }

    /// Send one request; check it got `want`; the body, if any.
    fn call(&self, method: &str, path: &str, body: Option<Value>, want: Want) -> Value {
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let r = self.api.handle(method, path, text.as_bytes());
        let got = r.body.as_deref().unwrap_or("");
        match want {
            Want::Ok => assert!((200..300).contains(&r.status), "{method} {path} {text}: {} {got}", r.status),
        }
        serde_json::from_str(got).unwrap_or(Value::Null)
    }
}

/// A vsock socket path in an existing directory, free (Firecracker's clients
/// make the directory before they PUT /vsock).
fn uds(name: &str) -> String {
    let p = std::env::temp_dir().join(format!("api-clients-{}-{name}.vsock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.to_string_lossy().into_owned()
}

fn guest(root: &str, vcpus: u32, mem_mib: u32) -> Guest {
    Guest {
        kernel: "/img/vmlinux".into(),
        initrd: None,
        boot_args: "console=ttyS0 reboot=k panic=1 pci=off".into(),
        rootfs: root.into(),
        vcpus,
        mem_mib,
    }
}

impl Client {
    /// Sends a shared sequence (tests/common/orchestrators.rs); each request
    /// must succeed and answer what the sequence expects.
    fn run(&self, reqs: &[Request]) -> Vec<Value> {
        orchestrators::run(reqs, |method, path, body| {
            let text = body.map(Value::to_string).unwrap_or_default();
            let r = self.api.handle(method, path, text.as_bytes());
            (r.status, r.body.unwrap_or_default())
        })
    }
}

/// firecracker-go-sdk's default handler chain (handlers.go), then
/// DescribeInstance, GetExportVmConfig, GetFirecrackerVersion, pause/resume,
/// FlushMetrics, Shutdown (SendCtrlAltDel): `orchestrators::go_sdk_*`.
#[test]
fn firecracker_go_sdk_boot() {
    let cfg = GoSdk {
        id: "go-sdk-vm".into(),
        guest: guest("/img/rootfs.ext4", 2, 256),
        log: "/run/vm/log.fifo".into(),
        metrics: "/run/vm/metrics.fifo".into(),
        tap: "tap0".into(),
        mac: "AA:FC:00:00:00:01".into(),
        vsock_uds: uds("go-sdk").into(),
        version: api::FIRECRACKER_API_VERSION.into(),
    };
    let c = Client::new(&cfg.id);
    c.run(&orchestrators::go_sdk_start(&cfg));
    c.run(&orchestrators::go_sdk_running(&cfg));
    c.run(&orchestrators::go_sdk_stop());
    let calls = c.ctl.calls();
    assert!(matches!(calls[0], Call::ConfigureLogger(_)) && matches!(calls[1], Call::ConfigureMetrics(_)), "{calls:?}");
    assert!(calls.contains(&Call::Pause) && calls.contains(&Call::Resume), "{calls:?}");
    assert_eq!(calls.last(), Some(&Call::SendCtrlAltDel));
}

/// firecracker-containerd: its agent over vsock (always), logger and metrics
/// to FIFOs, placeholder drives attached before boot and swapped for the
/// container images after it with PATCH /drives, pause/resume:
/// `orchestrators::containerd_*`.
#[test]
fn firecracker_containerd_drive_swap() {
    let cfg = Containerd {
        guest: guest("/var/lib/fc/rootfs.img", 1, 512),
        root_read_only: true,
        log: "/var/lib/fc/log.fifo".into(),
        metrics: "/var/lib/fc/metrics.fifo".into(),
        stubs: (0..4).map(|i| format!("/var/lib/fc/stub{i}").into()).collect(),
        vsock_uds: uds("containerd").into(),
    };
    let c = Client::new("containerd-vm");
    c.run(&orchestrators::containerd_start(&cfg));
    // The container image replaces a placeholder once the VM runs.
    let image = std::path::Path::new("/var/lib/img/c1.ext4");
    c.run(&[orchestrators::drive_swap("stub0", image)]);
    assert!(c.ctl.calls().contains(&Call::ReplaceDrive("stub0".into(), image.into())));
    c.run(&orchestrators::containerd_running());
    let calls = c.ctl.calls();
    let paused = calls.iter().position(|c| *c == Call::Pause).unwrap_or_else(|| panic!("no pause: {calls:?}"));
    assert_eq!(calls.get(paused + 1), Some(&Call::Resume), "{calls:?}");
}

/// Kata Containers (fc.go): `--api-sock` with `--config-file` holding the
/// boot source, its image, 8 placeholder drives, the machine, logger and
/// metrics FIFOs, a tap with rate limiters and a hybrid vsock; then
/// DescribeInstance and PATCH /drives for the container's rootfs:
/// `orchestrators::kata_*`.
#[test]
fn kata_start_up() {
    let k = Kata {
        guest: guest("/run/kata/rootfs.img", 1, 2048),
        log: "/run/kata/logs.fifo".into(),
        metrics: "/run/kata/metrics.fifo".into(),
        pool: (0..orchestrators::KATA_DISK_POOL).map(|i| format!("/run/kata/drive_{i}").into()).collect(),
        tap: "tap0_kata".into(),
        vsock_uds: "kata.hvsock".into(),
    };
    let file = orchestrators::kata_config_file(&k);
    let cfg: VmConfig = serde_json::from_value(file).expect("Kata's config file parses");
    let spec = api::VmSpec::try_from(cfg.clone()).expect("Kata's config file validates");
    assert_eq!(spec.drives.len(), 1 + orchestrators::KATA_DISK_POOL);
    assert_eq!(spec.vsock.as_ref().map(|v| v.guest_cid), Some(3));
    let bw = spec.network_interfaces[0].rx_rate_limiter.and_then(|l| l.bandwidth);
    assert_eq!(bw.map(|b| (b.size, b.refill_time)), Some((orchestrators::KATA_RATE_BYTES, 1000)));
    let version = format!("Firecracker v{}\n", api::FIRECRACKER_API_VERSION);
    assert!(orchestrators::kata_parse_version(&version).is_some_and(|v| v >= (0, 21, 1)), "{version}");

    // The API beside the config file's running VM (shimvmm starts it first).
    let ctl = Arc::new(RecordingController::new());
    api::VmmController::start(&*ctl, &spec).expect("the recording controller starts Kata's VM");
    let c = Client { api: Api::new("kata".into(), ctl.clone(), cfg, true), ctl };
    c.run(&orchestrators::kata_running());
    let rootfs = std::path::Path::new("/run/kata/shared/c1-rootfs");
    c.run(&[orchestrators::drive_swap(&orchestrators::kata_drive_id(0), rootfs)]);
    assert!(c.ctl.calls().contains(&Call::ReplaceDrive("drive_0".into(), rootfs.into())));
}

/// firecracker-python (PyPI `firecracker-python`, MicroVM.create): started
/// with `--api-sock --id --log-path`, probes `GET /`, then boot source, root
/// drive, machine, one tap interface without a MAC, MMDS and vsock when
/// asked for, InstanceStart.
#[test]
fn firecracker_python_create() {
    let c = Client::new("a1b2c3d4");
    use Want::*;
    c.call("GET", "/", None, Ok);
    c.call(
        "PUT",
        "/boot-source",
        Some(json!({"kernel_image_path": "/var/lib/firecracker/vmlinux",
            "boot_args": "console=ttyS0 reboot=k pci=off panic=1 ip=172.16.0.2::172.16.0.1:255.255.255.0:vm:eth0:on"})),
        Ok,
    );
    c.call(
        "PUT",
        "/drives/rootfs",
        Some(json!({"drive_id": "rootfs", "path_on_host": "/var/lib/firecracker/a1b2c3d4/rootfs/rootfs.img",
            "is_root_device": true, "is_read_only": false})),
        Ok,
    );
    c.call("PUT", "/machine-config", Some(json!({"vcpu_count": 1, "mem_size_mib": 512})), Ok);
    c.call("PUT", "/network-interfaces/eth0", Some(json!({"iface_id": "eth0", "host_dev_name": "tap_a1b2c3d4"})), Ok);
    // With mmds_enabled / vsock_enabled only.
    let mmds = json!({"version": "V2", "ipv4_address": "169.254.169.254", "network_interfaces": ["eth0"]});
    c.call("PUT", "/mmds/config", Some(mmds), Ok);
    c.call("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": uds("fc-python")})), Ok);
    c.call("PUT", "/actions", Some(json!({"action_type": "InstanceStart"})), Ok);
    c.call("GET", "/vm/config", None, Ok);
    c.call("PATCH", "/vm", Some(json!({"state": "Paused"})), Ok);
}
