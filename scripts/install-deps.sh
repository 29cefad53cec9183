#!/usr/bin/env bash
# Installs what building and testing Manifold needs on Debian 12, idempotently:
# nothing is downloaded when every package is already present.
set -euo pipefail

packages=(
  iproute2 iputils-ping procps kmod             # namespaces, links, ping
  containernetworking-plugins                   # reference plugins: peers, delegates, IPAM
  qemu-system-x86 busybox-static linux-image-amd64  # full-kernel VM lane (ipvlan, vlan, dummy)
  linux-source-6.1 linux-headers-amd64 make gcc  # netdevsim built out of tree for the VM lane
  python3                                       # demo table formatting
  protobuf-compiler libprotobuf-dev             # etcd-client build (protoc + well-known types)
  etcd-server                                   # real etcd for manifold-ipam tests
  openssl                                       # TLS certificates for the etcd TLS tests
  containerd runc                               # real CRI runtime for the containerd lane
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -o DPkg::Lock::Timeout=600
  apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
