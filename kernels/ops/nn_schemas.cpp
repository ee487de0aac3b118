#include "kernels/op_schema.hpp"

namespace troupe::kernels {

void register_nn_schemas(schema_registry& r) {}

}  // namespace troupe::kernels
