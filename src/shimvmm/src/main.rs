//! shimvmm: boots a Linux guest with KVM from the command line (`--kernel`), a
//! config file (`--config-file`) or the REST API (`--api-sock`).

mod cli;
mod controller;
mod logger;
mod metrics;
mod terminal;

use std::process::ExitCode;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use api::{ControllerError, VmmController};
use clap::Parser;
use controller::{Controller, StartRequest};
use vmm::seccomp::ThreadKind;

/// Exit status for bad input or a VM that could not be built.
const EXIT_CONFIG_ERROR: u8 = 1;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("shimvmm: error: {msg}");
    ExitCode::from(EXIT_CONFIG_ERROR)
}

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if args.version {
        print!("{}", cli::version_text());
        return ExitCode::SUCCESS;
    }
    // Before any thread exists, so every thread inherits the mask.
    if let Err(e) = vmm::signals::block_stop_signals() {
        return fail(format!("cannot block SIGINT/SIGTERM: {e}"));
    }
    let id = match args.instance_id() {
        Ok(id) => id,
        Err(e) => return fail(e),
    };
    logger::init(&id, args.log_filter());
    if let Some(l) = args.logger() {
        if let Err(e) = logger::configure(&l) {
            return fail(format!("--log-path: {e}"));
        }
    }
    log::info!("Running shimvmm {} (Firecracker v{} API)", api::VMM_VERSION, api::FIRECRACKER_API_VERSION);
    // Before any other thread exists: every thread inherits the boot filter
    // and narrows it to its role (docs/security.md).
    vmm::seccomp::set_enabled(!args.no_seccomp);
    if let Err(e) = vmm::seccomp::install_sigsys_handler().and_then(|()| vmm::seccomp::install(ThreadKind::Boot)) {
        return fail(e);
    }
    if let Some(kind) = args.seccomp_self_test {
        return seccomp_self_test(kind);
    }

    if let Err(e) = args.check_unsupported() {
        return fail(e);
    }
    if args.enable_pci {
        log::warn!("--enable-pci: shimvmm has no virtio-pci transport; the devices stay on virtio-mmio");
    }
    // One metadata store for the API and the VM's interfaces.
    let mmds_store = match args.mmds_store() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let build_opts = args.build_options(&mmds_store);
    if args.kernel.is_some() && args.config_file.is_some() {
        return fail("--kernel and --config-file both describe the VM: give one");
    }
    // The VM described up front, if any: the same VmSpec the API makes.
    let boot_spec = if let Some(kernel) = args.kernel.clone() {
        match args.vm_spec(kernel) {
            Ok(s) => Some(s),
            Err(e) => return fail(e),
        }
    } else if let Some(file) = &args.config_file {
        match vmm::VmSpec::from_config_file(file) {
            Ok(s) => match args.with_metrics_path(s) {
                Ok(s) => Some(s),
                Err(e) => return fail(e),
            },
            Err(e) => return fail(e),
        }
    } else {
        None
    };

    let (ctl, start_rx) = Controller::new();
    let ctl = Arc::new(ctl);
    // The config file's logger, then the metrics file, as Firecracker sets
    // them up: before the VM is built.
    if let Some(l) = boot_spec.as_ref().and_then(|s| s.logger.as_ref()) {
        if let Err(e) = ctl.configure_logger(l) {
            return fail(format!("logger: {e}"));
        }
    }
    let metrics = match &boot_spec {
        Some(spec) => spec.metrics.clone(),
        None => args.metrics_path.clone().map(|metrics_path| api::Metrics { metrics_path }),
    };
    if let Some(m) = &metrics {
        if let Err(e) = ctl.configure_metrics(m) {
            return fail(format!("metrics: {e}"));
        }
    }
    ctl.spawn_periodic_metrics();
    // A VM described up front is built before the API serves: the API is told
    // it already started, so `GET /` must never see it "Not started".
    let prebuilt = match &boot_spec {
        Some(spec) => {
            match controller::vmm_spec(spec).and_then(|s| vmm::build_with(&s, &build_opts).map_err(|e| e.to_string())) {
                Ok(vm) => {
                    ctl.set_running(vm.handle());
                    Some(vm)
                }
                Err(e) => return fail(e),
            }
        }
        None => None,
    };
    let api_server = match args.api_socket() {
        Some(sock) => {
            let initial_config = match &boot_spec {
                Some(spec) => api::VmConfig::from(spec.clone()),
                None => api::VmConfig { metrics, logger: args.logger(), ..Default::default() },
            };
            let defaults = api::ServeOptions::default();
            let opts = api::ServeOptions {
                initial_config,
                already_started: boot_spec.is_some(),
                max_body_bytes: args.http_api_max_payload_size.unwrap_or(defaults.max_body_bytes),
                thread_init: Some(api::ThreadInit(Arc::new(|| {
                    vmm::seccomp::install(ThreadKind::Api).map_err(|e| e.to_string())
                }))),
                mmds: Some(mmds_store.clone()),
                ..defaults
            };
            match api::serve_with(&sock, ctl.clone(), id.clone(), opts) {
                Ok(h) => Some(h),
                Err(e) => return fail(e),
            }
        }
        None => None,
    };

    let vm = match prebuilt {
        Some(vm) => vm,
        None if api_server.is_some() => match wait_for_start(&start_rx, &build_opts, &ctl) {
            Some(vm) => vm,
            None => return ExitCode::SUCCESS,
        },
        None => return fail("nothing to boot: give --kernel PATH, --config-file FILE or --api-sock PATH"),
    };
    terminal::enter_raw_mode();
    let reason = vm.run();
    terminal::restore();
    // The exit-time metrics line, while the controller still holds the VM.
    if let Err(e) = ctl.write_metrics() {
        log::error!("{e}");
    }
    // The API first: no handler may hold the last reference to a device. At
    // halt the controller lets go of the VM, so the devices are dropped on
    // this thread, under the VMM filter.
    if let Some(h) = api_server {
        h.shutdown();
    }
    ctl.set_halted();
    match &reason {
        vmm::ExitReason::VcpuError(m) => eprintln!("shimvmm: guest stopped: {m}"),
        vmm::ExitReason::VmmError(m) => eprintln!("shimvmm: error: {m}"),
        r => log::info!("exiting: {r:?}"),
    }
    ExitCode::from(reason.exit_code() as u8)
}

/// `--seccomp-self-test KIND`: a thread with KIND's filter makes a syscall
/// no filter allows. With filters on, the SIGSYS handler names it and the
/// process exits [`vmm::seccomp::EXIT_SECCOMP_VIOLATION`]; getting past it
/// is reported as a failure.
fn seccomp_self_test(kind: ThreadKind) -> ExitCode {
    let t = std::thread::Builder::new().name(format!("selftest-{}", kind.name())).spawn(move || {
        if kind != ThreadKind::Boot {
            vmm::seccomp::install(kind).map_err(|e| e.to_string())?;
        }
        // SAFETY: getppid(2) takes no arguments and cannot fail.
        let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
        Ok::<i64, String>(ppid)
    });
    match t.map_err(|e| e.to_string()).and_then(|t| t.join().map_err(|_| "the test thread panicked".to_string())) {
        Ok(Ok(_)) => {
            eprintln!("shimvmm: seccomp self-test: the {} thread called getppid and was not stopped", kind.name());
            ExitCode::from(EXIT_CONFIG_ERROR)
        }
        Ok(Err(e)) | Err(e) => fail(e),
    }
}

/// True when SIGINT or SIGTERM is pending (they are blocked in every thread).
fn stop_signal_pending() -> bool {
    // SAFETY: sigpending fills the set we own; sigismember only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGINT) == 1 || libc::sigismember(&set, libc::SIGTERM) == 1
    }
}

/// Serves InstanceStart requests until one builds a VM; `None` on SIGINT/SIGTERM.
///
/// The controller learns of the VM before the client gets its 204, so a
/// `GET /` or `SendCtrlAltDel` sent right after InstanceStart sees it running.
fn wait_for_start(rx: &Receiver<StartRequest>, opts: &vmm::BuildOptions, ctl: &Controller) -> Option<vmm::Vmm> {
    loop {
        if stop_signal_pending() {
            return None;
        }
        let (spec, reply) = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return None,
        };
        let built = match controller::vmm_spec(&spec) {
            Ok(spec) => vmm::build_with(&spec, opts).map_err(|e| ControllerError::Vmm(Box::new(e))),
            Err(e) => Err(ControllerError::vmm(e)),
        };
        match built {
            Ok(vm) => {
                ctl.set_running(vm.handle());
                let _ = reply.send(Ok(()));
                return Some(vm);
            }
            Err(e) => {
                log::warn!("InstanceStart failed: {e}");
                let _ = reply.send(Err(e));
            }
        }
    }
}
