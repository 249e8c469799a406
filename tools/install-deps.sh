#!/usr/bin/env bash
# Installs every Debian 12 package ProtoQuant needs to build, test and run the quickstart, and
# nothing that only a benchmark needs. Idempotent: does nothing when everything is installed.
# Runs as root, or elevates apt-get through sudo when it is not root.
#
#   tools/install-deps.sh           # build, tests, quickstart
#   tools/install-deps.sh --bench   # also what bench/ compares against (FAISS, PIL)
#
# Every package is named here because the machines are fresh: one installed by hand on a
# developer's machine hides a missing line (OpenCV's CMake file once did). CI proves this list on
# a brand-new Debian 12 root (.ci/run).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-openmp          # LibTorch; OpenBLAS, or matmuls run ~70x slower
  libgloo-dev                               # headers ProcessGroupGloo.hpp includes: data-parallel on c10d
  libboost-dev libtomlplusplus-dev libabsl-dev libfmt-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
  libopencv-dev                             # OpenCVConfig.cmake; image decoding and transforms
  libssl-dev                                # SHA-256 (OpenSSL's libcrypto): stage keys, artifact checksums
  libsqlite3-dev                            # the results store (protoquant runs, leaderboard)
  libgtest-dev googletest
  chromium fonts-dejavu-core                # the leaderboard test renders its HTML headless
  dataset-fashion-mnist                     # the quickstart's real data
  python3-torchvision                       # backbone parity tests, export check, tools/export_backbone.py
)
BENCH_PACKAGES=(
  python3-faiss                             # bench/quantizer_vs_faiss.py
  python3-pil                               # bench/loader_vs_torchvision.py
)

case "${1:-}" in
  "") ;;
  --bench) PACKAGES+=("${BENCH_PACKAGES[@]}") ;;
  *) echo "install-deps: unknown option '$1' (usage: tools/install-deps.sh [--bench])" >&2; exit 2 ;;
esac

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; run tools/install-deps.sh as root" >&2; exit 2; }
  SUDO=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
