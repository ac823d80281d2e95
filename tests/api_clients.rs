//! The request sequences Firecracker's orchestrators send, written from their
//! documented calls, against shimvmm's API (in-process, with the recording
//! controller: nothing boots). Each request is expected either to succeed or
//! to be refused as "not supported by shimvmm yet" - so these tests say
//! exactly which calls still stand between each orchestrator and shimvmm,
//! and fail when that changes (for better or worse).

use std::sync::Arc;

use api::testing::{Call, RecordingController};
use api::{Api, VmConfig};
use serde_json::{json, Value};

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

/// firecracker-go-sdk's default handler chain (handlers.go): readiness probe,
/// BootstrapLogging, CreateMachine, CreateBootSource, AttachDrives,
/// CreateNetworkInterfaces, AddVsocks, SetMetadata, StartInstance; then
/// DescribeInstance, GetExportVmConfig, GetFirecrackerVersion, pause/resume,
/// FlushMetrics, Shutdown (SendCtrlAltDel).
#[test]
fn firecracker_go_sdk_boot() {
    let c = Client::new("go-sdk-vm");
    use Want::*;
    c.call("GET", "/machine-config", None, Ok); // waitForSocket's probe
    c.call(
        "PUT",
        "/logger",
        Some(json!({"log_path": "/run/vm/log.fifo", "level": "Debug", "show_level": true, "show_log_origin": false})),
        Ok,
    );
    c.call("PUT", "/metrics", Some(json!({"metrics_path": "/run/vm/metrics.fifo"})), Ok);
    c.call(
        "PUT",
        "/machine-config",
        Some(json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": false})),
        Ok,
    );
    c.call(
        "PUT",
        "/boot-source",
        Some(json!({"kernel_image_path": "/img/vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1 pci=off"})),
        Ok,
    );
    c.call(
        "PUT",
        "/drives/1",
        Some(json!({"drive_id": "1", "path_on_host": "/img/rootfs.ext4", "is_root_device": true,
            "is_read_only": false})),
        Ok,
    );
    c.call(
        "PUT",
        "/network-interfaces/1",
        Some(json!({"iface_id": "1", "host_dev_name": "tap0", "guest_mac": "AA:FC:00:00:00:01"})),
        Ok,
    );
    // Optional in the SDK: only when the machine config asks for them.
    // Firecracker listens on uds_path at PUT: its directory exists by then.
    c.call("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": uds("go-sdk")})), Ok);
    c.call("PUT", "/mmds/config", Some(json!({"version": "V2", "network_interfaces": ["1"]})), Ok);
    c.call("PUT", "/mmds", Some(json!({"latest": {"meta-data": {"instance-id": "i-1"}}})), Ok);
    c.call("PUT", "/actions", Some(json!({"action_type": "InstanceStart"})), Ok);

    let info = c.call("GET", "/", None, Ok);
    assert_eq!((info["id"].as_str(), info["state"].as_str()), (Some("go-sdk-vm"), Some("Running")));
    let cfg = c.call("GET", "/vm/config", None, Ok);
    assert_eq!(cfg["drives"][0]["drive_id"], "1");
    assert_eq!(cfg["network-interfaces"][0]["guest_mac"], "aa:fc:00:00:00:01");
    let v = c.call("GET", "/version", None, Ok);
    assert_eq!(v["firecracker_version"], api::FIRECRACKER_API_VERSION);
    c.call("PATCH", "/vm", Some(json!({"state": "Paused"})), Ok);
    assert_eq!(c.call("GET", "/", None, Ok)["state"], "Paused");
    c.call("PATCH", "/vm", Some(json!({"state": "Resumed"})), Ok);
    c.call("PUT", "/actions", Some(json!({"action_type": "FlushMetrics"})), Ok);
    c.call("PUT", "/actions", Some(json!({"action_type": "SendCtrlAltDel"})), Ok);
    let calls = c.ctl.calls();
    assert!(matches!(calls[0], Call::ConfigureLogger(_)) && matches!(calls[1], Call::ConfigureMetrics(_)), "{calls:?}");
    assert!(calls.contains(&Call::SendCtrlAltDel));
}

/// firecracker-containerd: its agent over vsock (always), logger and metrics
/// to FIFOs, placeholder drives attached before boot and swapped for the
/// container images after it with PATCH /drives (served), pause/resume.
#[test]
fn firecracker_containerd_drive_swap() {
    let c = Client::new("containerd-vm");
    use Want::*;
    c.call("PUT", "/logger", Some(json!({"log_path": "/var/lib/fc/log.fifo", "level": "Info"})), Ok);
    c.call("PUT", "/metrics", Some(json!({"metrics_path": "/var/lib/fc/metrics.fifo"})), Ok);
    c.call("PUT", "/machine-config", Some(json!({"vcpu_count": 1, "mem_size_mib": 512})), Ok);
    c.call("PUT", "/boot-source", Some(json!({"kernel_image_path": "/var/lib/fc/kernel", "boot_args": "ro"})), Ok);
    c.call(
        "PUT",
        "/drives/root_drive",
        Some(json!({"drive_id": "root_drive", "path_on_host": "/var/lib/fc/rootfs.img", "is_root_device": true,
            "is_read_only": true})),
        Ok,
    );
    for i in 0..4 {
        let id = format!("stub{i}");
        let body = json!({"drive_id": id, "path_on_host": format!("/var/lib/fc/stub{i}"), "is_root_device": false,
            "is_read_only": false});
        c.call("PUT", &format!("/drives/{id}"), Some(body), Ok);
    }
    c.call("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": uds("containerd")})), Ok);
    c.call("PUT", "/actions", Some(json!({"action_type": "InstanceStart"})), Ok);
    // The container image replaces a placeholder once the VM runs.
    c.call("PATCH", "/drives/stub0", Some(json!({"drive_id": "stub0", "path_on_host": "/var/lib/img/c1.ext4"})), Ok);
    assert!(c.ctl.calls().contains(&Call::ReplaceDrive("stub0".into(), "/var/lib/img/c1.ext4".into())));
    c.call("PATCH", "/vm", Some(json!({"state": "Paused"})), Ok);
    c.call("PATCH", "/vm", Some(json!({"state": "Resumed"})), Ok);
    let calls = c.ctl.calls();
    assert_eq!(calls[calls.len() - 2..], [Call::Pause, Call::Resume]);
    c.call("PUT", "/actions", Some(json!({"action_type": "FlushMetrics"})), Ok);
}

/// Kata Containers (fc.go): `--api-sock` with `--config-file` holding the
/// boot source, the root drive, 8 placeholder drives, the machine, logger and
/// metrics FIFOs and a hybrid vsock; later PATCH /drives for the
/// container's rootfs and network interfaces with rate limiters.
#[test]
fn kata_start_up() {
    let mut file = json!({
        "boot-source": {"kernel_image_path": "/run/kata/vmlinux",
            "boot_args": "pci=off reboot=k panic=1 iommu=off net.ifnames=0 random.trust_cpu=on acpi=off"},
        "drives": [{"drive_id": "rootfs", "path_on_host": "/run/kata/rootfs.img", "is_root_device": false,
            "is_read_only": true}],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 2048, "smt": false},
        "logger": {"log_path": "/run/kata/logs.fifo", "level": "Error"},
        "metrics": {"metrics_path": "/run/kata/metrics.fifo"},
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0_kata", "guest_mac": "02:00:ca:fe:00:01",
            "rx_rate_limiter": null, "tx_rate_limiter": null}],
    });
    for i in 0..8 {
        let drive = json!({"drive_id": format!("drive_{i}"), "path_on_host": format!("/run/kata/drive_{i}"),
            "is_root_device": false, "is_read_only": false});
        file["drives"].as_array_mut().unwrap().push(drive);
    }
    // The file is a valid shimvmm configuration...
    let cfg: VmConfig = serde_json::from_value(file.clone()).expect("Kata's config file parses");
    let spec = api::VmSpec::try_from(cfg).expect("Kata's config file validates");
    assert_eq!(spec.drives.len(), 9);
    // ...and with the hybrid vsock Kata's agent needs.
    file["vsock"] = json!({"guest_cid": 3, "uds_path": "kata.hvsock"});
    let cfg: VmConfig = serde_json::from_value(file).unwrap();
    let spec = api::VmSpec::try_from(cfg).expect("Kata's config file with a vsock validates");
    assert_eq!(spec.vsock.map(|v| v.guest_cid), Some(3));

    // The API calls after boot.
    let c = Client::new("kata");
    c.call("PUT", "/boot-source", Some(json!({"kernel_image_path": "/run/kata/vmlinux"})), Want::Ok);
    c.call(
        "PUT",
        "/drives/drive_0",
        Some(json!({"drive_id": "drive_0", "path_on_host": "/run/kata/drive_0", "is_root_device": false})),
        Want::Ok,
    );
    c.call(
        "PUT",
        "/network-interfaces/eth0",
        Some(json!({"iface_id": "eth0", "host_dev_name": "tap0_kata",
            "rx_rate_limiter": {"bandwidth": {"size": 1250000, "refill_time": 1000}}})),
        Want::Ok,
    );
    c.call("PUT", "/actions", Some(json!({"action_type": "InstanceStart"})), Want::Ok);
    let bw = c.ctl.started_specs()[0].network_interfaces[0].rx_rate_limiter.and_then(|l| l.bandwidth);
    assert_eq!(bw.map(|b| (b.size, b.refill_time)), Some((1_250_000, 1000)), "the VM is built with Kata's limiter");
    c.call(
        "PATCH",
        "/drives/drive_0",
        Some(json!({"drive_id": "drive_0", "path_on_host": "/run/kata/shared/c1-rootfs"})),
        Want::Ok,
    );
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
