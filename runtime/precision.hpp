#pragma once
/// Mixed-precision conversion of a loaded graph (before specialisation): float32 computation becomes
/// float16 (or bfloat16). Float weights are converted once, saturating to the type's finite range
/// (so exports that use float32's lowest value as an attention-mask bias stay finite); Cast and
/// ConstantOfShape/Constant targets of float32 become the new type; graph inputs and outputs keep
/// float32 with Casts inserted at the boundary, so callers see the same signature. Constants that
/// shape functions read as values (Resize scales...) stay float32.

#include "core/status.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

/// `to` is dtype::f16 or dtype::bf16. Returns the number of weights converted.
expected<int> convert_float_precision(graph& g, dtype to);

}  // namespace troupe::runtime
