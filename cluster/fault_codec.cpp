#include "cluster/fault_codec.hpp"

#include <string>

#include "proto/troupe.pb.h"

namespace troupe::cluster {

void encode_fault_rule(const serving::fault_rule& r, v1::FaultRule& out) {
  out.set_kind(std::string(serving::to_string(r.kind)));
  out.set_target(r.target);
  out.set_times(r.times);
  out.set_probability(r.probability);
  out.set_seed(r.seed);
  out.set_delay_ms(static_cast<uint32_t>(r.delay.count()));
  out.set_allocations(r.allocations);
}

expected<serving::fault_rule> decode_fault_rule(const v1::FaultRule& m) {
  serving::fault_rule r;
  auto kind = serving::parse_fault_kind(m.kind());
  if (!kind) return invalid_argument("kind: " + kind.error().message());
  r.kind = *kind;
  r.target = m.target();
  if (m.has_times()) r.times = m.times();
  if (m.has_probability()) r.probability = m.probability();
  if (m.has_seed()) r.seed = m.seed();
  r.delay = std::chrono::milliseconds(m.delay_ms());
  if (m.has_allocations()) r.allocations = m.allocations();
  return r;
}

void encode_fault_rule_state(const serving::fault_rule_state& s, v1::FaultRuleState& out) {
  out.set_id(s.id);
  encode_fault_rule(s.rule, *out.mutable_rule());
  out.set_chances(s.chances);
  out.set_fired(s.fired);
  out.set_spent(s.spent());
}

expected<serving::fault_rule_state> decode_fault_rule_state(const v1::FaultRuleState& m) {
  serving::fault_rule_state s;
  s.id = m.id();
  TROUPE_ASSIGN_OR_RETURN(s.rule, decode_fault_rule(m.rule()));
  s.chances = m.chances();
  s.fired = m.fired();
  return s;
}

}  // namespace troupe::cluster
