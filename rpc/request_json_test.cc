// The JSON request line of `bitserve batch` and `bench-serve --dataset`: every parameter, and bad
// lines refused naming the field.
#include "rpc/request_json.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve::rpc {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseRequestLine, SamplingParameters) {
  std::optional<json> id;
  absl::StatusOr<JsonRequest> r = ParseRequestLine(
      R"({"id": "x", "prompt": "p", "max_tokens": 9, "temperature": 0.7, "top_k": 5,
          "top_p": 0.9, "min_p": 0.1, "seed": 18446744073709551615, "stop": "END",
          "stop_token_ids": [3, 4], "ignore_eos": true, "top_logprobs": 3,
          "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": -0.5,
          "priority": -2})",
      &id);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*id, "x");
  EXPECT_EQ(r->key, "\"x\"");
  EXPECT_EQ(std::get<rpc::TextInput>(r->input).text, "p");
  const rpc::GenerationParams& p = r->params;
  EXPECT_EQ(p.max_new_tokens, 9);
  EXPECT_FLOAT_EQ(p.sampling.temperature, 0.7f);
  EXPECT_EQ(p.sampling.top_k, 5);
  EXPECT_FLOAT_EQ(p.sampling.top_p, 0.9f);
  EXPECT_FLOAT_EQ(p.sampling.min_p, 0.1f);
  EXPECT_EQ(p.sampling.seed, std::optional<uint64_t>(18446744073709551615ull));
  EXPECT_THAT(p.stop_strings, ElementsAre("END"));
  EXPECT_THAT(p.stop_token_ids, ElementsAre(3, 4));
  EXPECT_TRUE(p.ignore_eos);
  EXPECT_TRUE(p.logprobs);  // implied by top_logprobs > 0
  EXPECT_EQ(p.sampling.top_logprobs, 3);
  EXPECT_FLOAT_EQ(p.sampling.repetition_penalty, 1.1f);
  EXPECT_FLOAT_EQ(p.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(p.sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(p.priority, -2);
  EXPECT_EQ(p.request_id, "x");

  r = ParseRequestLine(R"({"id": 12, "prompt_ids": [1], "logprobs": true, "stop": ["a", "b"]})",
                       &id);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->params.logprobs);
  EXPECT_EQ(r->params.sampling.top_logprobs, 0);
  EXPECT_EQ(r->params.request_id, "12");
  EXPECT_THAT(r->params.stop_strings, ElementsAre("a", "b"));
  EXPECT_EQ(r->params.max_new_tokens, rpc::GenerationParams().max_new_tokens);
}

TEST(ParseRequestLine, Errors) {
  struct Case {
    const char* line;
    const char* message;
    bool has_id;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"id": "a"})", "one of \"prompt\", \"messages\" or \"prompt_ids\" is required",
            true},
           // A number beyond double's range: an error, not a crash (found by request_jsonl_fuzz).
           {R"({"id": "a", "prompt": "x", "temperature": 8e700})",
            "not valid JSON (number overflow", false},
           {R"({"id": "a", "prompt_ids": []})", "\"prompt_ids\": expected at least one", true},
           {R"({"id": "a", "prompt_ids": [1, -2]})", "\"prompt_ids[1]\": expected a non-negative",
            true},
           {R"({"id": "a", "prompt_ids": [1.5]})", "\"prompt_ids[0]\"", true},
           {R"({"id": "a", "prompt": "x", "max_tokens": 2.0})",
            "\"max_tokens\": expected a non-negative integer, got 2.0", true},
           {R"({"id": "a", "prompt": "x", "max_tokens": -1})", "\"max_tokens\"", true},
           {R"({"id": "a", "prompt": "x", "seed": -1})", "\"seed\"", true},
           {R"({"id": "a", "prompt": "x", "stop": [1]})", "\"stop\"", true},
           {R"({"id": "a", "prompt": "x", "ignore_eos": 1})", "\"ignore_eos\"", true},
           {R"({"id": "a", "prompt": "x", "temperature": "hot"})",
            "\"temperature\": expected a number", true},
           {R"({"id": "a", "prompt": "x", "top_p": 0})", "top_p", true},
           {R"({"id": "a", "prompt": "x", "logprobs": 2, "top_logprobs": 3})", "disagree", true},
           {R"({"id": "a", "prompt": "x", "logprobs": false, "top_logprobs": 3})", "needs", true},
           {R"({"id": "a", "messages": [{"role": "user"}]})",
            "\"messages[0].content\": expected a string", true},
           {R"({"id": "a", "messages": [{"role": "user", "content": "x", "name": "n"}]})",
            "unknown field \"name\"", true},
           {R"({"id": "a", "messages": "hi"})", "\"messages\": expected a non-empty list", true},
           {R"({"id": "", "prompt": "x"})", "\"id\": expected a non-empty string", false},
           {R"({"id": null, "prompt": "x"})", "\"id\"", false},
           {R"({"id": true, "prompt": "x"})", "\"id\"", false},
           {R"("just a string")", "expected a JSON object", false},
           {R"({"id": "a", "prompt": "x"} trailing)", "not valid JSON", false},
       }) {
    std::optional<json> id;
    absl::StatusOr<JsonRequest> r = ParseRequestLine(c.line, &id);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.line;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message)) << c.line;
    EXPECT_EQ(id.has_value(), c.has_id) << c.line;
  }
}

}  // namespace
}  // namespace bitserve::rpc
