// The OpenAI API's JSON: parameters into GenerationParams, what is refused (and with which
// status and param), and the response / stream chunk shapes OpenAI's clients parse.
#include "rpc/openai_api.h"

#include "gtest/gtest.h"

namespace bitserve::rpc::openai {
namespace {

using nlohmann::json;

ParsedRequest Parse(Endpoint e, const json& body) {
  auto r = ParseRequest(e, body.dump(), "m", 4096);
  if (const ApiError* err = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << body.dump() << " -> " << err->message;
    return {};
  }
  return std::get<ParsedRequest>(r);
}

ApiError Refuse(Endpoint e, const std::string& body) {
  auto r = ParseRequest(e, body, "m", 4096);
  if (!std::holds_alternative<ApiError>(r)) {
    ADD_FAILURE() << body << " was accepted";
    return {};
  }
  return std::get<ApiError>(r);
}

TEST(OpenAiApi, ChatParametersReachTheBackendParams) {
  const ParsedRequest r =
      Parse(Endpoint::kChatCompletions,
            {{"model", "m"},
             {"messages",
              {{{"role", "developer"}, {"content", "be brief"}},
               {{"role", "user"},
                {"content",
                 {{{"type", "text"}, {"text", "hi "}}, {{"type", "text"}, {"text", "there"}}}}}}},
             {"max_completion_tokens", 7},
             {"temperature", 0.5},
             {"top_p", 0.9},
             {"seed", 42},
             {"stop", "END"},
             {"logprobs", true},
             {"top_logprobs", 3},
             {"presence_penalty", 0.5},
             {"frequency_penalty", -0.5},
             {"n", 2},
             {"stream", true},
             {"stream_options", {{"include_usage", true}}},
             {"user", "ignored"}});
  ASSERT_EQ(r.prompts.size(), 1u);
  const auto& chat = std::get<ChatInput>(r.prompts[0]);
  ASSERT_EQ(chat.messages.size(), 2u);
  EXPECT_EQ(chat.messages[0].role, "system");
  EXPECT_EQ(chat.messages[1].content, "hi there");
  EXPECT_EQ(r.params.max_new_tokens, 7);
  EXPECT_FLOAT_EQ(r.params.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.params.sampling.top_p, 0.9f);
  EXPECT_EQ(r.params.sampling.seed, 42u);
  EXPECT_EQ(r.params.stop_strings, std::vector<std::string>{"END"});
  EXPECT_TRUE(r.params.logprobs);
  EXPECT_EQ(r.params.sampling.top_logprobs, 3);
  EXPECT_FLOAT_EQ(r.params.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.params.sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiApi, DefaultsAreOpenAis) {
  const ParsedRequest chat =
      Parse(Endpoint::kChatCompletions, {{"messages", {{{"role", "user"}, {"content", "x"}}}}});
  EXPECT_FLOAT_EQ(chat.params.sampling.temperature, 1.0f);
  EXPECT_EQ(chat.params.max_new_tokens, 4096);  // as many as fit
  EXPECT_FALSE(chat.stream);
  EXPECT_EQ(chat.n, 1);
  const ParsedRequest completion = Parse(Endpoint::kCompletions, {{"prompt", "x"}});
  EXPECT_EQ(completion.params.max_new_tokens, 16);
  EXPECT_EQ(completion.completion_logprobs, -1);
}

TEST(OpenAiApi, CompletionPromptsTakeEveryForm) {
  EXPECT_EQ(Parse(Endpoint::kCompletions, {{"prompt", "a"}}).prompts.size(), 1u);
  const ParsedRequest ids = Parse(Endpoint::kCompletions, {{"prompt", {1, 2, 3}}});
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_EQ(std::get<TokenInput>(ids.prompts[0]).ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(Parse(Endpoint::kCompletions, {{"prompt", {"a", "b"}}}).prompts.size(), 2u);
  EXPECT_EQ(Parse(Endpoint::kCompletions, {{"prompt", {{1, 2}, {3}}}}).prompts.size(), 2u);
  const ParsedRequest lp = Parse(Endpoint::kCompletions, {{"prompt", "a"}, {"logprobs", 2}});
  EXPECT_TRUE(lp.params.logprobs);
  EXPECT_EQ(lp.params.sampling.top_logprobs, 2);
  EXPECT_EQ(lp.completion_logprobs, 2);
}

TEST(OpenAiApi, RefusalsNameTheParameterAndStatus) {
  const auto chat = Endpoint::kChatCompletions;
  const std::string msgs = R"("messages": [{"role": "user", "content": "x"}])";
  struct Case {
    Endpoint endpoint;
    std::string body, param;
    int status;
  };
  const Case cases[] = {
      {chat, "not json", "", 400},
      {chat, "[1]", "", 400},
      {chat, "{}", "messages", 400},
      {chat, R"({"messages": []})", "messages", 400},
      {chat, R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role", 400},
      {chat, R"({"messages": [{"role": "tool", "content": "x"}]})", "messages[0].role", 400},
      {chat, R"({"messages": [{"role": "user"}]})", "messages[0].content", 400},
      {chat, "{" + msgs + R"(, "model": "other"})", "model", 404},
      {chat, "{" + msgs + R"(, "temperature": 3})", "temperature", 400},
      {chat, "{" + msgs + R"(, "max_tokens": 0})", "max_tokens", 400},
      {chat, "{" + msgs + R"(, "n": 0})", "n", 400},
      {chat, "{" + msgs + R"(, "top_logprobs": 2})", "top_logprobs", 400},
      {chat, "{" + msgs + R"(, "logprobs": true, "top_logprobs": 21})", "top_logprobs", 400},
      {chat, "{" + msgs + R"(, "stream_options": {"include_usage": true}})", "stream_options", 400},
      {chat, "{" + msgs + R"(, "tools": [{"type": "function"}]})", "tools", 400},
      {chat, "{" + msgs + R"(, "response_format": {"type": "json_object"}})", "response_format",
       400},
      {chat, "{" + msgs + R"(, "logit_bias": {"5": 10}})", "logit_bias", 400},
      {chat, "{" + msgs + R"(, "temprature": 1})", "temprature", 400},
      {Endpoint::kCompletions, R"({"prompt": "x", "echo": true})", "echo", 400},
      {Endpoint::kCompletions, R"({"prompt": "x", "best_of": 3})", "best_of", 400},
      {Endpoint::kCompletions, R"({"prompt": "x", "suffix": "y"})", "suffix", 400},
      {Endpoint::kCompletions, R"({"prompt": [1, -2]})", "prompt", 400},
      {Endpoint::kCompletions, R"({"prompt": {}})", "prompt", 400},
      {Endpoint::kCompletions, R"({"prompt": "x", "messages": []})", "messages", 400},
  };
  for (const Case& c : cases) {
    const ApiError e = Refuse(c.endpoint, c.body);
    EXPECT_EQ(e.status, c.status) << c.body << ": " << e.message;
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.message;
    EXPECT_FALSE(e.message.empty());
    const json j = e.ToJson();
    EXPECT_TRUE(j["error"].contains("message") && j["error"].contains("type") &&
                j["error"].contains("param") && j["error"].contains("code"));
  }
  // Accepted and ignored, or at their default (null / false / empty).
  Parse(chat, json::parse("{" + msgs +
                          R"(, "tools": [], "tool_choice": "none", "logit_bias": {},
                          "response_format": {"type": "text"}, "metadata": {"a": "b"},
                          "parallel_tool_calls": true, "store": false})"));
}

TEST(OpenAiApi, BackendStatusesBecomeOpenAiStatuses) {
  EXPECT_EQ(ErrorFromStatus(absl::InvalidArgumentError("x")).status, 400);
  EXPECT_EQ(ErrorFromStatus(absl::FailedPreconditionError("x")).status, 400);
  EXPECT_EQ(ErrorFromStatus(absl::NotFoundError("x")).status, 404);
  EXPECT_EQ(ErrorFromStatus(absl::ResourceExhaustedError("queue full: 64 waiting")).status, 429);
  const ApiError too_long = ErrorFromStatus(absl::ResourceExhaustedError("prompt has 9 tokens"));
  EXPECT_EQ(too_long.status, 400);
  EXPECT_EQ(too_long.code, "context_length_exceeded");
  EXPECT_EQ(ErrorFromStatus(absl::UnavailableError("x")).status, 503);
  EXPECT_EQ(ErrorFromStatus(absl::InternalError("x")).status, 500);
}

TEST(OpenAiApi, ResponsesHaveOpenAisShape) {
  ParsedRequest r =
      Parse(Endpoint::kChatCompletions, {{"messages", {{{"role", "user"}, {"content", "x"}}}},
                                         {"logprobs", true},
                                         {"top_logprobs", 1},
                                         {"n", 2}});
  const TokenBytesFn bytes = [](int32_t id) { return id == 7 ? std::string("\xc3") : "t"; };
  std::vector<ChoiceResult> choices(2);
  choices[0] = {"hello", {{7, -0.5f, {{7, -0.5f}}}}, "eos", {5, 1}, {}};
  choices[1] = {"hey", {{8, -1.0f, {{7, -0.5f}}}}, "length", {5, 1}, {}};
  const json out = CompletionResponse(r, "chatcmpl-1", 10, "m", choices, bytes);
  EXPECT_EQ(out["object"], "chat.completion");
  EXPECT_EQ(out["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(out["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(out["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(out["choices"][1]["index"], 1);
  EXPECT_EQ(out["usage"]["prompt_tokens"], 5);  // once per prompt
  EXPECT_EQ(out["usage"]["completion_tokens"], 2);
  EXPECT_EQ(out["usage"]["total_tokens"], 7);
  const json& lp = out["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(lp["bytes"], json::array({0xc3}));  // raw bytes, though not UTF-8
  EXPECT_FLOAT_EQ(lp["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(lp["top_logprobs"].size(), 1u);
  // Dumps as valid JSON whatever the bytes.
  EXPECT_NO_THROW(json::parse(out.dump(-1, ' ', false, json::error_handler_t::replace)));

  r.include_usage = true;
  const json role = StreamChunk(r, "c", 1, "m", 0, "", {}, "", true, bytes);
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(role["usage"].is_null());
  const json last = StreamChunk(r, "c", 1, "m", 1, "", {}, "eos", false, bytes);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  const json usage = UsageChunk(r, "c", 1, "m", {3, 4});
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);

  const ParsedRequest c = Parse(Endpoint::kCompletions, {{"prompt", "x"}, {"logprobs", 1}});
  const json text = CompletionResponse(c, "cmpl-1", 10, "m", {choices[0]}, bytes);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "hello");
  EXPECT_EQ(text["choices"][0]["logprobs"]["token_logprobs"][0], -0.5f);
  EXPECT_EQ(text["choices"][0]["logprobs"]["text_offset"][0], 0);
  EXPECT_FALSE(text["choices"][0].contains("token_ids"));  // only when asked
}

TEST(OpenAiApi, ReturnTokenIdsAddsTheIdsToChoicesAndChunks) {
  ParsedRequest r =
      Parse(Endpoint::kCompletions, {{"prompt", {1, 2, 3}}, {"return_token_ids", true}});
  EXPECT_TRUE(r.return_token_ids);
  const TokenBytesFn bytes = [](int32_t) { return std::string("t"); };
  ChoiceResult choice{"ab", {}, "length", {3, 2}, {17, 18}};
  const json full = CompletionResponse(r, "cmpl-1", 10, "m", {choice}, bytes);
  EXPECT_EQ(full["choices"][0]["token_ids"], json::array({17, 18}));
  const json chunk = StreamChunk(r, "c", 1, "m", 0, "", {}, "", false, bytes, {42});
  EXPECT_EQ(chunk["choices"][0]["token_ids"], json::array({42}));  // even with no text yet
  EXPECT_EQ(chunk["choices"][0]["text"], "");
  const ApiError e =
      Refuse(Endpoint::kCompletions, R"({"prompt": "x", "return_token_ids": "yes"})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "return_token_ids");
  r.return_token_ids = false;
  EXPECT_FALSE(
      StreamChunk(r, "c", 1, "m", 0, "x", {}, "", false, bytes, {42})["choices"][0].contains(
          "token_ids"));
}

}  // namespace
}  // namespace bitserve::rpc::openai
