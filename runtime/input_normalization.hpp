#pragma once
/// Input normalisation inside the model: clients send an image input as integer pixels (uint8:
/// half the bytes of float16, a quarter of float32, which is what the transport is bound by) and
/// the graph applies (x - mean[c]) / std[c] itself. The rewrite runs on the graph as loaded,
/// before the session's passes: the float input is replaced by an input of the client type with
/// the same name and shape, followed by
///
///     Cast(to = the input's former float type) -> Sub(mean) -> Mul(1 / std)
///
/// feeding every former reader. mean and 1/std are constants of shape [C, 1, ..., 1] (one 1 per
/// dim after the channel axis), so they broadcast along the channel axis only. The precision pass
/// (runtime/precision.hpp) leaves the integer input alone, retypes the Cast to float16/bfloat16
/// and converts the two constants, so on the GPU the chain computes in the reduced type; the
/// layout pass takes Sub and Mul into a channels-last region (a per-channel constant is rewritten
/// to the stored layout).

#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"
#include "core/status.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

struct input_normalization {
  std::string input;              // graph input name; empty: the model's only input
  dtype client_type = dtype::u8;  // what clients send: u8, i8, u16 or i16
  std::vector<float> mean;        // per channel, in client_type's scale (0..255 for u8)
  std::vector<float> stddev;      // per channel, finite and != 0, same scale
  int64_t channel_axis = 1;       // negative counts from the last dim
};

/// The integer types clients may send a normalised input as.
bool is_normalizable_client_type(dtype t);
/// "uint8", "int8", "uint16", "int16" -> dtype; invalid_argument otherwise.
expected<dtype> parse_client_type(std::string_view name);

/// Checks what can be checked without a model: a client type of the list above, mean and std of
/// one non-zero length, every value finite, every std != 0. invalid_argument naming the problem.
status validate_input_normalization(const input_normalization& n);

/// Applies one normalisation to `g` (a graph as loaded: before precision conversion and the
/// passes). invalid_argument when the input does not exist (or the model has several inputs and
/// none is named), is not a float type, is also a graph output, declares no shape, has rank <=
/// the channel axis, or a static channel dim differs from len(mean). A symbolic channel dim
/// becomes static (len(mean)), so requests with another channel count are refused up front.
status apply_input_normalization(graph& g, const input_normalization& n);
/// All of them in order; invalid_argument when two name the same input.
status apply_input_normalizations(graph& g, const std::vector<input_normalization>& list);

/// The `troupe run --normalize-input` form, the config.yaml keys as space-separated key=value
/// pairs: "dtype=uint8 mean=123.675,116.28,103.53 std=58.395,57.12,57.375 [input=NAME]
/// [channel_axis=1]". dtype, mean and std are required. invalid_argument on anything else.
expected<input_normalization> parse_input_normalization(std::string_view spec);

}  // namespace troupe::runtime
