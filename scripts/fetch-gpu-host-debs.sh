#!/usr/bin/env bash
# Downloads, on a Debian 12 machine, the Debian packages the offline GPU host needs into .deps/
# (git-ignored); scripts/gpu-host.sh unpacks them there into a prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps && cd .deps
apt-get download libcaf-dev libcaf-core0.17 libcaf-io0.17 libcaf-openssl0.17 libzmq3-dev libzmq5 cppzmq-dev \
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0 \
  libcivetweb-dev libcivetweb1 civetweb libcurl4-openssl-dev zlib1g-dev \
  libonnx-dev libonnx1 libonnxifi libdnnl-dev libdnnl2 libsodium23 libpgm-5.3-0 libnorm1 libbsd0 \
  libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 \
  libcli11-dev libyaml-cpp-dev libyaml-cpp0.7 nlohmann-json3-dev libprotobuf-dev libprotobuf32 libprotobuf-lite32 \
  libboost1.74-dev libboost-dev \
  libgrpc++-dev libgrpc++1.51 libgrpc-dev libgrpc29 protobuf-compiler-grpc libprotoc32 \
  libabsl-dev libabsl20220623 libre2-dev libre2-9 libc-ares-dev libc-ares2 libssl-dev

# Wheels for the host's Python 3.12 (scripts/gpu-host.sh installs them into a private directory):
# pyzmq and protobuf for the fault suite, perf_analyzer for the KServe bench (glibc 2.38).
cd .. && mkdir -p .whl
PIP="${PIP:-.venv/bin/pip}"
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
  -d .whl pyzmq==27.3.0 protobuf==4.21.12
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_38_x86_64 \
  -d .whl perf_analyzer
