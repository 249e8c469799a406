#!/usr/bin/env bash
# Installs every Debian 12 package ProtoQuant needs to build, test and run the quickstart.
# Idempotent: does nothing when everything is already installed. Run as root (or with sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-openmp          # LibTorch; OpenBLAS, or matmuls run ~70x slower
  libboost-dev libtomlplusplus-dev libabsl-dev libfmt-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
  libgtest-dev googletest
  dataset-fashion-mnist                     # the quickstart's real data
  python3-torch                             # the eager-PyTorch reference benchmark
  python3-torchvision                       # backbone parity tests, tools/export_backbone.py
  libopencv-core-dev libopencv-imgcodecs-dev libopencv-imgproc-dev   # image decoding and transforms
)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
