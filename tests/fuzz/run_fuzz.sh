#!/usr/bin/env bash
# Builds troupe_fuzz_loader with clang (ASan + libFuzzer) and fuzzes the ONNX loader and session.
#
#   tests/fuzz/run_fuzz.sh [BUILD_DIR] [SECONDS] [extra libFuzzer flags...]
#
# BUILD_DIR defaults to <repo>/build-fuzz, SECONDS to $TROUPE_FUZZ_SECONDS or 30. The seed corpus
# is a set of small models from libonnx-testdata ($TROUPE_ONNX_TESTDATA overrides the data root);
# units the fuzzer finds are kept in BUILD_DIR/fuzz-corpus across runs, crash inputs go to
# BUILD_DIR/fuzz-artifacts/. Exit status: 0 when nothing crashed, non-zero otherwise (a crash, a
# sanitizer report, a leak, a timeout of one input, or a build failure). $TROUPE_FUZZ_CMAKE_ARGS adds
# arguments to the first configure of BUILD_DIR.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$src/build-fuzz}"
seconds="${2:-${TROUPE_FUZZ_SECONDS:-30}}"
shift $(( $# >= 2 ? 2 : $# )) || true
data="${TROUPE_ONNX_TESTDATA:-/usr/share/libonnx-testdata/data}"

sanitize="-fsanitize=address,fuzzer-no-link -fno-omit-frame-pointer"
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S "$src" -B "$build" -G Ninja \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="$sanitize" -DCMAKE_CXX_FLAGS="$sanitize" \
    -DTROUPE_ENABLE_CUDA=OFF -DTROUPE_BUILD_BENCH=OFF -DTROUPE_BUILD_FUZZERS=ON \
    ${TROUPE_FUZZ_CMAKE_ARGS:-}
fi
ninja -C "$build" troupe_fuzz_loader

# Seeds: small models covering the loader's paths (initializers, attributes of every kind,
# subgraphs, several opsets, symbolic dims).
seeds="$build/fuzz-seeds"
corpus="$build/fuzz-corpus"
artifacts="$build/fuzz-artifacts"
mkdir -p "$seeds" "$corpus" "$artifacts"
if [[ -d "$data" ]]; then
  for c in node/test_add node/test_add_bcast node/test_relu node/test_conv_with_strides_padding \
           node/test_gemm_default_matrix_bias node/test_matmul_2d node/test_softmax_axis_1 \
           node/test_reshape_reordered_all_dims node/test_slice node/test_concat_1d_axis_0 \
           node/test_gather_0 node/test_transpose_default node/test_maxpool_2d_pads \
           node/test_batchnorm_epsilon node/test_reduce_sum_keepdims_example \
           node/test_constant node/test_cast_FLOAT_to_DOUBLE node/test_where_example \
           node/test_if node/test_loop11 node/test_resize_upsample_scales_nearest \
           node/test_split_equal_parts_1d node/test_unsqueeze_axis_0 node/test_constant_pad \
           node/test_expand_dim_changed node/test_clip_default_min node/test_lstm_defaults \
           simple/test_sign_model simple/test_single_relu_model simple/test_shrink \
           pytorch-operator/test_operator_add_broadcast pytorch-converted/test_Linear; do
    if [[ -f "$data/$c/model.onnx" ]]; then
      cp -f "$data/$c/model.onnx" "$seeds/$(echo "$c" | tr / _).onnx"
    fi
  done
else
  echo "run_fuzz.sh: no test data at $data; fuzzing from an empty corpus" >&2
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$build/tests/fuzz/troupe_fuzz_loader" \
  -max_total_time="$seconds" -max_len=262144 -timeout=20 -rss_limit_mb=4096 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" "$corpus" "$seeds"
