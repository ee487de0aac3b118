#!/usr/bin/env bash
# Builds troupe on the offline GPU host and runs the GPU tests and benches, writing logs and result
# files to $OUT (default /tmp/troupe-out). The Debian packages come along in .deps/ (downloaded on a
# Debian 12 machine with `scripts/fetch-gpu-host-debs.sh`) and are unpacked into a prefix, never into /.
#   usage: scripts/gpu-host.sh [build|test|models|profile|bench|serving|kserve|lifecycle|density|faults|cluster|all]...
#          (default: all, which is every step but profile, serving, kserve, lifecycle, density, faults
#          and cluster)
#   faults: FAULTS_TESTS (default tests/faults; e.g. tests/faults/test_gpu_faults.py)
#   env: BENCH_MODELS (default resnet50,bert_base), BENCH_BATCHES (default 1,8,32,128,256);
#        serving: SERVING_INPUT_DTYPE (uint8, uint8-graph, fp16, fp32; default uint8),
#        SERVING_ARGS (more bench/serving/gpu_run.py options, e.g. "--instances 2 --connections 16");
#        build: BUILD_TARGETS (default every target; e.g. "troupe" for the benches alone)
#        density: DENSITY_ARGS (more bench/density/run.py options, e.g. "--compile-cap-s 100 --skip-many")
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/troupe-out}
mkdir -p "$OUT"
P=/opt/troupe-deps
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(all)
want() {
  for s in "${steps[@]}"; do
    [ "$s" = "$1" ] && return 0
    [ "$s" = all ] && [ "$1" != profile ] && [ "$1" != serving ] && [ "$1" != kserve ] &&
      [ "$1" != lifecycle ] && [ "$1" != density ] && [ "$1" != faults ] && [ "$1" != cluster ] &&
      return 0
  done
  return 1
}

if [ ! -f "$P/.unpacked" ]; then
  mkdir -p "$P"
  for f in .deps/*.deb; do dpkg -x "$f" "$P"; done
  sed -i "s#/usr/lib/x86_64-linux-gnu#$P/usr/lib/x86_64-linux-gnu#g; s#\"/usr/include#\"$P/usr/include#g" \
    "$P"/usr/lib/x86_64-linux-gnu/cmake/*/*.cmake "$P"/usr/share/cmake/*/*.cmake 2>/dev/null
  touch "$P/.unpacked"
fi
export LD_LIBRARY_PATH=$P/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
# /usr/local/cuda/bin for nvcc; the prefix's bin for protoc's grpc_cpp_plugin (the KServe gRPC door).
export PATH=/usr/local/cuda/bin:$PATH:$P/usr/bin
# The host's Python lacks pyzmq and protobuf (the fault suite's closed loop and the generated
# troupe_pb2 need them): their wheels come along in .whl/ (scripts/fetch-gpu-host-debs.sh) and go
# into a private site directory, never into the host's Python.
# Only what is missing: a second protobuf beside the host's would shadow its native part.
for mod in zmq:pyzmq google.protobuf:protobuf; do
  if ! python3 -c "import ${mod%%:*}" 2>/dev/null && ls .whl/"${mod#*:}"-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/troupe-py .whl/"${mod#*:}"-*.whl
  fi
done
[ -d /tmp/troupe-py ] && export PYTHONPATH=/tmp/troupe-py${PYTHONPATH:+:$PYTHONPATH}

if want build; then
  echo "== build ($(nproc) cores)"
  start=$(date +%s)
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$P/usr;$P/usr/lib/x86_64-linux-gnu/cmake" \
    -DCMAKE_LIBRARY_PATH=$P/usr/lib/x86_64-linux-gnu -DCMAKE_INCLUDE_PATH=$P/usr/include \
    -DCMAKE_CXX_FLAGS="-isystem $P/usr/include -isystem $P/usr/include/x86_64-linux-gnu" \
    -DCMAKE_EXE_LINKER_FLAGS="-L$P/usr/lib/x86_64-linux-gnu" \
    -DCMAKE_CUDA_ARCHITECTURES="90-real;90-virtual" \
    -DPython3_EXECUTABLE="$(command -v python3)" >"$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
  grep -E "troupe: (KServe gRPC|serving|CUDA)" "$OUT/configure.log"
  cmake --build build-gpu -j "$(nproc)" ${BUILD_TARGETS:+--target $BUILD_TARGETS} >"$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
  echo "built in $(( $(date +%s) - start )) s"
  # The device tool brings back at most 8 files: the build's logs travel as one archive.
  (cd "$OUT" && tar czf build-logs.tgz configure.log build.log && rm -f configure.log build.log)
fi

if want test; then
  echo "== GPU tests"
  nvidia-smi -L
  ctest --test-dir build-gpu -L gpu --output-on-failure --timeout 600 2>&1 | tee "$OUT/gpu-tests.log" | tail -30
  # GPU_MEMCHECK=0: the GPU tests only, without compute-sanitizer (when device time is short).
  [ "${GPU_MEMCHECK:-1}" = 0 ] || for t in build-gpu/tests/gpu/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *bench*) continue ;; esac  # benchmarks only: their tests are disabled
    case "$t" in *sticky_fault*) continue ;; esac  # traps on purpose: an error to the sanitizer
    echo "== compute-sanitizer memcheck $(basename "$t")"
    compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 3 "$t" --gtest_brief=1 >"$OUT/memcheck-$(basename "$t").log" 2>&1
    echo "memcheck exit $?"; tail -3 "$OUT/memcheck-$(basename "$t").log"
  done
fi

if want models; then
  echo "== whole models: CUDA fp32/fp16 vs CPU"
  PYTHONUNBUFFERED=1 python3 tests/gpu/compare_models.py build-gpu/troupe resnet50,bert_base 2>&1 | tee "$OUT/compare.log" | tail -20
fi

if want profile; then
  # Per-step device time (a sync after each step) of the bench models: where the time goes.
  echo "== profile"
  PYTHONUNBUFFERED=1 python3 bench/gpu_vs_torch/run.py --troupe build-gpu/troupe --out "$OUT" --profile \
    --models "${PROFILE_MODELS:-resnet50,bert_base}" --batches "${PROFILE_BATCHES:-1,128}" 2>&1 | tail -5
fi

if want bench; then
  if [ -f bench/gpu_vs_torch/run.py ]; then
    echo "== bench gpu_vs_torch"
    PYTHONUNBUFFERED=1 python3 bench/gpu_vs_torch/run.py --troupe build-gpu/troupe --out "$OUT" \
      --models "${BENCH_MODELS:-resnet50,bert_base}" --batches "${BENCH_BATCHES:-1,8,32,128,256}" 2>&1 | tee "$OUT/bench.log" | tail -40
  fi
fi

if want serving; then
  # ResNet-50 fp16 through `troupe serve` vs `troupe run` alone: OUT/serving-gpu.{md,json}.
  echo "== serving (ResNet-50 end to end vs the executor alone)"
  PYTHONUNBUFFERED=1 timeout 540 python3 bench/serving/gpu_run.py --troupe build-gpu/troupe --out "$OUT" \
    --input-dtype "${SERVING_INPUT_DTYPE:-uint8}" ${SERVING_ARGS:-} 2>&1 | tee "$OUT/serving.log" | tail -60
fi

if want kserve; then
  # ResNet-50 through gRPC, HTTP and system shared memory (perf_analyzer, from its wheel carried in
  # .whl/) beside the ZeroMQ path: OUT/serving-kserve.{md,json}.
  echo "== kserve (perf_analyzer over gRPC, HTTP, shared memory vs troupe bench over ZeroMQ)"
  if ! command -v perf_analyzer >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/pa-site .whl/perf_analyzer-*.whl &&
      export PATH=/tmp/pa-site/bin:$PATH
    [ -x /tmp/pa-site/perf_analyzer/bin/perf_analyzer ] && export PATH=/tmp/pa-site/perf_analyzer/bin:$PATH
  fi
  PYTHONUNBUFFERED=1 timeout 560 python3 bench/serving/kserve_gpu.py --troupe build-gpu/troupe --out "$OUT" \
    ${KSERVE_ARGS:-} 2>&1 | tee "$OUT/kserve.log" | tail -40
fi

if want lifecycle; then
  # Model load times, p99 while another model loads, GPU memory over load/unload cycles:
  # OUT/lifecycle-gpu.{md,json}.
  echo "== lifecycle (troupe models load/unload on the GPU)"
  PYTHONUNBUFFERED=1 timeout 480 python3 bench/serving/lifecycle_gpu.py --troupe build-gpu/troupe --out "$OUT" \
    ${LIFECYCLE_ARGS:-} 2>&1 | tee "$OUT/lifecycle.log" | tail -20
fi

if want faults; then
  # The fault suite's GPU faults (tests/faults/test_gpu_faults.py: a sticky CUDA error and kill -9
  # under load with ResNet-50 loaded; every request answered once, recovery time recorded), then
  # the CPU faults with this build: OUT/faults-gpu.jsonl, OUT/faults.log.
  echo "== faults"
  export TROUPE_FAULTS_GPU=1 TROUPE_FAULTS_RESULTS="$OUT/faults-gpu.jsonl"
  TROUPE_FAULTS_DEVICE="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  export TROUPE_FAULTS_DEVICE
  TROUPE_BIN=build-gpu/troupe PYTHONPATH=clients/python:${PYTHONPATH:-} PYTHONUNBUFFERED=1 timeout 540 \
    python3 -m pytest -q -p no:cacheprovider ${FAULTS_TESTS:-tests/faults} 2>&1 | tee "$OUT/faults.log" | tail -30
fi

if want density; then
  # Issue 14's density bench: memory per replica at batch 128 against PyTorch eager's reserved
  # memory, throughput against torch.compile's, replicas per GPU, and 20 ResNet-50s under a memory
  # budget where the node takes one: OUT/density.{md,json} (about 4-5 minutes; on SIGTERM from the
  # timeout it still writes what it measured).
  echo "== density (troupe vs PyTorch: memory per replica, throughput, replicas per GPU)"
  PYTHONUNBUFFERED=1 timeout "${DENSITY_TIMEOUT_S:-480}" python3 bench/density/run.py --troupe build-gpu/troupe \
    --out "$OUT" ${DENSITY_ARGS:-} 2>&1 | tee "$OUT/density.log" | tail -70
  # The device tool brings back at most 8 files: the run's many logs travel as one archive, so
  # that density.md and density.json come back beside them.
  (cd "$OUT" && tar czf density-logs.tgz density-*.log density.log 2>/dev/null &&
    rm -f density-*.log density.log)
fi

if want cluster; then
  # Issue 13's GPU bench: ResNet-50 fp16 through a control node and a worker node on this host
  # (tcp:// on loopback, tensors as frames) vs the single node, one after the other in one call:
  # OUT/serving-gpu.{md,json} and OUT/serving-gpu-cluster-lcN.{md,json}.
  echo "== cluster (control + worker node vs one node, ResNet-50)"
  # CLUSTER_LINKS: the node_link_connections values the cluster runs with (default "1 4"): one
  # connection per remote worker, then four (data lanes; cluster/worker_lanes.hpp); N:B also sets
  # max_batches_per_replica to B (e.g. "4 4:3").
  for mode in off ${CLUSTER_LINKS:-1 4}; do
    if [ "$mode" = off ]; then flags=(--cluster off); else flags=(--cluster on --link-connections "${mode%%:*}"); fi
    [ "$mode" != "${mode#*:}" ] && flags+=(--batches-per-replica "${mode#*:}")
    PYTHONUNBUFFERED=1 timeout "${CLUSTER_TIMEOUT_S:-240}" python3 bench/serving/gpu_run.py \
      --troupe build-gpu/troupe --out "$OUT" "${flags[@]}" --concurrency 1,16,64,128,192,256 \
      --duration 3 --warmup 1 --batch1-duration 4 --time-budget-s 170 --no-executor ${CLUSTER_ARGS:-} 2>&1 |
      tee "$OUT/cluster-${mode/:/-b}.log" | tail -25
  done
  # Each log holds its run's Markdown report: the .md files stay here (at most 8 files come back).
  rm -f "$OUT"/serving-gpu*.md
fi
