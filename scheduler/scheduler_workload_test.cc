// Whole workloads through the scheduler and the fake engine: every request completes, with the
// tokens it generates alone, under memory pressure, priorities, cancellations and several steps in
// flight. FakeServingLoop checks the budget, chunk sizes and block tables of every plan.
#include <algorithm>
#include <cstdio>
#include <map>
#include <ostream>
#include <random>
#include <set>

#include "base/check.h"
#include "gtest/gtest.h"
#include "scheduler/fake_engine.h"
#include "scheduler/fake_serving_loop.h"
#include "scheduler/scheduler.h"

namespace bitserve::scheduler {
namespace {

constexpr int kVocab = 32000;

std::unique_ptr<Scheduler> Make(const SchedulerConfig& config) {
  auto scheduler = Scheduler::Create(config);
  BITSERVE_CHECK(scheduler.ok()) << scheduler.status();
  return *std::move(scheduler);
}

Request RandomRequest(uint64_t id, std::mt19937& rng, int max_prompt, int max_new, int priorities) {
  Request r;
  r.id = id;
  r.prompt_tokens.resize(std::uniform_int_distribution<int>(1, max_prompt)(rng));
  for (int32_t& t : r.prompt_tokens) t = std::uniform_int_distribution<int32_t>(0, kVocab - 1)(rng);
  r.max_new_tokens = std::uniform_int_distribution<int>(1, max_new)(rng);
  r.priority = std::uniform_int_distribution<int>(0, priorities - 1)(rng);
  return r;
}

std::vector<int32_t> Solo(const Request& r) {
  return FakeEngine::SoloOutput(r.prompt_tokens, r.max_new_tokens, kVocab);
}

// Each request alone, with memory to spare, gives exactly what the fake model generates.
TEST(SchedulerWorkload, SoloRunsMatchTheModel) {
  SchedulerConfig config;
  config.max_num_batched_tokens = 32;
  config.max_num_seqs = 4;
  config.block_size = 8;
  config.num_kv_blocks = 64;
  config.max_model_len = 512;
  config.long_prefill_chunk = 32;
  std::mt19937 rng(1);
  for (uint64_t id = 0; id < 20; ++id) {
    auto s = Make(config);
    Request r = RandomRequest(id, rng, 200, 40, 1);
    ASSERT_TRUE(s->Add(r).ok());
    FakeServingLoop loop(*s, kVocab);
    loop.RunToCompletion();
    ASSERT_EQ(loop.finished().size(), 1u);
    EXPECT_EQ(loop.finished()[0].output_tokens, Solo(r)) << "request " << id;
    EXPECT_EQ(s->num_preemptions(), 0u);
  }
}

struct WorkloadCase {
  const char* name;
  int steps_in_flight;
  int num_kv_blocks;
  int priorities;
  bool cancel_some;
  // > 0: prompts start with one of this many shared documents (up to 200 tokens of it), so that
  // prefix caching shares blocks between requests; 0: random prompts.
  int shared_documents = 0;
  bool prefix_caching = true;

  friend void PrintTo(const WorkloadCase& c, std::ostream* os) { *os << c.name; }
};

class RandomWorkload : public ::testing::TestWithParam<WorkloadCase> {};

// 1000 random requests arriving over time: all complete (or are cancelled, as asked) with the
// outputs they have alone, and every block comes back.
TEST_P(RandomWorkload, AllCompleteWithSoloOutputs) {
  const WorkloadCase& c = GetParam();
  SchedulerConfig config;
  config.max_num_batched_tokens = 256;
  config.max_num_seqs = 32;
  config.block_size = 16;
  config.num_kv_blocks = c.num_kv_blocks;
  config.max_model_len = 1024;
  config.max_waiting = 1000;
  config.long_prefill_chunk = 96;
  config.enable_prefix_caching = c.prefix_caching;
  auto s = Make(config);

  constexpr int kRequests = 1000;
  std::mt19937 rng(20240611 + c.steps_in_flight);
  std::vector<std::vector<int32_t>> documents(c.shared_documents);
  for (auto& d : documents) {
    d.resize(200);
    for (int32_t& t : d) t = std::uniform_int_distribution<int32_t>(0, kVocab - 1)(rng);
  }
  std::map<uint64_t, Request> requests;
  for (uint64_t id = 0; id < kRequests; ++id) {
    requests[id] = RandomRequest(id, rng, documents.empty() ? 300 : 60, 64, c.priorities);
    if (!documents.empty()) {
      const auto& d =
          documents[std::uniform_int_distribution<size_t>(0, documents.size() - 1)(rng)];
      const int shared = std::uniform_int_distribution<int>(0, 200)(rng);
      auto& p = requests[id].prompt_tokens;
      p.insert(p.begin(), d.begin(), d.begin() + shared);
    }
  }
  std::set<uint64_t> cancelled;
  FakeServingLoop loop(*s, kVocab, c.steps_in_flight);
  uint64_t next = 0;
  loop.RunToCompletion([&](int tick) {
    // Bursts of arrivals, so that the queue and the KV cache fill up and drain.
    const int arrivals = std::uniform_int_distribution<int>(0, tick % 50 < 25 ? 12 : 1)(rng);
    for (int i = 0; i < arrivals && next < kRequests; ++i, ++next) {
      EXPECT_TRUE(s->Add(requests[next]).ok());
    }
    if (c.cancel_some && next > 0 && std::uniform_int_distribution<int>(0, 9)(rng) == 0) {
      const uint64_t id = std::uniform_int_distribution<uint64_t>(0, next - 1)(rng);
      if (s->FindSequence(id) != nullptr) {
        EXPECT_TRUE(s->Cancel(id).ok());
        cancelled.insert(id);
      }
    }
    return next < kRequests;
  });
  ASSERT_EQ(next, static_cast<uint64_t>(kRequests));
  EXPECT_EQ(loop.finished().size() + cancelled.size(), static_cast<size_t>(kRequests));
  for (const FinishedSequence& f : loop.finished()) {
    EXPECT_EQ(f.output_tokens, Solo(requests[f.id])) << "request " << f.id;
  }
  for (uint64_t id : cancelled) {
    // What was streamed before the cancellation is a prefix of the solo output.
    const std::vector<int32_t> solo = Solo(requests[id]);
    auto it = loop.streamed().find(id);
    if (it == loop.streamed().end()) continue;
    ASSERT_LE(it->second.size(), solo.size());
    EXPECT_TRUE(std::equal(it->second.begin(), it->second.end(), solo.begin())) << id;
  }
  EXPECT_LE(loop.max_tokens_in_a_step(), config.max_num_batched_tokens);
  if (c.num_kv_blocks < 200) {
    EXPECT_GT(s->num_preemptions(), 0u) << "the case meant to put the KV cache under pressure";
    EXPECT_FALSE(loop.preempted().empty());
  }
  if (c.shared_documents > 0 && c.prefix_caching) {
    EXPECT_GT(s->prefix_cache_hits(), s->prefix_cache_queries() / 10)
        << "the shared documents should be found in the cache";
  }
  if (!c.prefix_caching) EXPECT_EQ(s->prefix_cache_hits(), 0u);
  EXPECT_EQ(s->kv_blocks().num_free_blocks(), config.num_kv_blocks) << "blocks not given back";
  std::printf("%s: %d steps, %llu preemptions, %zu cancelled, prefix cache %llu of %llu tokens\n",
              c.name, loop.ticks(), static_cast<unsigned long long>(s->num_preemptions()),
              cancelled.size(), static_cast<unsigned long long>(s->prefix_cache_hits()),
              static_cast<unsigned long long>(s->prefix_cache_queries()));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RandomWorkload,
    ::testing::Values(WorkloadCase{"ample_memory", 1, 2048, 1, false},
                      WorkloadCase{"kv_pressure", 1, 120, 1, false},
                      WorkloadCase{"kv_pressure_priorities", 1, 120, 3, false},
                      WorkloadCase{"three_steps_in_flight", 3, 120, 3, false},
                      WorkloadCase{"cancellations_two_in_flight", 2, 120, 2, true},
                      WorkloadCase{"no_prefix_caching", 1, 120, 1, false, 4, false},
                      WorkloadCase{"shared_prefixes", 1, 2048, 1, false, 4},
                      WorkloadCase{"shared_prefixes_kv_pressure", 1, 120, 2, false, 4},
                      WorkloadCase{"shared_prefixes_in_flight_cancellations", 3, 120, 2, true, 3}),
    [](const auto& info) { return std::string(info.param.name); });

// Preempted requests, told apart from the others: each finishes with exactly its solo output, and
// its tokens were streamed once.
TEST(SchedulerWorkload, PreemptedRequestsFinishWithTheirSoloOutput) {
  SchedulerConfig config;
  config.max_num_batched_tokens = 64;
  config.max_num_seqs = 16;
  config.block_size = 4;
  config.num_kv_blocks = 40;  // 160 tokens for 16 sequences that grow to 60 each
  config.max_model_len = 128;
  config.long_prefill_chunk = 64;
  auto s = Make(config);
  std::mt19937 rng(7);
  std::map<uint64_t, Request> requests;
  for (uint64_t id = 0; id < 16; ++id) {
    requests[id] = RandomRequest(id, rng, 20, 1, 1);
    requests[id].max_new_tokens = 40;
    ASSERT_TRUE(s->Add(requests[id]).ok());
  }
  FakeServingLoop loop(*s, kVocab);
  loop.RunToCompletion();
  EXPECT_GE(loop.preempted().size(), 8u);
  for (uint64_t id : loop.preempted()) {
    EXPECT_EQ(loop.streamed().at(id), Solo(requests[id])) << "request " << id;
  }
  EXPECT_EQ(loop.finished().size(), 16u);
}

// A long prompt in a steady stream of short requests still completes, in about the time its own
// chunks take, and the short requests keep being served meanwhile.
TEST(SchedulerWorkload, LongPromptIsNotStarvedByShortRequests) {
  SchedulerConfig config;
  config.max_num_batched_tokens = 64;
  config.max_num_seqs = 16;
  config.block_size = 16;
  config.num_kv_blocks = 200;  // 3200 tokens
  config.max_model_len = 4096;
  config.long_prefill_chunk = 32;
  auto s = Make(config);
  std::mt19937 rng(3);
  std::map<uint64_t, Request> requests;
  uint64_t next = 0;
  auto add = [&](Request r) {
    requests[r.id] = r;
    ASSERT_TRUE(s->Add(std::move(r)).ok());
  };
  for (int i = 0; i < 10; ++i) add(RandomRequest(next++, rng, 40, 30, 1));
  const uint64_t long_id = next++;
  Request long_prompt = RandomRequest(long_id, rng, 1, 10, 1);
  long_prompt.prompt_tokens.assign(2500, 17);
  long_prompt.max_new_tokens = 10;
  add(long_prompt);
  FakeServingLoop loop(*s, kVocab);
  loop.RunToCompletion([&](int tick) {
    // Two new short requests every step until the long one is done, then the stream stops.
    if (loop.finish_tick().contains(long_id) || s->num_waiting() >= 200) return false;
    for (int i = 0; i < 2; ++i) add(RandomRequest(next++, rng, 40, 30, 1));
    return false;  // the long prompt is unfinished until then, so the loop goes on anyway
  });
  ASSERT_TRUE(loop.finish_tick().contains(long_id));
  // 2500 tokens in chunks of at most 32 (less when the decodes of 15 others share the step).
  EXPECT_LT(loop.finish_tick().at(long_id), 2500 / 32 * 4);
  EXPECT_EQ(loop.streamed().at(long_id), Solo(long_prompt));
  EXPECT_GT(next, 100u);
  for (const FinishedSequence& f : loop.finished()) {
    EXPECT_EQ(f.output_tokens, Solo(requests[f.id])) << f.id;
  }
  EXPECT_EQ(loop.finished().size(), requests.size());
}

// The same when memory is what is short: the long prompt's first chunk needs many blocks, and short
// requests that would fit are not let past it, or it would never find them free.
TEST(SchedulerWorkload, LongPromptIsNotStarvedWhenMemoryIsTight) {
  SchedulerConfig config;
  config.max_num_batched_tokens = 512;
  config.max_num_seqs = 16;
  config.block_size = 16;
  config.num_kv_blocks = 64;  // 1024 tokens; 16 short requests want about 1300
  config.max_model_len = 1024;
  config.long_prefill_chunk = 512;
  auto s = Make(config);
  std::mt19937 rng(9);
  std::map<uint64_t, Request> requests;
  uint64_t next = 0;
  auto add_short = [&] {
    Request r = RandomRequest(next++, rng, 60, 40, 1);
    requests[r.id] = r;
    ASSERT_TRUE(s->Add(std::move(r)).ok());
  };
  for (int i = 0; i < 16; ++i) add_short();
  const uint64_t long_id = next++;
  Request long_prompt{long_id, std::vector<int32_t>(900, 5), 10, 0};
  requests[long_id] = long_prompt;
  ASSERT_TRUE(s->Add(long_prompt).ok());
  FakeServingLoop loop(*s, kVocab);
  loop.RunToCompletion(
      [&](int tick) {
        if (!loop.finish_tick().contains(long_id) && s->num_waiting() < 200) add_short();
        return false;  // as above
      },
      /*max_ticks=*/3000);
  ASSERT_TRUE(loop.finish_tick().contains(long_id));
  EXPECT_LT(loop.finish_tick().at(long_id), 200);
  EXPECT_EQ(loop.streamed().at(long_id), Solo(long_prompt));
  EXPECT_EQ(loop.finished().size(), requests.size());
}

// Within a priority, requests start in arrival order however they are mixed; a higher priority
// starts before every lower one that waited with it.
TEST(SchedulerWorkload, StartOrderFollowsPriorityThenArrival) {
  SchedulerConfig config;
  config.max_num_batched_tokens = 16;
  config.max_num_seqs = 2;
  config.block_size = 4;
  config.num_kv_blocks = 100;
  config.max_model_len = 64;
  config.long_prefill_chunk = 16;
  auto s = Make(config);
  std::mt19937 rng(11);
  std::vector<Request> requests;
  for (uint64_t id = 0; id < 60; ++id) {
    requests.push_back(RandomRequest(id, rng, 10, 8, 3));
    ASSERT_TRUE(s->Add(requests.back()).ok());
  }
  FakeServingLoop loop(*s, kVocab);
  loop.RunToCompletion();
  ASSERT_EQ(loop.finished().size(), 60u);
  for (const Request& a : requests) {
    for (const Request& b : requests) {
      const int ta = loop.first_token_tick().at(a.id), tb = loop.first_token_tick().at(b.id);
      if (a.priority > b.priority || (a.priority == b.priority && a.id < b.id)) {
        EXPECT_LE(ta, tb) << a.id << " (priority " << a.priority << ") before " << b.id
                          << " (priority " << b.priority << ")";
      }
    }
  }
}

// Stop tokens are the caller's: it calls Finish, and the output ends at the stop token.
TEST(SchedulerWorkload, CallerStopsSequencesWithFinish) {
  SchedulerConfig config;
  config.max_num_batched_tokens = 128;
  config.max_num_seqs = 16;
  config.block_size = 8;
  config.num_kv_blocks = 64;
  config.max_model_len = 512;
  config.long_prefill_chunk = 64;
  auto s = Make(config);
  constexpr int kSmallVocab = 7;  // so that the stop token comes up often
  std::mt19937 rng(5);
  std::map<uint64_t, Request> requests;
  for (uint64_t id = 0; id < 100; ++id) {
    requests[id] = RandomRequest(id, rng, 50, 30, 2);
    for (int32_t& t : requests[id].prompt_tokens) t %= kSmallVocab;
    ASSERT_TRUE(s->Add(requests[id]).ok());
  }
  FakeServingLoop loop(*s, kSmallVocab, /*steps_in_flight=*/2);
  loop.set_stop_token(0);
  loop.RunToCompletion();
  EXPECT_GT(loop.stopped().size(), 10u);
  EXPECT_EQ(loop.stopped().size() + loop.finished().size(), 100u);
  for (uint64_t id : loop.stopped()) {
    const std::vector<int32_t> solo = FakeEngine::SoloOutput(
        requests[id].prompt_tokens, requests[id].max_new_tokens, kSmallVocab);
    const std::vector<int32_t>& out = loop.streamed().at(id);
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(out.back(), 0);
    EXPECT_TRUE(std::equal(out.begin(), out.end(), solo.begin())) << id;
  }
}

}  // namespace
}  // namespace bitserve::scheduler
