//! QEMU microvm reference boot of the Alpine guest: the guest's init and the
//! openrc-run test script must run, and the times to both are printed for
//! comparison with shimvmm's boot.
//!
//! Runs inside the testbed: build with
//! `cargo test -p shimvmm-tests --test reference_boot --no-run`, then
//! `tools/testbed run -- <binary> --nocapture`. On a host without usable KVM,
//! SHIMVMM_QEMU_ACCEL=tcg runs it under TCG (slow, but it exercises the image).

use shimvmm_tests::{
    one_vm_at_a_time, qemu_reference_boot, require_guest_env, Accel, QemuBootOptions, OPENRC_START_MARKER,
};

#[test]
fn qemu_microvm_boots_alpine_and_runs_test_script() {
    // Quiet, with OpenRC's banner as the first init marker, like the guest tests.
    let opts = QemuBootOptions { quiet: true, first_init_marker: OPENRC_START_MARKER, ..QemuBootOptions::default() };
    if opts.accel == Accel::Kvm && !require_guest_env("qemu_microvm_boots_alpine_and_runs_test_script") {
        return;
    }
    let _vm = one_vm_at_a_time(); // the timing must not share the CPUs with another guest
    let t = qemu_reference_boot(&opts).unwrap_or_else(|e| panic!("reference boot failed: {e}"));
    assert!(t.first_init < t.test_script, "init must run before the test script: {t:?}");
    assert!(t.test_script <= t.exited, "{t:?}");
    let accel = match opts.accel {
        Accel::Kvm => "",
        Accel::Tcg => " (TCG)",
    };
    println!(
        "reference boot: qemu microvm{accel} first-init {:.2} s, test-script {:.2} s (guest uptime {}), exit {:.2} s; {:?} kernel",
        t.first_init.as_secs_f64(),
        t.test_script.as_secs_f64(),
        t.guest_uptime_at_script.map_or_else(|| "?".to_string(), |u| format!("{u:.2} s")),
        t.exited.as_secs_f64(),
        t.kernel
    );
}
