#pragma once
/// Specialisation: binds concrete input types/shapes to a loaded graph, infers every value's type and
/// shape in one topological sweep, and folds on the host every node whose inputs are all known (Shape
/// and Size fold from shapes alone), so Shape->Gather->Unsqueeze->Concat->Reshape chains become
/// constants. Folded nodes are removed. Afterwards every value has a concrete type and shape.

#include <vector>

#include "core/status.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

/// Outputs larger than this are left to run at execution time rather than stored as constants.
inline constexpr size_t max_folded_bytes = size_t{64} << 20;

/// `input_infos` are in the order of g.inputs and must already be validated against declarations.
status specialize(graph& g, const std::vector<tensor_info>& input_infos);

/// Inference only: types and shapes of every value for these inputs, folding what is needed for
/// value-dependent shapes, but keeping every node (for inspection). Values keep their indices.
status infer_concrete_shapes(graph& g, const std::vector<tensor_info>& input_infos);

/// Checks one input against its declaration: dtype, rank, and every static dimension.
status check_input(const value& declared, const tensor_info& given);

}  // namespace troupe::runtime
