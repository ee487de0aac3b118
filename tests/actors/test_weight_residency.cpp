// A worker's memory budget on the CPU backend (serving/weight_residency.hpp): replicas counted,
// idle weights evicted least recently used first, paged back in before a batch, held weights
// never evicted, loads that cannot fit refused; and the same through the worker actor on the
// test coordinator, with the metrics it counts. On the CPU nothing moves (the weights are host
// memory already: runtime/device.hpp), but every decision and every check runs, and a run of
// evicted weights is refused, so a missing page-in fails these tests.
#include "serving/weight_residency.hpp"

#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>

#include "actors/cpu_worker.hpp"
#include "actors/worker.hpp"
#include "serving/metrics.hpp"
#include "serving/replica.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::actors {

using serving::batch;
using serving::replica;
using serving::replica_memory;
using serving::serving_metrics;
using serving::time_point;
using serving::version_metrics;
using serving::weight_residency;

namespace {

using testing::owned_job;

/// Three MLPs of different sizes in a temporary directory.
struct three_models {
  three_models() {
    for (int i = 0; i < 3; ++i) {
      weights.push_back(testing::make_mlp_weights(32 + 16 * i, 8, 50 + static_cast<uint32_t>(i)));
      dir.write(name(i) + ".onnx", testing::mlp_model_bytes(weights.back()));
    }
  }
  static std::string name(int i) { return "m" + std::to_string(i); }
  std::string path(int i) const { return (dir.path() / (name(i) + ".onnx")).string(); }

  testing::temp_dir dir;
  std::vector<testing::mlp_weights> weights;
};

replica::options options_for(const three_models& m, int i) {
  replica::options o;
  o.model_name = three_models::name(i);
  o.version = 1;
  o.model_path = m.path(i);
  o.config.max_batch_size = 2;
  o.warmup_runs = 1;
  o.evictable_weights = true;
  return o;
}

std::shared_ptr<replica> make(const replica::options& o) {
  auto r = replica::create(o);
  EXPECT_TRUE(r.has_value()) << r.error().to_string();
  return r ? std::shared_ptr<replica>(std::move(*r)) : nullptr;
}

/// Runs one job of `rows` rows of model `i` on `r` and checks it against the reference;
/// returns the run's status.
status run_checked(replica& r, const three_models& m, int i, int64_t rows, uint32_t seed) {
  owned_job j(three_models::name(i), {{rows, m.weights[static_cast<size_t>(i)].in}}, caf::actor(),
              time_point{}, seed);
  batch b;
  b.jobs.push_back(&j.job);
  b.rows = rows;
  const status s = r.run(b);
  if (s.is_ok()) testing::expect_mlp_batch(b, m.weights[static_cast<size_t>(i)], j);
  return s;
}

class weight_residency_cpu : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      replicas_.push_back(make(options_for(models_, i)));
      ASSERT_TRUE(replicas_.back());
      const replica_memory mem = replicas_.back()->memory();
      own_.push_back(mem.own_device_bytes);
      weights_.push_back(mem.weights_footprint_bytes);
      arenas_.push_back(mem.arena_footprint_bytes);
      ASSERT_GT(mem.weights_footprint_bytes, 0u);
      ASSERT_GT(mem.arena_footprint_bytes, 0u) << "a budget makes the arenas evictable too";
      ASSERT_LE(mem.arena_reserved_bytes, mem.own_device_bytes);
    }
  }

  /// Room for every replica's own bytes and the weights of the two largest.
  size_t budget_for_two() const { return own_[0] + own_[1] + own_[2] + weights_[1] + weights_[2]; }

  three_models models_;
  std::vector<std::shared_ptr<replica>> replicas_;
  std::vector<size_t> own_, weights_, arenas_;
};

TEST_F(weight_residency_cpu, evicts_the_least_recently_used_idle_weights_and_pages_them_back) {
  serving_metrics metrics;
  weight_residency::options o;
  o.budget_bytes = budget_for_two();
  o.device_label = "cpu";
  o.metrics = &metrics;
  int moves = 0;
  o.moved = [&moves] { ++moves; };
  weight_residency w(o);
  ASSERT_TRUE(w.admit(0, replicas_[0]).is_ok());
  ASSERT_TRUE(w.admit(1, replicas_[1]).is_ok());
  EXPECT_EQ(w.evictions(), 0u);
  ASSERT_TRUE(w.admit(2, replicas_[2]).is_ok());
  // Three sets of weights do not fit: the oldest (model 0) went, its arenas with them.
  EXPECT_EQ(w.evictions(), 1u);
  EXPECT_FALSE(replicas_[0]->weights_resident());
  EXPECT_FALSE(replicas_[0]->arenas_resident());
  EXPECT_TRUE(replicas_[1]->arenas_resident());
  EXPECT_TRUE(replicas_[1]->weights_resident());
  EXPECT_TRUE(replicas_[2]->weights_resident());
  EXPECT_LE(w.resident_bytes(), o.budget_bytes);
  EXPECT_GT(moves, 0);

  // Evicted weights are refused, loudly: the run needs a page-in first.
  const status refused = run_checked(*replicas_[0], models_, 0, 1, 1);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.code(), error_code::unavailable) << refused.to_string();

  // A batch for model 0: its weights come back, model 1's (now the oldest) go.
  ASSERT_TRUE(w.acquire(*replicas_[0], "a batch").is_ok());
  EXPECT_TRUE(replicas_[0]->weights_resident());
  EXPECT_TRUE(replicas_[0]->arenas_resident());
  EXPECT_FALSE(replicas_[1]->weights_resident());
  EXPECT_FALSE(replicas_[1]->arenas_resident());
  EXPECT_EQ(w.page_ins(), 1u);
  EXPECT_EQ(w.evictions(), 2u);
  EXPECT_TRUE(run_checked(*replicas_[0], models_, 0, 2, 2).is_ok());
  w.release(*replicas_[0]);
  EXPECT_LE(w.resident_bytes(), o.budget_bytes);

  // Round robin over all three: every batch right, every model paged in when it comes round.
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(w.acquire(*replicas_[static_cast<size_t>(i)], "a batch").is_ok());
      EXPECT_TRUE(run_checked(*replicas_[static_cast<size_t>(i)], models_, i, 1 + (i % 2),
                              static_cast<uint32_t>(10 * round + i))
                      .is_ok());
      w.release(*replicas_[static_cast<size_t>(i)]);
      EXPECT_LE(w.resident_bytes(), o.budget_bytes);
    }
  EXPECT_GE(w.page_ins(), 4u);

  // The metrics say the same as the counters.
  double evictions = 0, page_ins = 0;
  uint64_t observed = 0;
  for (int i = 0; i < 3; ++i) {
    auto v = metrics.for_version(three_models::name(i), 1);
    evictions += v->weight_evictions->Value();
    page_ins += v->weight_page_ins->Value();
    observed += v->weight_page_in_s->Collect().histogram.sample_count;
  }
  EXPECT_EQ(evictions, static_cast<double>(w.evictions()));
  EXPECT_EQ(page_ins, static_cast<double>(w.page_ins()));
  EXPECT_EQ(observed, w.page_ins());
}

TEST_F(weight_residency_cpu, held_weights_stay_and_a_load_that_cannot_fit_is_refused) {
  weight_residency::options o;
  o.budget_bytes = budget_for_two();
  o.device_label = "cpu";
  weight_residency w(o);
  ASSERT_TRUE(w.admit(0, replicas_[0]).is_ok());
  ASSERT_TRUE(w.admit(1, replicas_[1]).is_ok());
  // Both held (a batch or a build on each): the third cannot make room.
  ASSERT_TRUE(w.acquire(*replicas_[0], "a build").is_ok());
  ASSERT_TRUE(w.acquire(*replicas_[1], "a batch").is_ok());
  const status refused = w.admit(2, replicas_[2]);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.code(), error_code::out_of_memory);
  EXPECT_NE(refused.message().find("budget"), std::string::npos) << refused.to_string();
  EXPECT_NE(refused.message().find("m2"), std::string::npos) << refused.to_string();
  EXPECT_EQ(w.evictions(), 0u) << "nothing is evicted for a load that fails anyway";
  EXPECT_TRUE(replicas_[0]->weights_resident() && replicas_[1]->weights_resident());
  // One let go: now it fits, and the idle one goes.
  w.release(*replicas_[0]);
  ASSERT_TRUE(w.admit(2, replicas_[2]).is_ok());
  EXPECT_FALSE(replicas_[0]->weights_resident());
  EXPECT_TRUE(replicas_[1]->weights_resident());
  w.release(*replicas_[1]);

  // Unloading frees the budget: model 0 comes back without evicting anyone.
  w.remove(2);
  ASSERT_TRUE(w.acquire(*replicas_[0], "a batch").is_ok());
  EXPECT_TRUE(replicas_[1]->weights_resident());
  w.release(*replicas_[0]);
  EXPECT_EQ(w.evictions(), 1u);
}

TEST_F(weight_residency_cpu, a_budget_for_one_model_in_use_serves_three_by_evicting_arenas_too) {
  // Every replica's fixed bytes and room for one model's weights and arenas: before arenas were
  // evictable, every replica's arenas stayed and the second load was refused.
  size_t budget = 0, largest = 0;
  for (size_t i = 0; i < 3; ++i) {
    budget += own_[i] - arenas_[i];
    largest = std::max(largest, weights_[i] + arenas_[i]);
  }
  weight_residency::options o;
  o.budget_bytes = budget + largest;
  o.device_label = "cpu";
  weight_residency w(o);
  for (uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(w.admit(i, replicas_[i]).is_ok()) << i;
  EXPECT_EQ(w.evictions(), 2u);
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 3; ++i) {
      replica& r = *replicas_[static_cast<size_t>(i)];
      ASSERT_TRUE(w.acquire(r, "a batch").is_ok());
      for (int k = 0; k < 3; ++k)
        EXPECT_EQ(replicas_[static_cast<size_t>(k)]->arenas_resident(), k == i)
            << "only the model in use holds its arenas";
      EXPECT_TRUE(run_checked(r, models_, i, 2, static_cast<uint32_t>(20 + 3 * round + i)).is_ok());
      w.release(r);
      EXPECT_LE(w.resident_bytes(), o.budget_bytes);
    }
  // Arenas discarded: a run is refused (not run on memory that is gone), as for weights.
  replica& away = *replicas_[0];
  ASSERT_FALSE(away.arenas_resident());
  ASSERT_TRUE(away.page_in_weights());  // weights back, arenas not: still refused
  const status refused = run_checked(away, models_, 0, 1, 3);
  EXPECT_EQ(refused.code(), error_code::unavailable) << refused.to_string();
  EXPECT_NE(refused.message().find("arenas"), std::string::npos) << refused.message();
}

TEST_F(weight_residency_cpu, instances_sharing_weights_move_together) {
  replica::options o = options_for(models_, 2);
  o.weights_from = replicas_[2].get();
  auto twin = make(o);
  ASSERT_TRUE(twin);
  weight_residency::options wo;
  // Own bytes of the three replicas and the weights of model 2 once, not model 0's too. Were
  // the twin to count model 2's weights again, evicting model 0 would not make room.
  wo.budget_bytes = own_[0] + 2 * own_[2] + weights_[2];
  wo.device_label = "cpu";
  weight_residency w(wo);
  ASSERT_TRUE(w.admit(0, replicas_[0]).is_ok());
  ASSERT_TRUE(w.admit(2, replicas_[2]).is_ok());
  ASSERT_TRUE(w.admit(3, twin).is_ok()) << "the twin adds its own bytes, not the weights again";
  EXPECT_FALSE(replicas_[0]->weights_resident());
  EXPECT_EQ(w.evictions(), 1u);
  // Model 0 back: model 2's weights go for both of its replicas.
  ASSERT_TRUE(w.acquire(*replicas_[0], "a batch").is_ok());
  w.release(*replicas_[0]);
  EXPECT_FALSE(replicas_[2]->weights_resident());
  EXPECT_FALSE(twin->weights_resident());
  EXPECT_FALSE(replicas_[2]->arenas_resident());
  EXPECT_FALSE(twin->arenas_resident()) << "each instance's own arenas go with the group";
  // A batch on the twin brings them back for both.
  ASSERT_TRUE(w.acquire(*twin, "a batch").is_ok());
  EXPECT_TRUE(twin->arenas_resident());
  EXPECT_TRUE(replicas_[2]->arenas_resident());
  EXPECT_TRUE(run_checked(*twin, models_, 2, 2, 5).is_ok());
  w.release(*twin);
  EXPECT_TRUE(replicas_[2]->weights_resident());
  EXPECT_TRUE(run_checked(*replicas_[2], models_, 2, 1, 6).is_ok());
}

/// Through the worker actor, on the test coordinator: loads under a budget that holds two of
/// three models' weights, batches round robin, each right; evictions and page-ins counted.
class worker_budget : public testing::actor_fixture {
 protected:
  void start(size_t budget) {
    worker_options o;
    o.kind = worker_kind::cpu;
    o.compute_threads = 1;
    o.background_model_reads = false;  // the test coordinator: everything on the worker
    o.memory_budget_bytes = budget;
    o.metrics = &metrics_;
    worker_ = spawn_worker(sys_, o, /*detached=*/false);
  }

  void TearDown() override {
    if (worker_) caf::anon_send_exit(worker_, caf::exit_reason::user_shutdown);
    run();
  }

  expected<replica_info> load(int i) {
    replica_spec s;
    s.model = three_models::name(i);
    s.version = 1;
    s.path = models_.path(i);
    s.config.max_batch_size = 2;
    s.warmup_runs = 1;
    return load_replica(worker_, s);
  }

  /// One batch of model `i` on replica `id`: its status, outputs checked when OK.
  status run_batch(int i, uint32_t id, int64_t rows, uint32_t seed) {
    owned_job j(three_models::name(i), {{rows, models_.weights[static_cast<size_t>(i)].in}},
                caf::actor(), now(), seed);
    auto b = std::make_shared<batch>();
    b->jobs.push_back(&j.job);
    b->rows = rows;
    b->replica_id = id;
    if (!run_batch_on(worker_, b)) return internal_error("no (done) from the worker");
    if (b->result.is_ok())
      testing::expect_mlp_batch(*b, models_.weights[static_cast<size_t>(i)], j);
    return b->result;
  }

  double counter(int i, prometheus::Counter* version_metrics::*which) {
    return (metrics_.for_version(three_models::name(i), 1).get()->*which)->Value();
  }

  three_models models_;
  serving_metrics metrics_;
  worker_actor worker_;
};

TEST_F(worker_budget, serves_three_models_from_a_budget_that_holds_two) {
  // The budget from the replicas' own figures: all three's own bytes, two sets of weights.
  // Made with the worker's thread setup (one OpenMP thread: kernels' scratch depends on it);
  // the test coordinator runs the worker on this thread too.
  ASSERT_TRUE(cpu_device_traits(1).thread_setup().is_ok());
  size_t own = 0, largest_two = 0;
  for (int i = 0; i < 3; ++i) {
    auto r = make(options_for(models_, i));
    ASSERT_TRUE(r);
    own += r->memory().own_device_bytes;
    if (i > 0) largest_two += r->memory().weights_footprint_bytes;
  }
  start(own + largest_two);
  std::vector<uint32_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto info = load(i);
    ASSERT_TRUE(info.has_value()) << info.error().to_string();
    ids.push_back(info->id);
  }
  EXPECT_EQ(counter(0, &version_metrics::weight_evictions), 1) << "model 0 made room for 2";
  for (int round = 0; round < 4; ++round)
    for (int i = 0; i < 3; ++i) {
      const status s = run_batch(i, ids[static_cast<size_t>(i)], 1 + ((round + i) % 2),
                                 static_cast<uint32_t>(100 + 10 * round + i));
      ASSERT_TRUE(s.is_ok()) << "model " << i << " round " << round << ": " << s.to_string();
    }
  double evictions = 0, page_ins = 0;
  for (int i = 0; i < 3; ++i) {
    evictions += counter(i, &version_metrics::weight_evictions);
    page_ins += counter(i, &version_metrics::weight_page_ins);
  }
  // Round robin over three with room for two: every batch after the first round pages in.
  EXPECT_GE(page_ins, 10);
  EXPECT_EQ(evictions, page_ins + 1);

  // Unload model 1: its share of the budget goes with it, and models 0 and 2 fit side by side.
  caf::anon_send(worker_, unload_atom::value, ids[1]);
  run();
  const double before = evictions;
  for (int i : {0, 2, 0, 2}) {
    const status s = run_batch(i, ids[static_cast<size_t>(i)], 1, 7);
    ASSERT_TRUE(s.is_ok()) << s.to_string();
  }
  double after = 0;
  for (int i = 0; i < 3; ++i) after += counter(i, &version_metrics::weight_evictions);
  EXPECT_EQ(after, before) << "two models fit the budget";
}

TEST_F(worker_budget, a_load_larger_than_the_budget_fails_out_of_memory) {
  ASSERT_TRUE(cpu_device_traits(1).thread_setup().is_ok());
  auto r = make(options_for(models_, 0));
  ASSERT_TRUE(r);
  const replica_memory m = r->memory();
  start(m.own_device_bytes + m.weights_footprint_bytes);  // exactly model 0
  auto first = load(0);
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  auto second = load(2);  // larger weights than the budget holds, even with model 0 evicted
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), error_code::out_of_memory) << second.error().to_string();
  EXPECT_NE(second.error().message().find("budget"), std::string::npos)
      << second.error().to_string();
  // Model 0 still serves, and was not evicted for nothing.
  EXPECT_TRUE(run_batch(0, first->id, 2, 3).is_ok());
  EXPECT_EQ(counter(0, &version_metrics::weight_evictions), 0);
}

}  // namespace
}  // namespace troupe::actors
