#pragma once
/// One sample of a serving_metrics registry, for tests that check what a component counted.

#include <prometheus/registry.h>

#include <algorithm>
#include <map>
#include <string>

#include "serving/metrics.hpp"

namespace troupe::testing {

/// The value (a counter's or a gauge's) of the first sample of family `name` whose labels
/// include every one of `labels`; -1 when there is none.
inline double metric_sample(const serving::serving_metrics& metrics, const std::string& name,
                            const std::map<std::string, std::string>& labels = {}) {
  for (const auto& family : metrics.registry()->Collect()) {
    if (family.name != name) continue;
    for (const auto& sample : family.metric) {
      bool all = true;
      for (const auto& [key, value] : labels)
        all = all && std::any_of(sample.label.begin(), sample.label.end(), [&](const auto& l) {
                return l.name == key && l.value == value;
              });
      if (all)
        return family.type == prometheus::MetricType::Counter ? sample.counter.value
                                                               : sample.gauge.value;
    }
  }
  return -1;
}

}  // namespace troupe::testing
