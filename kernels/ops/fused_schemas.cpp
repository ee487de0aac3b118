#include "kernels/op_schema.hpp"

namespace troupe::kernels {

void register_fused_schemas(schema_registry& r) {}

}  // namespace troupe::kernels
