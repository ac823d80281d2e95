//! A guest's VMM process (shimvmm or QEMU) with its console captured.
//!
//! Reader threads collect stdout and stderr line by line and stamp each line
//! with its arrival time relative to spawn, so tests can both wait for output
//! and measure boot phases. Every wait has a timeout; a process still running
//! when its `GuestProcess` is dropped is killed, so no test leaves a VM behind.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};
use crate::heartbeat::{split_heartbeat, vcpu_state, VcpuState, HEARTBEAT_SILENCE};
use crate::markers::{parse_exit, parse_marker, Marker};

/// How many console lines error messages carry.
pub const TAIL_LINES: usize = 40;
/// How often `exit_status` polls the child.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for the output pipes to drain after the child exited
/// (a grandchild may keep them open).
const DRAIN: Duration = Duration::from_secs(2);
/// A booting guest prints all the time: kernel messages (or, with `quiet`,
/// nothing until its init starts, 10-40 s in the nested testbed), then openrc's.
/// The longest pause seen there in a verbose boot is about 7 s. Silence this long
/// before the guest's first marker or login prompt means it hung, even when a
/// vCPU still takes VM exits (the other one idling on timer ticks while the
/// stuck one holds the console lock, so not even an RCU stall report gets out).
/// After the first marker or prompt a test script may legitimately work quietly.
pub const BOOT_SILENCE: Duration = Duration::from_secs(180);

/// Serialises guest boots within one test binary (libtest runs tests on
/// parallel threads): hold the guard while a VM runs whose timing matters, or
/// just to keep to one VM at a time on a small machine. Not reentrant.
pub fn one_vm_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that panicked while holding it poisoned it; the lock itself is fine.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The child's stdout (the serial console for `-serial stdio`).
    Stdout,
    /// The child's stderr (VMM logs, QEMU errors).
    Stderr,
}

/// One captured line.
#[derive(Clone, Debug)]
pub struct Line {
    /// Stream it came from.
    pub stream: Stream,
    /// Arrival time of its end, relative to spawn.
    pub at: Duration,
    /// Text without the line ending (and without a trailing `\r`).
    pub text: String,
}

#[derive(Default)]
struct State {
    /// Set by the exit watchdog: why the guest counts as hung.
    hung: Option<String>,
    /// The `GuestProcess` is gone: the watchdog stops.
    dropped: bool,
    lines: Vec<Line>,
    /// Unterminated text per stream (e.g. a `login: ` prompt).
    partial: [String; 2],
    /// Streams not yet at end of file.
    open: usize,
    /// Arrival of the last output byte, relative to spawn.
    last_output: Duration,
    /// A marker line or a login prompt arrived: the guest booted.
    booted: bool,
    /// Only this marker (or the exit line) counts as booted ([`GuestProcess::set_booted_by`]).
    booted_by: Option<String>,
    /// See [`BOOT_SILENCE`].
    boot_silence: Option<Duration>,
    /// Arrival of the guest's last heartbeat (crate::heartbeat), if any came.
    last_heartbeat: Option<Duration>,
    /// See [`HEARTBEAT_SILENCE`].
    heartbeat_silence: Option<Duration>,
    /// The exit line came: the heartbeat stops with the script.
    script_ended: bool,
    /// Per stream, the start of a line a heartbeat interrupted.
    carry: [String; 2],
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A reader thread that panicked leaves valid data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A spawned VMM process with captured, timestamped output.
pub struct GuestProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    started: Instant,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl GuestProcess {
    /// Spawns `cmd` with stdin, stdout and stderr piped. `name` prefixes the
    /// echoed console lines (echo goes to the test's stderr, which libtest
    /// captures and shows on failure; set SHIMVMM_TEST_ECHO=0 to silence it).
    pub fn spawn(name: &str, mut cmd: Command) -> Result<GuestProcess> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child =
            cmd.spawn().map_err(|e| HarnessError::Setup(format!("cannot spawn {:?}: {e}", cmd.get_program())))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                open: 2,
                boot_silence: Some(BOOT_SILENCE),
                heartbeat_silence: Some(HEARTBEAT_SILENCE),
                ..State::default()
            }),
            cond: Condvar::new(),
        });
        let echo = std::env::var("SHIMVMM_TEST_ECHO").map_or(true, |v| v != "0");
        let mut readers = Vec::new();
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        for (stream, pipe) in [(Stream::Stdout, stdout), (Stream::Stderr, stderr)] {
            let Some(pipe) = pipe else {
                shared.lock().open -= 1;
                continue;
            };
            let shared = Arc::clone(&shared);
            let prefix = if echo { Some(name.to_string()) } else { None };
            readers.push(std::thread::spawn(move || read_lines(pipe, stream, started, &shared, prefix)));
        }
        if std::path::Path::new(KVM_DEBUGFS).is_dir() {
            let shared = Arc::clone(&shared);
            let pid = child.id();
            std::thread::spawn(move || watch_vm_exits(&shared, NO_EXITS_HANG, WATCH_EVERY, || vm_exits(pid)));
        }
        let stdin = child.stdin.take();
        Ok(GuestProcess { name: name.to_string(), child, stdin, started, shared, readers, status: None })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time since spawn.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Writes to the child's stdin (the guest's serial input with `-serial stdio`).
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| HarnessError::Setup("stdin already closed".into()))?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Changes how long a booting guest may stay silent ([`BOOT_SILENCE`]); None: forever.
    pub fn set_boot_silence(&self, limit: Option<Duration>) {
        self.shared.lock().boot_silence = limit;
        self.shared.cond.notify_all();
    }

    /// Changes how long the guest's heartbeat may be missing
    /// ([`HEARTBEAT_SILENCE`]); None: forever (a test that pauses the VM).
    pub fn set_heartbeat_silence(&self, limit: Option<Duration>) {
        self.shared.lock().heartbeat_silence = limit;
        self.shared.cond.notify_all();
    }

    /// Whose guest script prints marker `name` right after it starts, with
    /// nothing to wait for in between: silence before that marker is a hang
    /// too ([`BOOT_SILENCE`]), not only silence before the first marker or
    /// prompt. A guest whose console stopped in the middle of openrc's
    /// parallel output (a vCPU stuck holding the console lock while the other
    /// idles) is then called hung, not left to the caller's timeout.
    pub fn set_booted_by(&self, name: &str) {
        let mut state = self.shared.lock();
        state.booted_by = Some(name.to_string());
        state.booted = state.lines.iter().any(|l| booting_ends(state.booted_by.as_deref(), &l.text));
        self.shared.cond.notify_all();
    }

    /// A snapshot of all complete lines so far.
    pub fn lines(&self) -> Vec<Line> {
        self.shared.lock().lines.clone()
    }

    /// The last `n` lines (complete, then any unterminated text), one per line.
    pub fn tail(&self, n: usize) -> String {
        tail_of(&self.shared.lock(), n)
    }

    /// Waits until a line (or the unterminated text) contains `pattern`,
    /// searching all output since spawn; returns when it arrived.
    pub fn wait_for_line(&self, pattern: &str, timeout: Duration) -> Result<Duration> {
        self.wait_for(&format!("{pattern:?}"), timeout, |line| line.contains(pattern))
    }

    /// Waits until a line satisfies `pred`; `what` names it in errors.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<Duration> {
        self.wait_map(what, timeout, true, |line| pred(&line.text).then_some(line.at))
    }

    /// Waits until `marker <name> ...` arrives; returns the first such marker.
    pub fn wait_for_marker(&self, name: &str, timeout: Duration) -> Result<Marker> {
        self.wait_map(&format!("marker {name:?}"), timeout, false, |line| {
            let (n, value) = parse_marker(&line.text)?;
            (n == name).then_some(Marker { name: n, value, at: line.at })
        })
    }

    /// `Ok` while the guest can still make progress; otherwise the error a
    /// wait for `what` would have ended with (the VMM exited, or the guest
    /// hung, stalled or stopped). For waits on something other than the
    /// console (a guest's HTTP request), so that a guest lost to a triple
    /// fault ends them at once instead of at their timeout.
    pub fn check_running(&self, what: &str) -> Result<()> {
        match self.wait_map(what, Duration::ZERO, false, |_| None::<()>) {
            Ok(()) | Err(HarnessError::Timeout { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits for the guest runner's `SHIMVMM-EXIT <status>` line; returns the
    /// test script's exit status.
    pub fn wait_for_guest_exit(&self, timeout: Duration) -> Result<i32> {
        self.wait_map("the guest test script's SHIMVMM-EXIT line", timeout, false, |line| parse_exit(&line.text))
    }

    /// All markers so far, in arrival order.
    pub fn markers(&self) -> Vec<Marker> {
        let state = self.shared.lock();
        state
            .lines
            .iter()
            .filter_map(|l| parse_marker(&l.text).map(|(name, value)| Marker { name, value, at: l.at }))
            .collect()
    }

    /// The first marker named `name` so far.
    pub fn marker(&self, name: &str) -> Option<Marker> {
        self.markers().into_iter().find(|m| m.name == name)
    }

    /// The test script's exit status if its `SHIMVMM-EXIT` line has arrived.
    pub fn guest_exit(&self) -> Option<i32> {
        self.shared.lock().lines.iter().find_map(|l| parse_exit(&l.text))
    }

    /// Waits for the process to exit. On timeout it is killed and an error
    /// with the console tail is returned; this never hangs.
    pub fn exit_status(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.status = Some(status);
                self.drain();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(HarnessError::Timeout {
                    what: format!("{} to exit (killed it)", self.name),
                    after: timeout,
                    tail: self.tail(TAIL_LINES),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills the process (if still running) and reaps it.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // Errors mean it already exited; wait() below reaps either way.
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.status = Some(status);
            }
            self.drain();
        }
    }

    /// Waits (bounded) for the readers to reach end of file.
    fn drain(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + DRAIN;
        let mut state = self.shared.lock();
        while state.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state = self.shared.cond.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        drop(state);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// The error for a guest whose heartbeat stopped `silent` seconds ago:
    /// a stall if its vCPU threads are all in the guest, else the VMM's fault.
    fn heartbeat_stopped(&self, what: &str, silent: u64) -> HarnessError {
        let proc_root = std::path::Path::new("/proc");
        match vcpu_state(proc_root, self.child.id(), 10, Duration::from_millis(200)) {
            VcpuState::AllInGuest(n) => self.guest_stopped(
                what,
                format!("the guest kernel stopped: no heartbeat for {silent} s while all {n} vCPU threads were in the guest (KVM_RUN, or guest time growing)"),
            ),
            VcpuState::Unknown(why) => {
                self.guest_stopped(what, format!("the guest kernel stopped: no heartbeat for {silent} s ({why})"))
            }
            VcpuState::Outside(threads) => {
                let threads: Vec<String> =
                    threads.iter().map(|(name, syscall)| format!("'{name}' (/proc syscall: {syscall})")).collect();
                HarnessError::VmmStuck {
                    what: what.to_string(),
                    why: format!(
                        "no guest heartbeat for {silent} s, and vCPU thread {} stayed in the VMM for 2 s (blocked outside KVM_RUN, or running in user space with no guest time)",
                        threads.join(", ")
                    ),
                    tail: self.tail(TAIL_LINES),
                }
            }
        }
    }

    /// The error for a wait the guest can no longer satisfy (`why`: RCU stall, soft lockup or hang).
    fn guest_stopped(&self, what: &str, why: String) -> HarnessError {
        HarnessError::GuestStalled { what: what.to_string(), line: why, tail: self.tail(TAIL_LINES) }
    }

    /// Scans all lines (old and new, plus unterminated text if `partial`) with
    /// `f` until it yields a value, the timeout passes, or the output closes.
    /// Markers are matched on complete lines only: a half-received line
    /// would yield a truncated value.
    fn wait_map<T>(&self, what: &str, timeout: Duration, partial: bool, f: impl Fn(&Line) -> Option<T>) -> Result<T> {
        let (deadline, cut) = job_capped(Instant::now() + timeout);
        let mut scanned = 0;
        let mut state = self.shared.lock();
        loop {
            if let Some(why) = state.hung.clone() {
                drop(state);
                return Err(self.guest_stopped(what, why));
            }
            while scanned < state.lines.len() {
                let line = &state.lines[scanned];
                if let Some(v) = f(line) {
                    return Ok(v);
                }
                if is_stall_report(&line.text) {
                    let why = format!("the guest kernel reported a stuck CPU: {}", line.text);
                    drop(state);
                    return Err(self.guest_stopped(what, why));
                }
                scanned += 1;
            }
            for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
                if !partial || state.partial[i].is_empty() {
                    continue;
                }
                let line = Line { stream, at: self.started.elapsed(), text: state.partial[i].clone() };
                if let Some(v) = f(&line) {
                    return Ok(v);
                }
            }
            let silent_until = match state.boot_silence {
                Some(limit) if !state.booted && state.open > 0 => {
                    let since = self.started + state.last_output;
                    if since.elapsed() >= limit {
                        let awaited = match &state.booted_by {
                            Some(name) => format!("no marker {name} yet"),
                            None => "no marker or login prompt yet".to_string(),
                        };
                        let why = format!(
                            "the guest hung while booting: no console output for {} s, and {awaited}",
                            since.elapsed().as_secs()
                        );
                        drop(state);
                        return Err(self.guest_stopped(what, why));
                    }
                    Some(since + limit)
                }
                _ => None,
            };
            let beat_until = match (state.last_heartbeat, state.heartbeat_silence) {
                (Some(last), Some(limit)) if !state.script_ended && state.open > 0 => {
                    let since = self.started + last;
                    if since.elapsed() >= limit {
                        let silent = since.elapsed().as_secs();
                        drop(state);
                        return Err(self.heartbeat_stopped(what, silent));
                    }
                    Some(since + limit)
                }
                _ => None,
            };
            if state.open == 0 {
                drop(state);
                return Err(HarnessError::Exited {
                    what: what.to_string(),
                    status: self.status,
                    tail: self.tail(TAIL_LINES),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(state);
                let what = if cut {
                    format!("{what} (cut short: the guest-test job's time ran out)")
                } else {
                    what.to_string()
                };
                return Err(HarnessError::Timeout { what, after: timeout, tail: self.tail(TAIL_LINES) });
            }
            let wake = [silent_until, beat_until].into_iter().flatten().fold(deadline, Instant::min);
            state = self
                .shared
                .cond
                .wait_timeout(state, wake.saturating_duration_since(now))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Where the host kernel keeps KVM's per-VM counters (debugfs; mounted in the
/// testbed's L1): `<pid>-<vm fd>/exits` counts every VM exit of that VM,
/// `irq_exits` the ones a host interrupt caused.
const KVM_DEBUGFS: &str = "/sys/kernel/debug/kvm";
/// A live guest causes VM exits many times a second (its timer ticks end in MSR
/// writes or halts, plus I/O); none for this long means every vCPU is halted with
/// no interrupt to come, or spinning with interrupts off: a hang no wait can
/// outlast. Exits caused by host interrupts do not count: they keep coming while
/// a vCPU spins (the testbed's stuck guests spin in a paravirtual spinlock; see
/// docs/testbed.md), and say nothing about the guest.
const NO_EXITS_HANG: Duration = Duration::from_secs(60);
/// How often the watchdog reads the counters.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// VM exits the guest itself caused so far (all exits minus those of host
/// interrupts) in the VMs process `pid` created, from KVM's debugfs under
/// `root`; None if it has no VM (yet).
fn guest_exits_in(root: &std::path::Path, pid: u32) -> Option<u64> {
    let prefix = format!("{pid}-");
    let read = |dir: &std::path::Path, name: &str| {
        std::fs::read_to_string(dir.join(name)).ok().and_then(|t| t.trim().parse::<u64>().ok())
    };
    let mut total = None;
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let dir = entry.path();
        let Some(exits) = read(&dir, "exits") else {
            continue;
        };
        let host_irq = read(&dir, "irq_exits").unwrap_or(0);
        *total.get_or_insert(0) += exits.saturating_sub(host_irq);
    }
    total
}

fn vm_exits(pid: u32) -> Option<u64> {
    guest_exits_in(std::path::Path::new(KVM_DEBUGFS), pid)
}

/// Marks the guest hung (and wakes every waiter) once its VM exit count has not
/// moved for `limit`. Ends when the process's output closes or it is dropped.
fn watch_vm_exits(shared: &Shared, limit: Duration, every: Duration, exits_now: impl Fn() -> Option<u64>) {
    let mut last: Option<(u64, Instant)> = None;
    loop {
        std::thread::sleep(every);
        {
            let state = shared.lock();
            if state.dropped || state.open == 0 {
                return;
            }
        }
        let Some(exits) = exits_now() else {
            last = None;
            continue;
        };
        match last {
            Some((before, since)) if before == exits => {
                if since.elapsed() >= limit {
                    let mut state = shared.lock();
                    state.hung = Some(format!(
                        "the guest hung: no VM exits for {} s other than host interrupts' (KVM's count of the rest stayed at {exits})",
                        since.elapsed().as_secs()
                    ));
                    shared.cond.notify_all();
                    return;
                }
            }
            _ => last = Some((exits, Instant::now())),
        }
    }
}

/// Whether console line `text` ends the boot: any marker, the exit line or a
/// login prompt, or only marker `by` and the exit line when given.
fn booting_ends(by: Option<&str>, text: &str) -> bool {
    match by {
        None => parse_marker(text).is_some() || parse_exit(text).is_some() || text.contains("login:"),
        Some(name) => parse_marker(text).is_some_and(|(n, _)| n == name) || parse_exit(text).is_some(),
    }
}

/// The kernel's reports of a stuck CPU, possibly after a timestamp: an RCU
/// stall ("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks", "...
/// self-detected stall on CPU") or the soft-lockup watchdog ("watchdog: BUG:
/// soft lockup - CPU#0 stuck for 105s!", seen when a CPU waits forever for
/// another to answer an IPI).
fn is_stall_report(text: &str) -> bool {
    text.find("rcu: INFO: ").is_some_and(|i| text[i..].contains("stall")) || text.contains("watchdog: BUG: soft lockup")
}

impl Drop for GuestProcess {
    fn drop(&mut self) {
        self.shared.lock().dropped = true;
        self.kill();
    }
}

fn tail_of(state: &State, n: usize) -> String {
    let mut out: Vec<String> = state.lines.iter().rev().take(n).rev().map(|l| l.text.clone()).collect();
    out.extend(state.partial.iter().filter(|p| !p.is_empty()).cloned());
    out.join("\n")
}

/// Reader thread body: splits `pipe` into lines and publishes them.
fn read_lines(mut pipe: Box<dyn Read + Send>, stream: Stream, started: Instant, shared: &Shared, echo: Option<String>) {
    let idx = stream as usize;
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let at = started.elapsed();
        pending.extend_from_slice(&buf[..n]);
        let mut state = shared.lock();
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=pos).collect();
            let mut text = clean(&raw[..raw.len() - 1]);
            if let Some(before) = split_heartbeat(&text) {
                if let (Some(prefix), None) = (&echo, state.last_heartbeat) {
                    eprintln!(
                        "[{prefix} {:>8.3}] (the guest's heartbeat started; its lines are not shown)",
                        at.as_secs_f64()
                    );
                }
                state.last_heartbeat = Some(at);
                state.carry[idx].push_str(before);
                continue;
            }
            if !state.carry[idx].is_empty() {
                text = std::mem::take(&mut state.carry[idx]) + &text;
            }
            state.script_ended |= parse_exit(&text).is_some();
            if let Some(prefix) = &echo {
                eprintln!("[{prefix} {:>8.3}] {text}", at.as_secs_f64());
            }
            state.booted |= booting_ends(state.booted_by.as_deref(), &text);
            state.lines.push(Line { stream, at, text });
        }
        state.partial[idx] = clean(&pending);
        state.last_output = at;
        state.booted |= state.booted_by.is_none() && state.partial[idx].contains("login:");
        shared.cond.notify_all();
    }
    let mut state = shared.lock();
    if !pending.is_empty() {
        let text = clean(&pending);
        state.lines.push(Line { stream, at: started.elapsed(), text });
    }
    state.partial[idx].clear();
    state.open -= 1;
    shared.cond.notify_all();
}

/// Bytes to text: lossy UTF-8, without trailing `\r`.
fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end_matches('\r').to_string()
}

/// `deadline`, or the guest-test job's own end if sooner (devtool sets
/// SHIMVMM_JOB_DEADLINE, in Unix seconds, to leave the test time to report):
/// and whether that cut it short.
fn job_capped(deadline: Instant) -> (Instant, bool) {
    let job_end = std::env::var("SHIMVMM_JOB_DEADLINE").ok().and_then(|v| v.trim().parse::<u64>().ok());
    let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    cap_at_job_end(deadline, job_end, now_unix)
}

fn cap_at_job_end(deadline: Instant, job_end: Option<u64>, now_unix: u64) -> (Instant, bool) {
    let Some(job_end) = job_end else {
        return (deadline, false);
    };
    let job_deadline = Instant::now() + Duration::from_secs(job_end.saturating_sub(now_unix));
    if job_deadline < deadline {
        (job_deadline, true)
    } else {
        (deadline, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> GuestProcess {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        GuestProcess::spawn("sh", cmd).expect("spawn /bin/sh")
    }

    #[test]
    fn waits_for_lines_and_timestamps_them() {
        let mut p =
            sh("echo first; sleep 0.3; printf 'SHIMVMM-MARKER ready 1\\r\\n'; echo oops >&2; echo 'SHIMVMM-EXIT 5'");
        let first = p.wait_for_line("first", Duration::from_secs(10)).unwrap();
        let ready = p.wait_for_marker("ready", Duration::from_secs(10)).unwrap();
        assert_eq!(ready.value, "1");
        assert!(ready.at >= first + Duration::from_millis(250), "{first:?} {:?}", ready.at);
        assert_eq!(p.wait_for_guest_exit(Duration::from_secs(10)).unwrap(), 5);
        assert!(p.exit_status(Duration::from_secs(10)).unwrap().success());
        assert!(p.lines().iter().any(|l| l.stream == Stream::Stderr && l.text == "oops"));
        assert_eq!(p.markers().len(), 1);
        assert_eq!(p.guest_exit(), Some(5));
    }

    #[test]
    fn a_booting_guest_that_falls_silent_is_called_hung() {
        let p = sh("echo '[ 12.0] Serial: 8250/16550 driver, 4 ports'; exec sleep 30");
        p.set_boot_silence(Some(Duration::from_millis(500)));
        let start = Instant::now();
        let err = p.wait_for_line("login:", Duration::from_secs(20)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        assert!(matches!(err, HarnessError::GuestStalled { .. }), "{err}");
        assert!(err.to_string().contains("no console output"), "{err}");
    }

    #[test]
    fn silence_after_a_marker_or_prompt_is_not_a_hang() {
        for script in
            ["printf 'SHIMVMM-MARKER script-start 1\\n'; exec sleep 30", "printf 'localhost login: '; exec sleep 30"]
        {
            let p = sh(script);
            p.set_boot_silence(Some(Duration::from_millis(300)));
            std::thread::sleep(Duration::from_millis(500));
            let err = p.wait_for_line("never printed", Duration::from_secs(1)).unwrap_err();
            assert!(matches!(err, HarnessError::Timeout { .. }), "{script}: {err}");
        }
    }

    #[test]
    fn silence_before_the_named_marker_is_a_hang() {
        // The QEMU reference guest of the 8ccee5d CI: the script's first marker,
        // then openrc's output stopped in the middle of a line.
        let p = sh("printf 'SHIMVMM-MARKER script-start 18.99\\nsetup-d'; exec sleep 30");
        p.set_boot_silence(Some(Duration::from_millis(300)));
        p.set_booted_by("boot-probe");
        let start = Instant::now();
        let err = p.wait_for_marker("boot-probe", Duration::from_secs(20)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        assert!(matches!(err, HarnessError::GuestStalled { .. }), "{err}");
        // Once the named marker came, silence is the script's business.
        let p = sh("printf 'SHIMVMM-MARKER boot-probe 1\\n'; exec sleep 30");
        p.set_boot_silence(Some(Duration::from_millis(300)));
        p.wait_for_marker("boot-probe", Duration::from_secs(10)).unwrap();
        p.set_booted_by("boot-probe");
        std::thread::sleep(Duration::from_millis(500));
        let err = p.wait_for_line("never printed", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, HarnessError::Timeout { .. }), "{err}");
    }

    #[test]
    fn heartbeats_are_not_lines_and_a_line_they_split_is_joined() {
        let p = sh("printf '[ 1.0] SHIMVMM-HEARTBEAT\\nSHIMVMM-MARKER ping-sum[ 2.5] SHIMVMM-HEARTBEAT\\nmary 10 packets\\n'; \
                    echo 'SHIMVMM-EXIT 0'; exec sleep 30");
        assert_eq!(p.wait_for_marker("ping-summary", Duration::from_secs(10)).unwrap().value, "10 packets");
        p.wait_for_guest_exit(Duration::from_secs(10)).unwrap();
        assert!(p.lines().iter().all(|l| !l.text.contains("HEARTBEAT")), "{}", p.tail(10));
        assert!(p.shared.lock().last_heartbeat.is_some());
    }

    #[test]
    fn a_missing_heartbeat_is_a_stall_until_the_script_ends() {
        let p = sh("echo 'SHIMVMM-MARKER script-start 1'; echo '[ 11.0] SHIMVMM-HEARTBEAT'; exec sleep 30");
        p.set_heartbeat_silence(Some(Duration::from_millis(300)));
        let start = Instant::now();
        let err = p.wait_for_marker("never", Duration::from_secs(30)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        // /bin/sh has no vCPU threads: the harness cannot blame the VMM.
        assert!(matches!(err, HarnessError::GuestStalled { .. }), "{err}");
        assert!(err.to_string().contains("no heartbeat for"), "{err}");
        // After the exit line the heartbeat has stopped on purpose.
        let p = sh("echo '[ 11.0] SHIMVMM-HEARTBEAT'; echo 'SHIMVMM-EXIT 0'; exec sleep 30");
        p.set_heartbeat_silence(Some(Duration::from_millis(300)));
        p.wait_for_guest_exit(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let err = p.wait_for_line("never printed", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, HarnessError::Timeout { .. }), "{err}");
    }

    #[test]
    fn waits_end_before_the_guest_test_job_does() {
        let far = Instant::now() + Duration::from_secs(1000);
        assert_eq!(cap_at_job_end(far, None, 5000), (far, false));
        let (d, cut) = cap_at_job_end(far, Some(5100), 5000);
        assert!(cut && d < far && d > Instant::now() + Duration::from_secs(90), "{d:?}");
        assert_eq!(cap_at_job_end(far, Some(9000), 5000), (far, false));
        let (d, cut) = cap_at_job_end(far, Some(4000), 5000);
        assert!(cut && d <= Instant::now());
    }

    #[test]
    fn exit_status_times_out_kills_and_reports_tail() {
        let mut p = sh("for i in $(seq 1 50); do echo line$i; done; exec sleep 30");
        p.wait_for_line("line50", Duration::from_secs(10)).unwrap();
        let start = Instant::now();
        let err = p.exit_status(Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        let msg = err.to_string();
        assert!(msg.contains("timed out"), "{msg}");
        assert!(msg.contains("line50") && msg.contains("line11") && !msg.contains("line10\n"), "{msg}");
        assert!(p.exit_status(Duration::from_secs(1)).is_ok(), "killed process must be reaped");
    }

    #[test]
    fn check_running_holds_while_the_process_lives_and_fails_once_it_exits() {
        let p = sh("echo up; exec sleep 30");
        p.wait_for_line("up", Duration::from_secs(10)).unwrap();
        p.check_running("a gate").expect("a live process is running");
        let gone = sh("echo bye");
        gone.wait_for_line("bye", Duration::from_secs(10)).unwrap();
        let start = Instant::now();
        let err = loop {
            match gone.check_running("a gate") {
                Ok(()) if start.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(20)),
                r => break r.expect_err("an exited process still counts as running"),
            }
        };
        assert!(matches!(err, HarnessError::Exited { .. }), "{err}");
        assert!(err.to_string().contains("before a gate") && err.to_string().contains("bye"), "{err}");
    }

    #[test]
    fn wait_fails_fast_when_output_closes() {
        let p = sh("echo only");
        let start = Instant::now();
        let err = p.wait_for_line("never", Duration::from_secs(30)).unwrap_err();
        assert!(matches!(err, HarnessError::Exited { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(err.to_string().contains("only"));
    }

    #[test]
    fn matches_unterminated_prompt() {
        let p = sh("printf 'localhost login: '; sleep 5");
        p.wait_for_line("login:", Duration::from_secs(4)).unwrap();
    }

    #[test]
    fn wait_for_line_times_out() {
        let p = sh("sleep 5");
        let err = p.wait_for_line("x", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, HarnessError::Timeout { .. }), "{err}");
    }

    #[test]
    fn an_rcu_stall_fails_the_wait_at_once() {
        let p = sh("echo '[   74.780600] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:'; sleep 30");
        let start = Instant::now();
        let err = p.wait_for_line("login:", Duration::from_secs(20)).unwrap_err();
        assert!(matches!(err, HarnessError::GuestStalled { .. }), "{err}");
        assert!(err.to_string().contains("the guest stopped while we waited"), "{err}");
        assert!(err.to_string().contains("reported a stuck CPU"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    fn watched(counts: impl Fn(u32) -> Option<u64> + Send + 'static) -> Arc<Shared> {
        let shared =
            Arc::new(Shared { state: Mutex::new(State { open: 1, ..State::default() }), cond: Condvar::new() });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            let calls = std::sync::atomic::AtomicU32::new(0);
            watch_vm_exits(&s, Duration::from_millis(300), Duration::from_millis(20), || {
                counts(calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
            })
        });
        shared
    }

    #[test]
    fn a_guest_without_vm_exits_is_called_hung() {
        let shared = watched(|_| Some(1234));
        std::thread::sleep(Duration::from_millis(1000));
        let hung = shared.lock().hung.clone().expect("watchdog did not fire");
        assert!(hung.contains("no VM exits") && hung.contains("1234"), "{hung}");
    }

    #[test]
    fn exits_of_host_interrupts_do_not_count_as_guest_activity() {
        let root = std::env::temp_dir().join(format!("kvm-debugfs-{}", std::process::id()));
        let vm = |name: &str, exits: &str, irq: Option<&str>| {
            let d = root.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("exits"), exits).unwrap();
            if let Some(irq) = irq {
                std::fs::write(d.join("irq_exits"), irq).unwrap();
            }
        };
        vm("4242-11", "1000\n", Some("900\n"));
        vm("4242-12", "50\n", None);
        vm("42420-11", "7777\n", Some("0\n"));
        assert_eq!(guest_exits_in(&root, 4242), Some(100 + 50));
        assert_eq!(guest_exits_in(&root, 4243), None);
        // A spinning vCPU: only host-interrupt exits move, so the count stays.
        vm("4242-11", "5000\n", Some("4900\n"));
        assert_eq!(guest_exits_in(&root, 4242), Some(150));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_guest_with_moving_exits_or_no_vm_yet_is_not_hung() {
        let moving = watched(|n| Some(u64::from(n)));
        let no_vm = watched(|_| None);
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(moving.lock().hung, None);
        assert_eq!(no_vm.lock().hung, None);
        moving.lock().dropped = true;
        no_vm.lock().dropped = true;
    }

    #[test]
    fn stall_and_soft_lockup_lines_are_recognised() {
        assert!(is_stall_report("[ 74.7] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"));
        assert!(is_stall_report("rcu: INFO: rcu_sched self-detected stall on CPU"));
        assert!(is_stall_report("[  119.421582] watchdog: BUG: soft lockup - CPU#0 stuck for 105s! [swapper/0:1]"));
        assert!(!is_stall_report("rcu: Preemptible hierarchical RCU implementation."));
        assert!(!is_stall_report("rcu: INFO: something else"));
        assert!(!is_stall_report("[    0.1] NMI watchdog: Perf NMI watchdog permanently disabled"));
    }
}
