//! Shared helpers for the integration tests (crate `shimvmm_tests`).
//!
//! - [`artifacts`], [`test_image`]: the Alpine guest and private scripted
//!   copies of its rootfs (via `tools/guest-artifacts`).
//! - [`GuestProcess`]: a VMM process with its console captured and
//!   timestamped; every wait has a timeout and errors carry the console tail.
//! - [`require_guest_env`]: skip (loudly) or fail where guests cannot run.
//! - [`orchestrators`]: the API request sequences of Firecracker's
//!   orchestrators (go-sdk, firecracker-containerd, Kata), as data.
//! - [`qemu_reference_boot`]: the QEMU microvm boot shimvmm is compared with.
//! - [`firecracker_command`], [`qemu_qboot_command`]: the benchmarks' peers.
//!
//! Guest test scripts are POSIX sh run by openrc at boot; they call
//! `marker NAME VALUE` to report values, which arrive as [`Marker`]s.

mod api;
mod artifacts;
mod env;
mod error;
mod heartbeat;
mod kernel;
mod markers;
pub mod orchestrators;
mod peers;
mod process;
mod reference;
mod scratch;

pub use api::{api_request, try_api_request};
pub use artifacts::{
    alpine_cmdline, alpine_test_cmdline, artifacts, guest_artifacts_tool, plain_image, repo_root, test_image,
    Artifacts, PowerAction, TempImage,
};
pub use env::{require_guest_env, shimvmm_bin, REQUIRE_GUEST_ENV, TESTBED_ENV};
pub use error::{HarnessError, Result};
pub use heartbeat::{HEARTBEAT_EVERY, HEARTBEAT_SILENCE, HEARTBEAT_TOKEN};
pub use kernel::{
    alpine_boot, build_kernel_script, guest_boot, guest_kernel_from_env, microvm_boot, microvm_cmdline, GuestBoot,
    GuestKernel,
};
pub use markers::{parse_exit, parse_marker, Marker, EXIT_TOKEN, MARKER_TOKEN, SCRIPT_START_MARKER};
pub use peers::{
    alpine_vmlinux, firecracker_bin, firecracker_command, firecracker_config, qemu_qboot_command, PeerBoot, QemuTuning,
    QBOOT_ROM,
};
pub use process::{one_vm_at_a_time, GuestProcess, Line, Stream, TAIL_LINES};
pub use reference::{
    qemu_bin, qemu_microvm_command, qemu_reference_boot, scaled, Accel, BootTimings, QemuBootOptions,
    BOOT_PROBE_MARKER, BOOT_PROBE_SCRIPT, FIRST_INIT_MARKER, OPENRC_START_MARKER,
};
pub use scratch::Scratch;
