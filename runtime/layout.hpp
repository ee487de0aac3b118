#pragma once
/// Layout planning for convolutional graphs: stores regions of a specialised graph channels-last
/// ((N, D1..Dn, C), "NHWC") where that removes more layout changes than it adds.
///
/// A region is a connected group of nodes that can all run on channels-last tensors:
/// troupe.FusedConv and Conv (channels_last = 1; W stays (M, C/group, k...)), MaxPool /
/// AveragePool / GlobalAveragePool / GlobalMaxPool (their troupe-domain forms with
/// channels_last = 1), elementwise unary ops, broadcasting binary ops whose operands are region
/// tensors of the output's rank or constants (rewritten to the stored layout) or scalars, Concat
/// (axis remapped) and Reduce{Mean,Max,Min,Sum} (axes remapped; with keepdims = 0 the output leaves
/// the region in logical order when the kept axes keep their order).
///
/// Invariant after the pass: every value's `shape` is its STORED shape. A region value of logical
/// shape (N, C, D1..Dn) has stored shape (N, D1..Dn, C); nodes outside regions see logical
/// shapes, because a Transpose (or, where every spatial dim is 1 and the bytes do not move, a
/// Reshape, which the planner turns into a view) sits on each edge that crosses a region border.
///
/// Cost model, per region: each convolution stored (N, C, D...) costs two layout changes inside
/// the backend (cuDNN's tensor-core kernels and oneDNN's fast kernels both work channels-last and
/// transform X and Y around an NCHW call); each border Transpose costs one; border Reshapes are
/// free. A region is converted when its border transposes are fewer than twice its convolutions.
/// Before that decision, non-convolution nodes whose removal from the region lowers its border
/// count are dropped from it (an Add with an operand from outside the region, say).

#include "core/status.hpp"
#include "kernels/kernel.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

struct layout_stats {
  int regions = 0;            // connected groups of nodes that could run channels-last
  int converted_regions = 0;  // of which stored channels-last
  int converted_nodes = 0;
  int convolutions = 0;  // convolutions in converted regions
  int transposes = 0;    // inserted at region borders: real layout changes
  int reshapes = 0;      // border crossings where no byte moves
};

/// Rewrites `g` (specialised, passes run, nodes in topological order) as described above, for
/// kernels of backend `where` (only ops the backend has in their channels-last form join a
/// region). Every rewritten node is checked against its schema; a mismatch is an internal error.
/// TROUPE_LAYOUT_DEBUG=1 prints each region's counts to stderr.
expected<layout_stats> plan_channels_last(graph& g, kernels::backend where);

}  // namespace troupe::runtime
