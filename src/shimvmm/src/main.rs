//! shimvmm: boots a Linux guest with KVM from the command line, a config file
//! or the REST API.

mod cli;
mod terminal;

use std::process::ExitCode;

use clap::Parser;

/// Exit status for bad input or a VM that could not be built.
const EXIT_CONFIG_ERROR: u8 = 1;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("shimvmm: error: {msg}");
    ExitCode::from(EXIT_CONFIG_ERROR)
}

fn main() -> ExitCode {
    let args = cli::Args::parse();
    // Before any thread exists, so every thread inherits the mask.
    if let Err(e) = vmm::signals::block_stop_signals() {
        return fail(format!("cannot block SIGINT/SIGTERM: {e}"));
    }
    env_logger::Builder::new().filter_level(args.log_level).format_target(false).init();

    let Some(kernel) = args.kernel.clone() else {
        return fail("nothing to boot: give --kernel PATH (or --config-file FILE / --api-sock PATH)");
    };
    let config = match args.vm_config(kernel) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    run(&config)
}

fn run(config: &vmm::VmConfig) -> ExitCode {
    let vm = match vmm::build(config) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    terminal::enter_raw_mode();
    let reason = vm.run();
    terminal::restore();
    match &reason {
        vmm::ExitReason::VcpuError(m) => eprintln!("shimvmm: guest stopped: {m}"),
        vmm::ExitReason::VmmError(m) => eprintln!("shimvmm: error: {m}"),
        r => log::info!("shimvmm: exiting: {r:?}"),
    }
    ExitCode::from(reason.exit_code() as u8)
}
