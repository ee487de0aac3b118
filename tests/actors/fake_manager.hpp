#pragma once
/// A stand-in for model_manager in actor tests: it answers every message of manager_actor with
/// an empty success unless a hook says otherwise, so that a message model_manager gains is added
/// here once, not to every test's fake.

#include <functional>
#include <memory>
#include <string>

#include "actors/caf_compat.hpp"

namespace troupe::testing {

struct fake_manager_hooks {
  /// Each control request (mload, munload, index, traffic) before it is answered, with the
  /// actor that asked.
  std::function<void(const caf::actor_addr& asker)> asked;
  /// (mload, name, config): the answer; default true.
  std::function<caf::result<bool>(const std::string& name)> mload;
  /// (scaled): the scaled versions; default none.
  std::function<actors::scaled_versions()> scaled;
  /// (scale, model, version, replicas): default true.
  std::function<bool(const std::string& model, int64_t version, uint32_t replicas)> scale;
  /// (wake, model, version).
  std::function<void(const std::string& model, int64_t version)> wake;
};

inline actors::manager_actor spawn_fake_manager(caf::actor_system& sys, fake_manager_hooks h) {
  using namespace actors;
  return sys.spawn([h](manager_actor::pointer self) -> manager_actor::behavior_type {
    auto asked = [self, h] {
      if (h.asked) h.asked(caf::actor_cast<caf::actor_addr>(self->current_sender()));
    };
    return {
        [](load_atom, const std::string&) { return load_report{}; },
        [](replaced_atom, uint32_t, const worker_actor&) {},
        [](joined_atom, uint32_t, const worker_actor&, const joined_worker&) {},
        [](memory_atom, uint32_t, uint64_t) {},
        [asked, h](mload_atom, const std::string& name, const std::string&) -> caf::result<bool> {
          asked();
          return h.mload ? h.mload(name) : caf::result<bool>(true);
        },
        [asked](munload_atom, const std::string&) {
          asked();
          return true;
        },
        [asked](index_atom) {
          asked();
          return model_index{};
        },
        [](poll_atom) {},
        [asked](traffic_atom, const traffic_change&) {
          asked();
          return traffic_report{};
        },
        [](rollchk_atom, const std::string&) {},
        [h](scaled_atom) { return h.scaled ? h.scaled() : scaled_versions{}; },
        [h](scale_atom, const std::string& m, int64_t v, uint32_t n) {
          return h.scale ? h.scale(m, v, n) : true;
        },
        [h](wake_atom, const std::string& m, int64_t v) {
          if (h.wake) h.wake(m, v);
        },
        [](subscr_atom, const scaler_actor&) {},
        [](watch_atom) {},
    };
  });
}

}  // namespace troupe::testing
