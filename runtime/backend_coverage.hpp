#pragma once
/// The load-time check that a graph can run on a backend at all: every node is an op troupe knows
/// (a shape function for its opset) and has a kernel registered for the backend, unless every
/// plan folds it away on the host (a Constant, or a node whose inputs are all known when a plan
/// is built: initializers, Shape/Size of anything, and what is computed from those only). A model
/// that fails here would fail every request: it fails to load instead, naming each op and node.
///
/// Coarser than the plan-time choice of a kernel (which also sees dtypes, attributes and shapes
/// after the fusion passes): a kernel that refuses one node's dtype is still found when the plan
/// is built, at load for static shapes, at the first request of a new shape otherwise.

#include "core/status.hpp"
#include "kernels/kernel.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

/// OK, or `unsupported` listing every node that cannot run ("op 'Einsum' (node 'e0') has no
/// kernel on the cpu backend; ...").
status check_backend_coverage(const graph& g, kernels::backend where);

}  // namespace troupe::runtime
