#pragma once
/// Symbolic shape inference: every value's shape in terms of the model's dimension symbols
/// ("batch", "sequence"), e.g. [batch, 12, sequence, 64] or [batch*sequence, 768].
///
/// How: the graph is specialised twice with two different probe bindings of the symbols (the same
/// concrete inference and folding that plans use, so value-dependent shapes such as Reshape targets
/// computed by Shape->Gather->Concat chains are covered), and each dimension is read back: equal in
/// both -> static; matching one symbol's probes, a constant multiple of them, or the product of two
/// symbols -> that expression; otherwise unknown ("?").

#include <map>
#include <string>

#include "core/status.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

struct symbolic_value_info {
  dtype type = dtype::undefined;
  symbolic_shape shape;
};

/// Per value name. Static dims of inputs come from the model; `fixed` overrides symbols with sizes.
expected<std::map<std::string, symbolic_value_info>> infer_symbolic_shapes(
    const graph& g, const std::map<std::string, int64_t>& fixed = {});

}  // namespace troupe::runtime
