// The worker protocol's conversions: a batch survives encode/decode exactly (penalty state only
// when a penalty needs it), and a malformed plan or result is an error naming what is wrong.
#include "rpc/worker_protocol.h"

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
  auto back = DecodeResults(r, 2);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)[0].token, 11);
  EXPECT_EQ((*back)[0].top_logprobs.size(), 2u);
  EXPECT_EQ((*back)[1].logprob, -0.1f);
  EXPECT_EQ(DecodeResults(r, 3).status().code(), absl::StatusCode::kInvalidArgument);

  const absl::Status lost = absl::UnavailableError("gone");
  EXPECT_EQ(StatusFromProto(StatusToProto(lost)), lost);
  EXPECT_TRUE(StatusFromProto(StatusToProto(absl::OkStatus())).ok());
  wire::Status odd;
  odd.set_code(999);
  odd.set_message("from a newer peer");
  EXPECT_EQ(StatusFromProto(odd).code(), absl::StatusCode::kUnknown);
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
