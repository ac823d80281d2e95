//! Host side of the guest network tests (`tests/net_tap.rs`, `tests/net_shim.rs`):
//! payloads and their sha256, a byte sink for guest TX, a tiny HTTP server for
//! guest RX and for "gates" (the host tells the guest script to go on), sockets
//! bound inside a network namespace, ping parsing and the guest script.
//!
//! The guest script is shared so both backends are exercised by the very same
//! guest-side steps; only addresses, ports and the reset step differ.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Bytes moved in each direction.
pub const PAYLOAD_LEN: usize = 64 << 20;
/// Where the guest finds its TX payload (written with debugfs before boot).
pub const GUEST_PAYLOAD: &str = "/payload";
/// Port of the host's byte sink (guest `nc HOST PORT < /payload`).
pub const SINK_PORT: u16 = 5001;
/// Port of the host's HTTP server (payload and gates).
pub const HTTP_PORT: u16 = 5002;

/// A deterministic incompressible-looking payload (xorshift64*), so a
/// misplaced or repeated segment changes the hash.
/// shimvmm booting the Alpine guest (2 vCPUs, 512 MiB, no API) with `image` as
/// root, metrics written to `metrics`, and one NIC given by `net` (a `--net` spec).
pub fn shimvmm_guest_command(image: &Path, metrics: &Path, net: &str) -> Command {
    let art = shimvmm_tests::artifacts();
    let mut cmd = Command::new(shimvmm_tests::shimvmm_bin());
    cmd.arg("--kernel")
        .arg(&art.kernel)
        .arg("--initrd")
        .arg(&art.initrd)
        .arg("--cmdline")
        .arg(shimvmm_tests::alpine_test_cmdline())
        .args(["--mem", "512", "--vcpus", "2", "--no-api", "--log-level", "info"])
        .arg("--metrics-path")
        .arg(metrics)
        .arg("--disk")
        .arg(format!("path={},root=on", image.display()))
        .arg("--net")
        .arg(net);
    cmd
}

/// (utime + stime, guest_time) of PID in seconds, all threads, from
/// /proc/PID/stat. Linux counts a vCPU thread's time in the guest as user
/// time and also as guest_time (field 43), so the VMM's own CPU is the
/// difference.
pub fn cpu_times(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = text.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    // Field N of stat(5) is f[N - 3] (f starts at field 3, the state).
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = clock_ticks_per_sec();
    ((field(14) + field(15)) / hz, field(43) / hz)
}

/// The unit of /proc's CPU times.
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Busy CPU seconds of the whole machine (all CPUs) from /proc/stat: user,
/// nice, system, irq, softirq and steal (guest time is inside user). What a
/// VMM's own /proc/PID/stat misses: the host kernel's softirq work (GRO,
/// routing, a tap's delivery) on a CPU that was idle is charged to no
/// process.
pub fn host_busy_secs() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = text.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
    let v: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy / clock_ticks_per_sec()
}

pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Lower-case hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Megabits per second.
pub fn mbit_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs.max(1e-6) / 1e6
}

/// One host-initiated vsock connection (Firecracker's model): connects to
/// `uds`, sends `CONNECT <port>`, and returns the stream and its `OK <port>`
/// line, or None if shimvmm closed it without one (nobody listening yet).
pub fn vsock_connect(uds: &Path, port: u32) -> Option<(std::os::unix::net::UnixStream, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(uds).ok()?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).expect("send CONNECT");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < 32 {
        match s.read(&mut b) {
            Ok(1) => line.push(b[0]),
            _ => break,
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    (line.starts_with("OK ") && line.ends_with('\n')).then_some((s, line))
}

/// resources/guest/vsockcat.c (the guest's AF_VSOCK relay: the image has no
/// vsock-capable tool) built static in `dir` and put into the image as
/// /root/vsockcat.
pub fn put_vsockcat_in_image(image: &Path, dir: &Path) {
    let out = dir.join("vsockcat");
    let src = shimvmm_tests::repo_root().join("resources/guest/vsockcat.c");
    let status = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc (build-essential) for the guest's vsockcat");
    assert!(status.success(), "cc -static {} failed", src.display());
    put_file_in_image(image, &std::fs::read(&out).expect("read the built vsockcat"), "/root/vsockcat");
}

/// Puts `data` into the ext4 image at `dst` (debugfs, no mount needed).
pub fn put_file_in_image(image: &Path, data: &[u8], dst: &str) {
    let src = image.with_extension(format!("payload-{}", std::process::id()));
    std::fs::write(&src, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", src.display()));
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} {dst}", src.display()))
        .arg(image)
        .output()
        .expect("run debugfs (e2fsprogs)");
    let _ = std::fs::remove_file(&src);
    assert!(out.status.success(), "debugfs write {dst} failed: {}", String::from_utf8_lossy(&out.stderr));
    // debugfs exits 0 even when a command fails; check the file landed whole.
    let stat = Command::new("debugfs").arg("-R").arg(format!("stat {dst}")).arg(image).output().expect("run debugfs");
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(
        text.contains(&format!("Size: {}", data.len())),
        "{dst} did not land in {} with {} bytes: {text}\n{}",
        image.display(),
        data.len(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a fresh thread that first joins network namespace `ns`
/// (`/run/netns/NS`, as made by `ip netns add`), so sockets it creates live
/// there. `None` runs it in the current namespace. Other threads are untouched.
pub fn in_netns<T: Send + 'static>(ns: Option<&str>, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.map(|n| format!("/run/netns/{n}"));
    std::thread::spawn(move || {
        if let Some(path) = ns {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
            use std::os::fd::AsRawFd;
            // SAFETY: setns only changes this thread's network namespace; the
            // fd is a valid open namespace file for the duration of the call.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// A TCP listener on `ip:port` inside `ns`.
pub fn listen(ns: Option<&str>, ip: &str, port: u16) -> TcpListener {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("socket address");
    in_netns(ns, move || TcpListener::bind(addr).unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}")))
}

/// What the sink received.
#[derive(Debug)]
pub struct Received {
    pub bytes: u64,
    pub sha256: String,
    /// From accept to the last byte.
    pub secs: f64,
}

/// Accepts one connection and reads exactly `expect` bytes (then closes, which
/// ends the guest's nc), hashing as it goes. Gives up after `timeout`.
pub fn spawn_sink(listener: TcpListener, expect: usize, timeout: Duration) -> JoinHandle<std::io::Result<Received>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + timeout;
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no connection to the sink"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        let start = Instant::now();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        while got < expect {
            let want = buf.len().min(expect - got);
            let n = conn.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            // Progress every 16 MiB: on a loaded testbed a transfer takes minutes.
            if (got + n) >> 24 != got >> 24 {
                eprintln!("sink: {} MiB after {:.1} s", (got + n) >> 20, start.elapsed().as_secs_f64());
            }
            got += n;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(Received { bytes: got as u64, sha256: hex(&hasher.finalize()), secs })
    })
}

/// A minimal HTTP/1.0 server: `GET /payload` returns the payload, `GET /gate/NAME`
/// returns 200 "go" once the host opened gate NAME and 503 before. Each request
/// path is recorded so the test can see the guest reached a gate.
pub struct HttpServer {
    opened: Arc<Mutex<HashSet<String>>>,
    asked: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
    /// Payload bytes fully written.
    pub served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(listener: TcpListener, body: Arc<Vec<u8>>) -> HttpServer {
        let opened = Arc::new(Mutex::new(HashSet::new()));
        let asked = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        listener.set_nonblocking(true).expect("nonblocking listener");
        let (o, a, s, sv) = (opened.clone(), asked.clone(), stop.clone(), served.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (o, a, body, sv) = (o.clone(), a.clone(), body.clone(), sv.clone());
                        std::thread::spawn(move || {
                            let _ = serve(c, &o, &a, &body, &sv);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HttpServer { opened, asked, stop, served, thread: Some(thread) }
    }

    /// Lets the guest pass gate `name`.
    pub fn open_gate(&self, name: &str) {
        self.opened.lock().unwrap().insert(name.to_string());
    }

    /// Waits until the guest asked for gate `name` (it is waiting there).
    /// Gives up as soon as `vm` can no longer ask (its VMM exited, the guest
    /// hung or stopped), not only after `timeout`: the error says which.
    pub fn wait_asked(&self, name: &str, timeout: Duration, vm: &shimvmm_tests::GuestProcess) -> Result<(), String> {
        let what = format!("the guest to reach gate {name}");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.asked.lock().unwrap().contains(name) {
                return Ok(());
            }
            vm.check_running(&what).map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("timed out after {} s waiting for {what}; last console lines:\n{}", timeout.as_secs(), vm.tail(40)))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut c: TcpStream,
    opened: &Mutex<HashSet<String>>,
    asked: &Mutex<HashSet<String>>,
    body: &[u8],
    served: &AtomicU64,
) -> std::io::Result<()> {
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    c.set_write_timeout(Some(Duration::from_secs(120)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    if path == "/payload" {
        c.write_all(
            format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )?;
        c.write_all(body)?;
        served.fetch_add(body.len() as u64, Ordering::Relaxed);
    } else if let Some(name) = path.strip_prefix("/gate/") {
        asked.lock().unwrap().insert(name.to_string());
        if opened.lock().unwrap().contains(name) {
            c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\ngo\n")?;
        } else {
            c.write_all(b"HTTP/1.0 503 Wait\r\nContent-Length: 0\r\n\r\n")?;
        }
    } else {
        c.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
    }
    c.flush()?;
    let _ = c.shutdown(std::net::Shutdown::Write);
    // Let the client read everything before the socket goes (no RST).
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = c.read(&mut buf);
    Ok(())
}

/// Sends UDP datagrams of `size` bytes to `dst` from inside `ns` as fast as it
/// can until `stop` is set or `max` passes; returns the datagrams sent.
pub fn spawn_udp_flood(
    ns: Option<&str>,
    dst: SocketAddr,
    size: usize,
    max: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> JoinHandle<()> {
    let sock = in_netns(ns, || UdpSocket::bind("0.0.0.0:0").expect("bind UDP"));
    std::thread::spawn(move || {
        let data = vec![0x5au8; size];
        let end = Instant::now() + max;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            // Bursts with a short pause: at most ~16k datagrams/s, enough to
            // keep the NIC's RX ring busy without starving the testbed's CPUs.
            for _ in 0..32 {
                // Errors (no neighbour while the guest is unbound) are expected.
                if sock.send_to(&data, dst).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

/// A ping run's summary.
#[derive(Debug, Clone)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// min/avg/max in ms.
    pub rtt: Option<(f64, f64, f64)>,
}

/// Parses iputils or busybox ping output.
pub fn parse_ping(out: &str) -> Option<PingStats> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let nums: Vec<u32> =
        line.split(',').filter_map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok())).collect();
    let rtt = out.lines().find(|l| l.contains("min/avg/max")).and_then(|l| l.split('=').nth(1)).and_then(|v| {
        let v: Vec<f64> = v.trim().split(['/', ' ']).filter_map(|x| x.parse().ok()).collect();
        (v.len() >= 3).then(|| (v[0], v[1], v[2]))
    });
    Some(PingStats { transmitted: *nums.first()?, received: *nums.get(1)?, rtt })
}

/// Pings `ip` `count` times from the host (inside `ns` if given).
pub fn host_ping(ns: Option<&str>, ip: &str, count: u32) -> (PingStats, String) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ping"]);
            c
        }
        None => Command::new("ping"),
    };
    let out = cmd.args(["-c", &count.to_string(), "-i", "0.2", "-W", "3", ip]).output().expect("run ping");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let stats = parse_ping(&text).unwrap_or_else(|| panic!("cannot parse ping output:\n{text}"));
    (stats, text)
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(args: &[&str]) {
    let out = output_bounded(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
}

/// How long a command on the host's side of the wire (`ip`, `ping` in the
/// peer's namespace) may take. In the testbed L1's own kernel runs them and
/// drives the peer's NIC; one that outlasts this is stuck there, not in the
/// VM under test.
pub const PEER_COMMAND_SECS: u32 = 60;

/// What a test prints when such a command hung (devtool counts it as a
/// testbed fault).
pub const PEER_HUNG: &str = "a command on the host's side of the wire hung";

/// `args` run under `timeout`, its output; panics with [`PEER_HUNG`] if it
/// did not finish in [`PEER_COMMAND_SECS`].
pub fn output_bounded(args: &[&str]) -> std::process::Output {
    output_within(args, PEER_COMMAND_SECS)
}

fn output_within(args: &[&str], secs: u32) -> std::process::Output {
    let limit = secs.to_string();
    let out = Command::new("timeout")
        .args(["-k", "5", &limit])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run timeout {args:?}: {e}"));
    // timeout exits 124 when it stopped the command, 137 when it had to kill it.
    if matches!(out.status.code(), Some(124) | Some(137)) {
        panic!("{PEER_HUNG}: {args:?} did not finish in {limit} s");
    }
    out
}

/// Parameters of the guest script.
pub struct GuestNet<'a> {
    /// The host or peer the guest talks to.
    pub peer_ip: &'a str,
    /// The guest's address with prefix, e.g. 192.0.2.130/25.
    pub guest_cidr: &'a str,
    /// Unbind/rebind the virtio_net driver under a flood (shim test).
    pub reset_step: bool,
    /// The UDP packets-per-second phase (`GUEST_UDP`; needs the
    /// `udpblast` helper at `UDP_HELPER` in the image).
    pub udp: bool,
}

/// The guest side, sourced by the test-image runner (helpers: `marker`,
/// `guest_uptime`). Gates: the script waits for `GET /gate/NAME` to answer 200.
pub fn guest_script(p: &GuestNet) -> String {
    let mut s = GUEST_COMMON
        .replace("@PEER@", p.peer_ip)
        .replace("@CIDR@", p.guest_cidr)
        .replace("@SINK@", &SINK_PORT.to_string())
        .replace("@HTTP@", &HTTP_PORT.to_string())
        .replace("@PAYLOAD@", GUEST_PAYLOAD);
    if p.reset_step {
        s.push_str(GUEST_RESET);
    }
    if p.udp {
        s.push_str(
            &GUEST_UDP
                .replace("@HELPER@", UDP_HELPER)
                .replace("@TXPORT@", &UDP_TX_PORT.to_string())
                .replace("@RXPORT@", &UDP_RX_PORT.to_string())
                .replace("@SIZES@", &UDP_PAYLOADS.map(|n| n.to_string()).join(" "))
                .replace("@SECS@", &UDP_SECS.to_string()),
        );
    }
    s.push_str("marker done 1\n");
    s
}

const GUEST_COMMON: &str = r#"
PEER=@PEER@
CIDR=@CIDR@
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
wait_for() { # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
    n=$1; shift
    while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 1; n=$((n - 1)); done
    return 1
}
gate() { wait_for 600 sh -c "timeout 10 wget -q -O - http://$PEER:@HTTP@/gate/$1 2>/dev/null | grep -q go"; }
has_eth0() { [ -e /sys/class/net/eth0 ]; }
has_carrier() { [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]; }
eth0_up() {
    wait_for 30 has_eth0 || return 1
    ip addr flush dev eth0
    ip addr add "$CIDR" dev eth0 || return 1
    ip link set eth0 up || return 1
    wait_for 30 has_carrier
}
ping_marks() { # ping_marks PREFIX COUNT
    out=$(ping -c "$2" -W 3 "$PEER" 2>&1)
    marker "$1-rc" $?
    marker "$1-summary" "$(echo "$out" | grep 'packets transmitted')"
    marker "$1-rtt" "$(echo "$out" | grep 'min/avg/max')"
}

modprobe virtio_net 2>/dev/null
eth0_up
marker eth0-up $?
marker mac "$(cat /sys/class/net/eth0/address)"
marker mtu "$(cat /sys/class/net/eth0/mtu)"
marker virtio-features "$(cat /sys/class/net/eth0/device/features 2>/dev/null)"
marker net-up 1
ping_marks ping 10
gate pinged || { marker gate pinged-timeout; exit 1; }

marker payload-sha "$(sha256sum @PAYLOAD@ | cut -d' ' -f1)"
t0=$(guest_uptime)
timeout 900 nc "$PEER" @SINK@ < @PAYLOAD@
marker tx-rc $?
t1=$(guest_uptime)
marker tx-secs "$(elapsed "$t0" "$t1")"

t0=$(guest_uptime)
sha=$(timeout 900 wget -q -O - "http://$PEER:@HTTP@/payload" | sha256sum | cut -d' ' -f1)
t1=$(guest_uptime)
marker rx-sha "$sha"
marker rx-secs "$(elapsed "$t0" "$t1")"
marker eth0-stats "$(cat /sys/class/net/eth0/statistics/rx_packets) $(cat /sys/class/net/eth0/statistics/tx_packets) $(cat /sys/class/net/eth0/statistics/rx_errors) $(cat /sys/class/net/eth0/statistics/tx_errors)"
marker eth0-bytes "$(cat /sys/class/net/eth0/statistics/rx_bytes) $(cat /sys/class/net/eth0/statistics/tx_bytes)"
"#;

/// The guest's UDP phase: for each payload size, send for UDP_SECS to the
/// peer's UDP_TX_PORT (the peer counts what arrives), then receive on
/// UDP_RX_PORT while the peer sends for UDP_SECS.
const GUEST_UDP: &str = r#"
gate udp || { marker gate udp-timeout; exit 1; }
cp @HELPER@ /tmp/udpblast && chmod 755 /tmp/udpblast
marker udp-helper $?
for s in @SIZES@; do
    marker udp-tx-start-$s 1
    marker udp-tx-$s "$(/tmp/udpblast send "$PEER" @TXPORT@ "$s" @SECS@)"
done
for s in @SIZES@; do
    rm -f /tmp/udp.ready
    /tmp/udpblast recv @RXPORT@ /tmp/udp.ready > /tmp/udp.out &
    wait_for 10 test -e /tmp/udp.ready
    marker udp-rx-ready-$s 1
    wait
    marker udp-rx-$s "$(cat /tmp/udp.out)"
done
"#;

/// Where the guest finds `udpblast` (tests/net_util/udpblast.c).
pub const UDP_HELPER: &str = "/udpblast";
/// The peer's UDP sink port (guest -> peer).
pub const UDP_TX_PORT: u16 = 5301;
/// The guest's UDP sink port (peer -> guest).
pub const UDP_RX_PORT: u16 = 5302;
/// UDP payloads: 18 B makes a 64-byte Ethernet frame (with its FCS), 1472 B
/// a full 1500-byte IP packet.
pub const UDP_PAYLOADS: [usize; 2] = [18, 1472];
/// Seconds each direction and size is sent for.
pub const UDP_SECS: u64 = 5;

/// `net_util/udpblast.c` built static at `out` (the guest has no libc we
/// could link against), its bytes.
pub fn build_udpblast(out: &Path) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/net_util/udpblast.c");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .expect("run cc (the UDP phase builds its guest helper with `cc -static`)");
    assert!(st.success(), "cc -static {} failed", src.display());
    std::fs::read(out).expect("read the built helper")
}

/// Per UDP payload length: datagrams, first and last arrival.
pub type UdpCounts = std::collections::BTreeMap<usize, (u64, Instant, Instant)>;

/// Counts the datagrams arriving on `addr` (in `ns`) by length until `stop`.
pub fn spawn_udp_counter(ns: Option<&str>, addr: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<UdpCounts> {
    let sock = in_netns(ns, move || UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind UDP {addr}: {e}")));
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("UDP read timeout");
    std::thread::spawn(move || {
        let mut counts = UdpCounts::new();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                let now = Instant::now();
                let e = counts.entry(n).or_insert((0, now, now));
                e.0 += 1;
                e.2 = now;
            }
        }
        counts
    })
}

/// Sends `size`-byte datagrams to `dst` (from `ns`) as fast as send_to takes
/// them for `secs`; the number sent.
pub fn udp_blast(ns: Option<&str>, dst: SocketAddr, size: usize, secs: Duration) -> u64 {
    let sock = in_netns(ns, || UdpSocket::bind("0.0.0.0:0").expect("bind UDP"));
    let data = vec![0x5au8; size];
    let end = Instant::now() + secs;
    let mut sent = 0;
    while Instant::now() < end {
        for _ in 0..64 {
            if sock.send_to(&data, dst).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

const GUEST_RESET: &str = r#"
dev=$(basename "$(readlink /sys/class/net/eth0/device)")
marker virtio-dev "$dev"
gate flood || { marker gate flood-timeout; exit 1; }
sleep 2
marker unbinding 1
echo "$dev" > /sys/bus/virtio/drivers/virtio_net/unbind
marker unbind-rc $?
sleep 2
echo "$dev" > /sys/bus/virtio/drivers/virtio_net/bind
marker bind-rc $?
eth0_up
marker reset-eth0-up $?
ping_ok() { ping -c 1 -W 2 "$PEER" >/dev/null 2>&1; }
wait_for 60 ping_ok
marker reset-first-ping $?
ping_marks reset-ping 5
marker kernel-complaints "$(dmesg | grep -ciE 'call trace|timed out|virtio_net.*(error|bug)')"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(
        expected = "a command on the host's side of the wire hung: [\"sleep\", \"5\"] did not finish in 1 s"
    )]
    fn a_stuck_host_side_command_is_named_as_such() {
        assert!(output_within(&["true"], 1).status.success());
        output_within(&["sleep", "5"], 1);
    }

    #[test]
    fn names_the_acked_virtio_net_features_from_sysfs() {
        // CSUM, GUEST_CSUM, HOST_TSO4, MRG_RXBUF, VERSION_1 (sysfs: bit 0 first).
        let mut bits = vec![b'0'; 64];
        for i in [0, 1, 11, 15, 32] {
            bits[i] = b'1';
        }
        let bits = String::from_utf8(bits).unwrap();
        assert_eq!(virtio_net_feature_names(&bits), ["CSUM", "GUEST_CSUM", "HOST_TSO4", "MRG_RXBUF", "VERSION_1"]);
        assert!(virtio_net_feature_names("").is_empty());
    }

    #[test]
    fn parses_busybox_and_iputils_ping() {
        let bb = "5 packets transmitted, 4 packets received, 20% packet loss\nround-trip min/avg/max = 0.512/1.024/2.048 ms\n";
        let s = parse_ping(bb).unwrap();
        assert_eq!((s.transmitted, s.received), (5, 4));
        assert_eq!(s.rtt, Some((0.512, 1.024, 2.048)));
        let ip = "5 packets transmitted, 5 received, 0% packet loss, time 803ms\nrtt min/avg/max/mdev = 1.1/2.2/3.3/0.4 ms\n";
        let s = parse_ping(ip).unwrap();
        assert_eq!((s.transmitted, s.received), (5, 5));
        assert_eq!(s.rtt, Some((1.1, 2.2, 3.3)));
    }

    #[test]
    fn payload_is_deterministic_and_seeded() {
        assert_eq!(payload(1000, 7), payload(1000, 7));
        assert_ne!(payload(1000, 7), payload(1000, 8));
        assert_eq!(payload(1001, 7).len(), 1001);
    }
}

/// `net_util/rawsend.c`, built static (the guest has no libc we could
/// link against).
pub fn build_rawsend(out: &Path) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/net_util/rawsend.c");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .expect("run cc (the wire-policy test builds its guest helper with `cc -static`)");
    assert!(st.success(), "cc -static {} failed", src.display());
    std::fs::read(out).expect("read the built helper")
}

/// Frames carrying `SHIMVMM-WIRE-<kind>.` seen on the peer's interface
/// `ifname` (in namespace `ns`, promiscuous), by kind, until `stop`.
pub fn spawn_wire_capture(
    ns: String,
    ifname: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, u64>>>,
) -> JoinHandle<()> {
    let tag = b"SHIMVMM-WIRE-";
    spawn_capture(Some(ns), ifname, stop, move |frame| {
        if let Some(at) = frame.windows(tag.len()).position(|w| w == tag) {
            let rest = &frame[at + tag.len()..];
            let end = rest.iter().position(|b| *b == b'.').unwrap_or(rest.len().min(16));
            let kind = String::from_utf8_lossy(&rest[..end]).into_owned();
            *seen.lock().unwrap().entry(kind).or_default() += 1;
        }
    })
}

/// Every frame seen on `ifname` (in netns `ns`, or the caller's own;
/// promiscuous) handed to `on_frame` on a thread of its own, until `stop`.
/// Returns once the socket is bound.
pub fn spawn_capture(
    ns: Option<String>,
    ifname: String,
    stop: Arc<AtomicBool>,
    mut on_frame: impl FnMut(&[u8]) + Send + 'static,
) -> JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        if let Some(ns) = &ns {
            let path = format!("/run/netns/{ns}");
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
            // SAFETY: setns changes only this thread's network namespace; the
            // fd is an open namespace file for the duration of the call.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let cname = std::ffi::CString::new(ifname.clone()).expect("interface name");
        // SAFETY: `cname` is a NUL-terminated string alive for the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert!(ifindex != 0, "no interface {ifname} in netns {ns:?}");
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind to {ifname}: {}", std::io::Error::last_os_error());
        // SAFETY: packet_mreq is plain data; zeroed is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        // SAFETY: `mreq` is a valid packet_mreq of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq as *const libc::packet_mreq as *const libc::c_void,
                std::mem::size_of::<libc::packet_mreq>() as u32,
            )
        };
        assert_eq!(rc, 0, "promiscuous {ifname}: {}", std::io::Error::last_os_error());
        let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
        // SAFETY: `tv` is a valid timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        let _ = ready_tx.send(());
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                on_frame(&buf[..n as usize]);
            }
        }
        // SAFETY: `fd` is ours and closed once.
        unsafe { libc::close(fd) };
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).expect("capture socket ready");
    h
}

/// What one boot measured (printed by the tests).
#[derive(Debug)]
pub struct Report {
    pub guest_ping: Option<PingStats>,
    pub host_ping: PingStats,
    pub tx_secs: f64,
    pub rx_secs: f64,
    /// The virtio-net features the guest's driver acked, by name.
    pub guest_features: Vec<&'static str>,
    /// The guest's eth0 counters after both transfers: frames and bytes
    /// received and sent (virtio_net counts a TSO frame as one).
    pub guest_eth0: GuestEth0,
}

/// The guest's eth0 statistics (`/sys/class/net/eth0/statistics`).
#[derive(Debug, Default, Clone, Copy)]
pub struct GuestEth0 {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl GuestEth0 {
    /// Mean bytes per frame the guest sent: above the MTU only with TSO.
    pub fn tx_mean_frame(&self) -> f64 {
        self.tx_bytes as f64 / self.tx_packets.max(1) as f64
    }

    pub fn rx_mean_frame(&self) -> f64 {
        self.rx_bytes as f64 / self.rx_packets.max(1) as f64
    }
}

/// virtio-net feature bits (virtio 1.2, 5.1.3) by name.
const VIRTIO_NET_FEATURE_NAMES: &[(usize, &str)] = &[
    (0, "CSUM"),
    (1, "GUEST_CSUM"),
    (3, "MTU"),
    (5, "MAC"),
    (7, "GUEST_TSO4"),
    (8, "GUEST_TSO6"),
    (9, "GUEST_ECN"),
    (10, "GUEST_UFO"),
    (11, "HOST_TSO4"),
    (12, "HOST_TSO6"),
    (13, "HOST_ECN"),
    (14, "HOST_UFO"),
    (15, "MRG_RXBUF"),
    (16, "STATUS"),
    (32, "VERSION_1"),
];

/// The names of the bits set in a virtio device's sysfs `features` (one
/// '0'/'1' character per bit, bit 0 first).
pub fn virtio_net_feature_names(bits: &str) -> Vec<&'static str> {
    let b = bits.as_bytes();
    VIRTIO_NET_FEATURE_NAMES.iter().filter(|(i, _)| b.get(*i) == Some(&b'1')).map(|(_, n)| *n).collect()
}

/// Drives the common part of the guest script from the host side and checks it:
/// the guest's ping, the host's ping back, 64 MiB guest->host (sink, sha256 on
/// both ends) and 64 MiB host->guest (HTTP, sha256 on both ends). `label`
/// prefixes the throughput lines. Host-side sockets live in `ns`.
#[allow(clippy::too_many_arguments)] // one call site per backend; a struct would only rename them
pub fn exercise(
    vm: &shimvmm_tests::GuestProcess,
    label: &str,
    ns: Option<&str>,
    guest_ip: &str,
    server: &HttpServer,
    sink: JoinHandle<std::io::Result<Received>>,
    tx_payload_sha: &str,
    rx_payload_sha: &str,
    timeout: Duration,
) -> Report {
    let tail = || vm.tail(60);
    let m = |name: &str| {
        vm.wait_for_marker(name, timeout).unwrap_or_else(|e| panic!("{label}: no marker {name}: {e}")).value
    };
    assert_eq!(m("eth0-up"), "0", "{label}: eth0 did not come up with carrier\n{}", tail());
    m("net-up");
    assert_eq!(m("ping-rc"), "0", "{label}: guest ping of the host failed: {}\n{}", m("ping-summary"), tail());
    let guest_ping = parse_ping(&format!("{}\n{}", m("ping-summary"), m("ping-rtt")));
    // The guest waits at gate "pinged" while the host pings it back.
    if let Err(e) = server.wait_asked("pinged", timeout, vm) {
        panic!("{label}: guest never reached gate pinged: {e}");
    }
    let (host_ping, text) = host_ping(ns, guest_ip, 10);
    assert!(host_ping.received > 0, "{label}: host ping of the guest failed:\n{text}");
    eprintln!(
        "{label}: host->guest ping {}/{} replies, rtt min/avg/max {:?} ms",
        host_ping.received, host_ping.transmitted, host_ping.rtt
    );
    server.open_gate("pinged");

    assert_eq!(m("payload-sha"), tx_payload_sha, "{label}: /payload in the guest is not what the host wrote");
    assert_eq!(m("tx-rc"), "0", "{label}: guest nc failed\n{}", tail());
    let got = sink.join().expect("sink thread").unwrap_or_else(|e| panic!("{label}: sink: {e}\n{}", tail()));
    assert_eq!(got.bytes, PAYLOAD_LEN as u64, "{label}: host received {} of {PAYLOAD_LEN} bytes", got.bytes);
    assert_eq!(got.sha256, tx_payload_sha, "{label}: guest->host payload corrupted");
    let tx_secs: f64 = m("tx-secs").parse().expect("tx-secs");
    let rx_sha = m("rx-sha");
    let rx_secs: f64 = m("rx-secs").parse().expect("rx-secs");
    assert_eq!(rx_sha, rx_payload_sha, "{label}: host->guest payload corrupted (guest sha256)\n{}", tail());
    let guest_features = virtio_net_feature_names(&m("virtio-features"));
    let n: Vec<u64> =
        format!("{} {}", m("eth0-stats"), m("eth0-bytes")).split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let guest_eth0 = match n[..] {
        [rx_packets, tx_packets, _, _, rx_bytes, tx_bytes] => GuestEth0 { rx_packets, tx_packets, rx_bytes, tx_bytes },
        _ => panic!("{label}: eth0 counters not understood: {n:?}"),
    };
    assert_eq!(
        server.served.load(Ordering::Relaxed),
        PAYLOAD_LEN as u64,
        "{label}: HTTP server did not send the payload once"
    );

    let mib = PAYLOAD_LEN >> 20;
    eprintln!(
        "{label}: guest->host {mib} MiB in {tx_secs:.2} s = {:.1} Mbit/s (host sink: {:.2} s from accept to last byte)",
        mbit_per_s(PAYLOAD_LEN as u64, tx_secs),
        got.secs
    );
    eprintln!(
        "{label}: host->guest {mib} MiB in {rx_secs:.2} s = {:.1} Mbit/s",
        mbit_per_s(PAYLOAD_LEN as u64, rx_secs)
    );
    if let Some(g) = &guest_ping {
        eprintln!("{label}: guest->host ping {}/{} replies, rtt min/avg/max {:?} ms", g.received, g.transmitted, g.rtt);
    }
    eprintln!("{label}: the guest's virtio-net features: {}", guest_features.join(" "));
    eprintln!(
        "{label}: guest eth0: sent {} frames, {} bytes ({:.0} B per frame); received {} frames, {} bytes ({:.0} B per frame)",
        guest_eth0.tx_packets,
        guest_eth0.tx_bytes,
        guest_eth0.tx_mean_frame(),
        guest_eth0.rx_packets,
        guest_eth0.rx_bytes,
        guest_eth0.rx_mean_frame()
    );
    Report { guest_ping, host_ping, tx_secs, rx_secs, guest_features, guest_eth0 }
}

/// The net device's counters in the metrics shimvmm wrote at exit: the last
/// line of the file (one Firecracker-format JSON object per line, shimvmm's
/// own counters under "shimvmm").
pub fn net_metrics(path: &Path, id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("no metrics file {}: {e}", path.display()));
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_else(|| panic!("empty metrics file"));
    let v: serde_json::Value = serde_json::from_str(last).expect("metrics lines are JSON");
    v.pointer(&format!("/shimvmm/net/{id}")).cloned().unwrap_or_else(|| panic!("metrics have no net/{id}: {text}"))
}

/// A u64 at a JSON pointer, panicking with the document if absent.
pub fn u64_at(v: &serde_json::Value, ptr: &str) -> u64 {
    v.pointer(ptr).and_then(serde_json::Value::as_u64).unwrap_or_else(|| panic!("no number at {ptr} in {v:#}"))
}
