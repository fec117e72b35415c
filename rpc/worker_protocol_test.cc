// The worker protocol's conversions: a batch survives encode/decode exactly (penalty state only
// when a penalty needs it), and a malformed plan or result is an error naming what is wrong.
#include "rpc/worker_protocol.h"

#include <limits>

#include "gtest/gtest.h"

namespace bitserve::rpc {
namespace {

TEST(WorkerProtocolTest, StepRoundTrip) {
  const std::vector<int32_t> t0 = {5, 6, 7}, b0 = {3}, t1 = {9}, b1 = {1, 2};
  const std::vector<BatchEntry> entries = {{0, t0, b0, LogitsWanted::kNone},
                                           {17, t1, b1, LogitsWanted::kLast}};
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_k = 40;
  p.repetition_penalty = 1.2f;
  p.top_logprobs = 2;
  const std::vector<int32_t> prompt = {1, 2}, output = {4};
  const std::vector<SampleSpec> samples = {{&p, 99, 3, prompt, output}};
  wire::StepPlan plan;
  EncodeStep(entries, samples, &plan);
  DecodedStep d;
  ASSERT_TRUE(DecodeStep(plan, &d).ok());
  ASSERT_EQ(d.entries.size(), 2u);
  EXPECT_EQ(std::vector<int32_t>(d.entries[0].tokens.begin(), d.entries[0].tokens.end()), t0);
  EXPECT_EQ(d.entries[1].start_position, 17);
  EXPECT_EQ(std::vector<int32_t>(d.entries[1].block_table.begin(), d.entries[1].block_table.end()),
            b1);
  EXPECT_EQ(d.entries[0].logits, LogitsWanted::kNone);
  ASSERT_EQ(d.samples.size(), 1u);
  EXPECT_EQ(d.sampled_seq_ids, std::vector<uint64_t>{1});
  const SampleSpec& s = d.samples[0];
  EXPECT_EQ(s.seed, 99u);
  EXPECT_EQ(s.draw_index, 3);
  EXPECT_EQ(s.params->temperature, 0.7f);
  EXPECT_EQ(s.params->top_k, 40);
  EXPECT_EQ(s.params->top_logprobs, 2);
  EXPECT_EQ(std::vector<int32_t>(s.prompt.begin(), s.prompt.end()), prompt);
  EXPECT_EQ(std::vector<int32_t>(s.output.begin(), s.output.end()), output);

  // Without penalties the histories stay home.
  SamplingParams plain;
  const std::vector<SampleSpec> plain_samples = {{&plain, 1, 0, prompt, output}};
  wire::StepPlan light;
  EncodeStep(entries, plain_samples, &light);
  EXPECT_EQ(light.entries(1).sampling().prompt_token_ids_size(), 0);
  EXPECT_EQ(light.entries(1).sampling().output_token_ids_size(), 0);
}

TEST(WorkerProtocolTest, MalformedPlansAreErrorsNamingTheEntry) {
  DecodedStep d;
  wire::StepPlan empty_tokens;
  empty_tokens.set_step_id(4);
  empty_tokens.add_entries()->add_block_table(0);
  absl::Status s = DecodeStep(empty_tokens, &d);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("step 4 entry 0: no token_ids"), std::string::npos) << s;

  wire::StepPlan bad_sampling;
  wire::StepEntry* e = bad_sampling.add_entries();
  e->add_token_ids(1);
  e->set_logits(wire::LOGITS_WANTED_LAST);
  e->mutable_sampling()->set_temperature(-1);
  e->mutable_sampling()->set_top_p(1);
  e->mutable_sampling()->set_repetition_penalty(1);
  s = DecodeStep(bad_sampling, &d);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("temperature"), std::string::npos) << s;

  wire::StepPlan bad_enum;
  wire::StepEntry* f = bad_enum.add_entries();
  f->add_token_ids(1);
  f->set_logits(static_cast<wire::LogitsWanted>(7));
  EXPECT_EQ(DecodeStep(bad_enum, &d).code(), absl::StatusCode::kInvalidArgument);
}

TEST(WorkerProtocolTest, ResultsAndStatusesRoundTrip) {
  std::vector<SampleResult> results(2);
  results[0] = {11, -0.5f, {{11, -0.5f}, {3, -2.0f}}};
  results[1] = {12, -0.1f, {}};
  const std::vector<uint64_t> ids = {0, 2};
  wire::StepResult r;
  EncodeResults(results, ids, &r);
  auto back = DecodeResults(r, 2, /*vocab_size=*/100);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)[0].token, 11);
  EXPECT_EQ((*back)[0].top_logprobs.size(), 2u);
  EXPECT_EQ((*back)[1].logprob, -0.1f);
  EXPECT_EQ(DecodeResults(r, 3, 100).status().code(), absl::StatusCode::kInvalidArgument);

  const absl::Status lost = absl::UnavailableError("gone");
  EXPECT_EQ(StatusFromProto(StatusToProto(lost)), lost);
  EXPECT_TRUE(StatusFromProto(StatusToProto(absl::OkStatus())).ok());
  wire::Status odd;
  odd.set_code(999);
  odd.set_message("from a newer peer");
  EXPECT_EQ(StatusFromProto(odd).code(), absl::StatusCode::kUnknown);
}

// A worker's sampled token goes on into the sequence and the next plan: one outside the
// vocabulary, as a token or an alternative, is refused where it arrives.
TEST(WorkerProtocolTest, ResultsOutsideTheVocabularyAreRefused) {
  wire::StepResult r;
  r.set_step_id(5);
  r.add_tokens()->set_token_id(-3);
  absl::Status s = DecodeResults(r, 1, 100).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("step 5 token 0: token id -3 is outside the vocabulary [0, 100)"),
            std::string::npos)
      << s;
  r.mutable_tokens(0)->set_token_id(100);
  EXPECT_EQ(DecodeResults(r, 1, 100).status().code(), absl::StatusCode::kInvalidArgument);
  r.mutable_tokens(0)->set_token_id(99);
  r.mutable_tokens(0)->add_top_logprobs()->set_token_id(1 << 30);
  s = DecodeResults(r, 1, 100).status();
  EXPECT_NE(s.message().find("top_logprobs token id 1073741824 is outside"), std::string::npos)
      << s;
}

// The coordinator keeps a metric series per (layer, expert) a worker reports: a report beyond the
// model is refused instead of making series without bound.
TEST(WorkerProtocolTest, ExpertLoadBeyondTheModelIsRefused) {
  wire::StepResult r;
  wire::ExpertLoad* load = r.add_expert_load();
  load->set_layer(3);
  for (int e = 0; e < 8; ++e) load->add_rows(1);
  EXPECT_TRUE(CheckExpertLoad(r, /*num_layers=*/4, /*num_experts=*/8).ok());
  EXPECT_FALSE(CheckExpertLoad(r, 4, 7).ok());
  load->set_layer(4);
  absl::Status s = CheckExpertLoad(r, 4, 8);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("expert_load of layer 4 with 8 experts"), std::string::npos) << s;
  load->set_layer(-1);
  EXPECT_FALSE(CheckExpertLoad(r, 4, 8).ok());
}

// The expert group an Assignment places a worker in: the ranks of its slice of the world. A
// group that does not fit was computed in int (a large group index overflowed) and sized by the
// claimed group size alone (2^31 - 1 ranks: an 8 GB vector) before the exchange checked it.
TEST(WorkerProtocolTest, ExpertGroupRanksFitTheWorld) {
  wire::Assignment a;
  a.set_world_size(4);
  wire::ModelShard& shard = *a.mutable_shard();
  shard.set_expert_group(1);
  shard.set_expert_group_size(2);
  shard.set_rank_in_expert_group(1);
  for (int e = 0; e < 4; ++e) shard.add_expert_owner(e % 2);
  auto ranks = ExpertGroupRanks(a);
  ASSERT_TRUE(ranks.ok()) << ranks.status();
  EXPECT_EQ(*ranks, (std::vector<int>{2, 3}));

  wire::Assignment single;
  single.set_world_size(1);
  ASSERT_TRUE(ExpertGroupRanks(single).ok());
  EXPECT_EQ(*ExpertGroupRanks(single), std::vector<int>{0});

  auto fails_with = [](const wire::Assignment& bad, const std::string& text) {
    const absl::Status s = ExpertGroupRanks(bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(s.message().find(text), std::string::npos) << s;
  };
  wire::Assignment overflow = a;
  overflow.mutable_shard()->set_expert_group(1 << 30);
  overflow.mutable_shard()->set_expert_group_size(4);
  fails_with(overflow, "expert group 1073741824 of 4 ranks does not fit a world of 4");
  wire::Assignment huge = a;
  huge.set_world_size(std::numeric_limits<int32_t>::max());
  huge.mutable_shard()->set_expert_group(0);
  huge.mutable_shard()->set_expert_group_size(std::numeric_limits<int32_t>::max());
  fails_with(huge, "expert_group_size: 2147483647 ranks for 4 experts");
  wire::Assignment negative = a;
  negative.mutable_shard()->set_expert_group_size(-2);
  fails_with(negative, "of -2 ranks does not fit");
  wire::Assignment outside = a;
  outside.mutable_shard()->set_rank_in_expert_group(2);
  fails_with(outside, "rank_in_expert_group: 2 is outside a group of 2");
  wire::Assignment no_world = a;
  no_world.set_world_size(0);
  fails_with(no_world, "Assignment.world_size: 0");
}

// Element types cross the protocol as enums: every type both ways, an unspecified KV type is the
// device's default, anything unknown is refused naming the field.
TEST(WorkerProtocolTest, ElementTypesRoundTripAndUnknownOnesAreRefused) {
  for (KvDtype d : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4}) {
    auto back = KvDtypeFromProto(KvDtypeToProto(d), "f");
    ASSERT_TRUE(back.ok() && back->has_value());
    EXPECT_EQ(**back, d);
  }
  auto unspecified = KvDtypeFromProto(wire::KV_DTYPE_UNSPECIFIED, "f");
  ASSERT_TRUE(unspecified.ok());
  EXPECT_FALSE(unspecified->has_value());
  auto unknown = KvDtypeFromProto(static_cast<wire::KvDtype>(9), "Assignment.kv_cache.dtype");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("Assignment.kv_cache.dtype"), absl::string_view::npos);
  for (TransferDtype d : {TransferDtype::kInt8, TransferDtype::kBf16}) {
    auto back = TransferDtypeFromProto(TransferDtypeToProto(d), "f");
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, d);
  }
  EXPECT_FALSE(TransferDtypeFromProto(wire::ACTIVATION_DTYPE_UNSPECIFIED, "f").ok());
}

}  // namespace
}  // namespace bitserve::rpc
