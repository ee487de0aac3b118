// The node's metrics registry (serving/metrics.cpp): what a scrape holds before and after a model
// version exists, and that no series carries an empty label value.
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <string>

#include "serving/metrics.hpp"

namespace troupe::serving {
namespace {

std::string scrape(const serving_metrics& m) {
  return prometheus::TextSerializer().Serialize(m.registry()->Collect());
}

TEST(ServingMetrics, NoVersionSeriesBeforeAVersionExists) {
  serving_metrics m;
  const std::string text = scrape(m);
  // Placeholder series (troupe_model_ready{model=""} 0) made TroupeModelNotReady fire on a
  // healthy node: a version's series appear with the version, never before.
  EXPECT_EQ(text.find("troupe_model_ready{"), std::string::npos) << text;
  EXPECT_EQ(text.find("troupe_requests_total{"), std::string::npos) << text;
  EXPECT_EQ(text.find("=\"\""), std::string::npos) << text;
  EXPECT_NE(text.find("troupe_inflight_requests 0"), std::string::npos) << text;
  EXPECT_NE(text.find("troupe_worker_restarts_total 0"), std::string::npos) << text;
}

TEST(ServingMetrics, UnroutedRequestsAreCountedWithoutAModelLabel) {
  serving_metrics m;
  m.unrouted().count(error_code::not_found);
  m.unrouted().record_request(error_code::not_found, 0.1);  // the latency has no model: dropped
  m.unrouted().set_ready(false);
  const std::string text = scrape(m);
  EXPECT_NE(text.find("troupe_unrouted_requests_total{outcome=\"not_found\"} 2"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("troupe_request_latency_seconds_count{"), std::string::npos) << text;
  EXPECT_EQ(text.find("troupe_model_ready{"), std::string::npos) << text;
}

TEST(ServingMetrics, VersionSeriesCarryModelAndVersion) {
  serving_metrics m;
  auto v = m.for_version("mlp", 2);
  v->set_ready(true);
  v->count(error_code::ok);
  v->observe_batch(3);
  v->count_shape_cache_evictions(2);
  m.set_worker_memory(1, "cuda:0", 100, 10);
  const std::string text = scrape(m);
  EXPECT_NE(text.find("troupe_shape_cache_evictions_total{model=\"mlp\",version=\"2\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("troupe_model_ready{model=\"mlp\",version=\"2\"} 1"), std::string::npos)
      << text;
  EXPECT_NE(text.find("troupe_requests_total{model=\"mlp\",outcome=\"ok\",version=\"2\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("troupe_batch_size_count{model=\"mlp\",version=\"2\"} 1"), std::string::npos)
      << text;
  EXPECT_NE(text.find("troupe_pool_bytes{device=\"cuda:0\",worker=\"1\"} 100"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("=\"\""), std::string::npos) << text;
}

TEST(ServingMetrics, FaultsFiredByKindAndSite) {
  serving_metrics m;
  EXPECT_EQ(scrape(m).find("troupe_faults_fired_total{"), std::string::npos)
      << "no series until a fault fires";
  m.count_fault_fired("delay", "frontend_router");
  m.count_fault_fired("delay", "frontend_router");
  m.count_fault_fired("hang", "worker:1");
  const std::string text = scrape(m);
  EXPECT_NE(text.find("troupe_faults_fired_total{kind=\"delay\",site=\"frontend_router\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("troupe_faults_fired_total{kind=\"hang\",site=\"worker:1\"} 1"),
            std::string::npos)
      << text;
}

TEST(ServingMetrics, InflightIsTheSumOverTheDoors) {
  serving_metrics m;
  m.set_inflight(serving_metrics::door::zeromq, 3);
  m.set_inflight(serving_metrics::door::kserve, 4);
  EXPECT_NE(scrape(m).find("troupe_inflight_requests 7"), std::string::npos) << scrape(m);
  m.set_inflight(serving_metrics::door::zeromq, 0);
  EXPECT_NE(scrape(m).find("troupe_inflight_requests 4"), std::string::npos) << scrape(m);
}

}  // namespace
}  // namespace troupe::serving
