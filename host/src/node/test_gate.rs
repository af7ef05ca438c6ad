//! The privilege gate shared by the node unit tests (`node::testing`) and the end-to-end
//! tests (`tests/common`, which include this file by path): a test that needs root or a
//! tool skips with a note, or fails when CI sets `WASMCSI_REQUIRE_PRIVILEGED_TESTS`.

use std::path::Path;

/// Set in CI: a test that cannot run for lack of root or a tool fails instead of skipping.
pub const REQUIRE_ENV: &str = "WASMCSI_REQUIRE_PRIVILEGED_TESTS";

/// Skips (false) with a note, or panics when CI requires every test to run.
pub fn cannot_run(test: &str, why: &str) -> bool {
    if std::env::var_os(REQUIRE_ENV).is_some() {
        panic!("{test} could not run: {why}, and {REQUIRE_ENV} is set");
    }
    eprintln!("SKIPPED {test}: {why} (set {REQUIRE_ENV} to make this a failure)");
    false
}

/// Whether a test needing root (loop devices, mounts) may run here.
pub fn privileged(test: &str) -> bool {
    nix::unistd::geteuid().is_root() || cannot_run(test, "it needs root")
}

/// [`privileged`], and `tool` (e.g. `mkfs.xfs`) is installed.
pub fn privileged_with(test: &str, tool: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    let installed = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|dir| Path::new(dir).join(tool).exists());
    installed || cannot_run(test, &format!("{tool} is not installed"))
}
