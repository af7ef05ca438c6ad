//! Builds the shipped backends for `wasm32-wasip2` with a nested cargo, so a plain
//! `cargo build` / `cargo test` of the workspace needs nothing else.
//!
//! The nested build uses its own target directory (`target/wasm`): it never waits on the
//! outer build's lock and stays incremental across builds.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Backend crates under `backends/` that become components.
const BACKENDS: &[&str] = &["loopfile", "lvm", "cloud-disk", "hostile"];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let backends_dir = manifest_dir.parent().expect("bundle lives in backends/");
    let workspace = backends_dir.parent().expect("backends/ lives in the workspace");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = workspace.join("target").join("wasm");

    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());
    // Code every backend shares.
    for shared in ["kit/src", "kit/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", backends_dir.join(shared).display());
    }
    for name in BACKENDS {
        let crate_dir = backends_dir.join(name);
        println!("cargo:rerun-if-changed={}", crate_dir.join("src").display());
        println!("cargo:rerun-if-changed={}", crate_dir.join("Cargo.toml").display());
    }

    build(workspace, &target_dir);
    for name in BACKENDS {
        // cargo names a library artifact after the crate, with `-` as `_`.
        let built = target_dir.join(TARGET).join("release").join(format!("{}.wasm", name.replace('-', "_")));
        let copy = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&built, &copy).unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), copy.display()));
    }
}

fn build(workspace: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args(["build", "--release", "--target", TARGET, "--target-dir"]).arg(target_dir);
    for name in BACKENDS {
        cmd.args(["-p", name]);
    }
    // The outer build's flags are for the host target; they must not leak into the guest build.
    // Shipped components carry no debug info: smaller to embed, faster to compile.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false").env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    // A 128 KiB stack (instead of 1 MiB) puts stack and static data in the first pages of
    // linear memory, which the host's pool keeps resident between calls.
    cmd.env("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS", "-Clink-arg=-zstack-size=131072");
    for var in
        ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"]
    {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the wasm backends");
    assert!(
        status.success(),
        "building the wasm backends failed ({status}); is the wasm32-wasip2 target installed (rust-toolchain.toml lists it)?"
    );
}
