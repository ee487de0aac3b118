#pragma once
/// Fault rules <-> the management socket's FaultRule and FaultRuleState messages
/// (proto/troupe.proto). Pure functions, no sockets: the socket (cluster/management_socket.cpp)
/// and its client (cluster/management_client.cpp) both use them.
///
/// Decoding fills what a message leaves unset with fault_rule's defaults (times, probability,
/// seed and allocations 1) and checks only that the kind exists; whether the rule makes sense is
/// fault_plan's validate(), asked when the rule is added. Errors start with the field, as
/// validate()'s do ("kind: unknown fault kind 'x' ...").

#include "core/status.hpp"
#include "serving/fault_plan.hpp"

namespace troupe::v1 {
class FaultRule;
class FaultRuleState;
}  // namespace troupe::v1

namespace troupe::cluster {

/// Every field of `r`, the optional ones set.
void encode_fault_rule(const serving::fault_rule& r, v1::FaultRule& out);
expected<serving::fault_rule> decode_fault_rule(const v1::FaultRule& m);

void encode_fault_rule_state(const serving::fault_rule_state& s, v1::FaultRuleState& out);
expected<serving::fault_rule_state> decode_fault_rule_state(const v1::FaultRuleState& m);

}  // namespace troupe::cluster
