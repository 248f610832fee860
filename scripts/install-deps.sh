#!/usr/bin/env bash
# Installs every Debian package dcp++ needs to build, test and run its examples.
# Idempotent: does nothing (and needs no root) when everything is already installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev          # LibTorch 1.13 (CPU): ATen, c10d, Gloo
  libgloo-dev           # Gloo headers, which ProcessGroupGloo.hpp includes (libtorch-dev lacks them)
  libtbb-dev            # worker threads for storage I/O
  libspdlog-dev libfmt-dev
  libyaml-cpp-dev       # manager configuration
  libcli11-dev          # the ckpt command-line tool
  libxxhash-dev         # per-item checksums (XXH3)
  libdeflate-dev        # CRC-32 of zip records in PyTorch files (fast: PCLMUL)
  libzstd-dev           # PyTorch DCP items saved with the stream.zstd/1 transform
  nlohmann-json3-dev    # safetensors headers, Hugging Face index files
  libssl-dev            # SHA-256 of the final parameters in the examples (libcrypto)
  libgtest-dev libgmock-dev
  python3               # scripts/launch.sh asks the kernel for a free port
  python3-torch         # PyTorch 1.13 (/usr/bin/python3): makes the interop tests' fixtures
                        #   (with its dependencies: 20 packages, 27 MB download, 170 MB installed)
  python3-xxhash        # dcpp (integrations/python) verifies dcp++'s XXH3-64 checksums with it
  python3-zstandard     # zstd streams of the stream.zstd/1 DCP fixture (dcp2_flavour_zstd)
)
# scripts/test.sh --sanitize: clang, its sanitizer runtimes and llvm-symbolizer
# (stack traces with file and line).
if [ -n "${DCP_INSTALL_SANITIZER_TOOLS:-}" ]; then
  PACKAGES+=(clang libclang-rt-dev llvm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: missing packages (${missing[*]}) and not root; run as root" >&2
    exit 1
  fi
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
