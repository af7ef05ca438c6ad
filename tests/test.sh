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

# Python tools of the tests, kept in a venv: kubernetes-validate (tests/deploy.rs checks the
# manifests) and moto's EC2 emulator (tests/cloud_disk.rs starts moto_server on loopback).
[ -x target/venv/bin/python ] || python3 -m venv target/venv
[ -x target/venv/bin/kubernetes-validate ] || target/venv/bin/pip install -q kubernetes-validate==1.37.0
[ -x target/venv/bin/moto_server ] || target/venv/bin/pip install -q "moto[server,ec2]==5.1.22"

cargo test --workspace --locked "$@"
