#!/usr/bin/env bash
# Runs every test of the workspace on this machine, installing what the tests need first.
# Must run as root: the end-to-end tests drive a privileged host (loop devices, mounts).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v mkfs.xfs >/dev/null || need_pkgs+=(xfsprogs)
command -v mkfs.btrfs >/dev/null || need_pkgs+=(btrfs-progs)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
command -v losetup >/dev/null || need_pkgs+=(util-linux)
[ -x /sbin/lvm ] || need_pkgs+=(lvm2)
python3 -c 'import ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
fi

# rust-toolchain.toml lists wasm32-wasip2; make sure rustup has it before cargo needs it.
rustup target add wasm32-wasip2 >/dev/null

# tests/deploy.rs validates the Kubernetes manifests with kubernetes-validate, kept in a venv.
if [ ! -x target/venv/bin/kubernetes-validate ]; then
    python3 -m venv target/venv
    target/venv/bin/pip install -q kubernetes-validate==1.37.0
fi

cargo test --workspace --locked "$@"
