#!/usr/bin/env bash
# Installs what troupe needs on Debian 12 and is missing: the C++ libraries from Debian's packages and
# the Python test/reference tools (onnx, onnxruntime, numpy, pyzmq) from PyPI into ./.venv. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config clang
  libcaf-dev libzmq3-dev cppzmq-dev libprotobuf-dev protobuf-compiler
  libonnx-dev libonnx-testdata libdnnl-dev ocl-icd-opencl-dev zlib1g-dev
  prometheus-cpp-dev libspdlog-dev libfmt-dev libcli11-dev libyaml-cpp-dev nlohmann-json3-dev
  libboost-dev libssl-dev libgrpc++-dev protobuf-compiler-grpc prometheus
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-venv python3-pip
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "troupe: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import onnx, onnxruntime, numpy, zmq, pytest, tritonclient.http, tritonclient.grpc, kubernetes_validate" 2>/dev/null; then
  echo "troupe: installing Python tools into .venv (onnx, onnxruntime, numpy, pyzmq, pytest, tritonclient, kubernetes-validate)"
  .venv/bin/python -m pip install -q --disable-pip-version-check onnx onnxruntime numpy pyzmq pytest \
    "tritonclient[http,grpc]" kubernetes-validate
fi
