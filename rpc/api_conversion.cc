#include "rpc/api_conversion.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace bitserve::rpc {
namespace {

absl::Status FieldError(std::string message) {
  return absl::InvalidArgumentError(std::move(message));
}

absl::Status ParseInput(const v1::GenerateRequest& request, GenerationInput* input) {
  switch (request.input_case()) {
    case v1::GenerateRequest::kText:
      *input = TextInput{request.text()};
      return absl::OkStatus();
    case v1::GenerateRequest::kMessages: {
      const auto& messages = request.messages().messages();
      if (messages.empty()) return FieldError("messages must hold at least one message");
      ChatInput chat;
      chat.messages.reserve(messages.size());
      for (int i = 0; i < messages.size(); ++i) {
        const std::string& role = messages[i].role();
        if (role != "system" && role != "user" && role != "assistant") {
          return FieldError(absl::StrFormat(
              "messages[%d].role must be one of system, user, assistant, got \"%s\"", i, role));
        }
        chat.messages.push_back(ChatMessage{role, messages[i].content()});
      }
      *input = std::move(chat);
      return absl::OkStatus();
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return FieldError("token_ids.ids must hold at least one token id");
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0) {
          return FieldError(absl::StrFormat("token_ids.ids[%d] must be >= 0, got %d", i, ids[i]));
        }
      }
      *input = TokenInput{std::vector<int32_t>(ids.begin(), ids.end())};
      return absl::OkStatus();
    }
    case v1::GenerateRequest::INPUT_NOT_SET:
      break;
  }
  return FieldError("input must be set: one of text, messages, token_ids");
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status ParseGenerateRequest(const v1::GenerateRequest& request, GenerationInput* input,
                                  GenerationParams* params) {
  if (absl::Status s = ParseInput(request, input); !s.ok()) return s;

  GenerationParams p;
  const v1::SamplingParams& sp = request.sampling();
  SamplingParams& s = p.sampling;
  s.temperature = sp.temperature();
  s.top_k = sp.top_k();
  s.top_p = sp.has_top_p() ? sp.top_p() : 1.0f;
  s.min_p = sp.min_p();
  s.repetition_penalty = sp.has_repetition_penalty() ? sp.repetition_penalty() : 1.0f;
  s.presence_penalty = sp.presence_penalty();
  s.frequency_penalty = sp.frequency_penalty();
  if (sp.has_seed()) s.seed = sp.seed();

  if (request.top_logprobs() < 0 || request.top_logprobs() > kMaxTopLogprobs) {
    return FieldError(absl::StrFormat("top_logprobs must be in [0, %d], got %d", kMaxTopLogprobs,
                                      request.top_logprobs()));
  }
  if (request.top_logprobs() > 0 && !request.logprobs()) {
    return FieldError("top_logprobs needs logprobs = true");
  }
  s.top_logprobs = request.top_logprobs();
  p.logprobs = request.logprobs();
  // SamplingParams::Validate names its fields without the message path; the API's are under
  // "sampling.".
  if (absl::Status status = s.Validate(); !status.ok()) {
    return FieldError(absl::StrCat("sampling.", status.message()));
  }

  if (request.has_max_tokens()) {
    if (request.max_tokens() < 1) {
      return FieldError(absl::StrFormat("max_tokens must be >= 1, got %d", request.max_tokens()));
    }
    p.max_new_tokens = request.max_tokens();
  } else {
    p.max_new_tokens = kDefaultMaxTokens;
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    if (request.stop(i).empty()) {
      return FieldError(absl::StrFormat("stop[%d] must not be empty", i));
    }
    p.stop_strings.push_back(request.stop(i));
  }
  for (int i = 0; i < request.stop_token_ids_size(); ++i) {
    if (request.stop_token_ids(i) < 0) {
      return FieldError(
          absl::StrFormat("stop_token_ids[%d] must be >= 0, got %d", i, request.stop_token_ids(i)));
    }
    p.stop_token_ids.push_back(request.stop_token_ids(i));
  }
  p.ignore_eos = request.ignore_eos();
  p.include_stop_string = request.include_stop_string();
  p.priority = request.priority();
  p.request_id = request.request_id();
  p.prefill_progress = request.prefill_progress();
  *params = std::move(p);
  return absl::OkStatus();
}

v1::GenerateRequest ToGenerateRequest(const GenerationInput& input,
                                      const GenerationParams& params) {
  v1::GenerateRequest request;
  if (const auto* text = std::get_if<TextInput>(&input)) {
    request.set_text(text->text);
  } else if (const auto* chat = std::get_if<ChatInput>(&input)) {
    auto* messages = request.mutable_messages();
    for (const ChatMessage& m : chat->messages) {
      auto* out = messages->add_messages();
      out->set_role(m.role);
      out->set_content(m.content);
    }
  } else {
    const auto& ids = std::get<TokenInput>(input).ids;
    request.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  }
  const SamplingParams& s = params.sampling;
  v1::SamplingParams* sp = request.mutable_sampling();
  sp->set_temperature(s.temperature);
  sp->set_top_k(s.top_k);
  if (s.top_p != 1.0f) sp->set_top_p(s.top_p);
  sp->set_min_p(s.min_p);
  if (s.repetition_penalty != 1.0f) sp->set_repetition_penalty(s.repetition_penalty);
  sp->set_presence_penalty(s.presence_penalty);
  sp->set_frequency_penalty(s.frequency_penalty);
  if (s.seed.has_value()) sp->set_seed(*s.seed);
  request.set_max_tokens(params.max_new_tokens);
  for (const std::string& stop : params.stop_strings) request.add_stop(stop);
  for (int id : params.stop_token_ids) request.add_stop_token_ids(id);
  request.set_ignore_eos(params.ignore_eos);
  request.set_include_stop_string(params.include_stop_string);
  request.set_logprobs(params.logprobs);
  request.set_top_logprobs(s.top_logprobs);
  request.set_priority(params.priority);
  request.set_request_id(params.request_id);
  request.set_prefill_progress(params.prefill_progress);
  return request;
}

v1::FinishReason FinishReasonToProto(absl::string_view reason) {
  if (reason == "eos") return v1::FINISH_REASON_EOS;
  if (reason == "stop") return v1::FINISH_REASON_STOP;
  if (reason == "length") return v1::FINISH_REASON_LENGTH;
  if (reason == "cancelled") return v1::FINISH_REASON_CANCELLED;
  if (reason == "error") return v1::FINISH_REASON_ERROR;
  return v1::FINISH_REASON_UNSPECIFIED;
}

std::string FinishReasonFromProto(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_EOS:
      return "eos";
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    case v1::FINISH_REASON_ERROR:
      return "error";
    default:
      return "";
  }
}

v1::GenerateResponse ToGenerateResponse(const GenerationChunk& chunk,
                                        const std::string& request_id) {
  v1::GenerateResponse response;
  response.mutable_token_ids()->Add(chunk.token_ids.begin(), chunk.token_ids.end());
  response.set_text(chunk.text);
  for (const SampleResult& sample : chunk.logprobs) {
    v1::TokenLogprob* lp = response.add_logprobs();
    lp->set_token_id(sample.token);
    lp->set_logprob(sample.logprob);
    for (const TokenLogprob& top : sample.top_logprobs) {
      v1::TopLogprob* t = lp->add_top_logprobs();
      t->set_token_id(top.token);
      t->set_logprob(top.logprob);
    }
  }
  if (!request_id.empty()) response.set_request_id(request_id);
  if (chunk.prompt_tokens_processed > 0) {
    response.set_prompt_tokens_processed(chunk.prompt_tokens_processed);
    response.mutable_usage()->set_prompt_tokens(chunk.usage.prompt_tokens);
  }
  if (chunk.final && chunk.finish_reason != "error") {
    response.set_finish_reason(FinishReasonToProto(chunk.finish_reason));
    response.mutable_usage()->set_prompt_tokens(chunk.usage.prompt_tokens);
    response.mutable_usage()->set_completion_tokens(chunk.usage.completion_tokens);
    response.set_seed(chunk.seed);
  }
  return response;
}

GenerationChunk FromGenerateResponse(const v1::GenerateResponse& response) {
  GenerationChunk chunk;
  chunk.token_ids.assign(response.token_ids().begin(), response.token_ids().end());
  chunk.text = response.text();
  chunk.prompt_tokens_processed = response.prompt_tokens_processed();
  if (chunk.prompt_tokens_processed > 0) chunk.usage.prompt_tokens = response.usage().prompt_tokens();
  for (const v1::TokenLogprob& lp : response.logprobs()) {
    SampleResult sample;
    sample.token = lp.token_id();
    sample.logprob = lp.logprob();
    for (const v1::TopLogprob& top : lp.top_logprobs()) {
      sample.top_logprobs.push_back(TokenLogprob{top.token_id(), top.logprob()});
    }
    chunk.logprobs.push_back(std::move(sample));
  }
  if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    chunk.final = true;
    chunk.finish_reason = FinishReasonFromProto(response.finish_reason());
    chunk.usage.prompt_tokens = response.usage().prompt_tokens();
    chunk.usage.completion_tokens = response.usage().completion_tokens();
    chunk.seed = response.seed();
  }
  return chunk;
}

void ToModelInfoResponse(const ModelSummary& m, v1::ModelInfoResponse* r) {
  r->set_model_dir(m.model_dir);
  r->set_architecture(m.architecture);
  r->set_vocab_size(m.vocab_size);
  r->set_hidden_size(m.hidden_size);
  r->set_num_layers(m.num_layers);
  r->set_num_attention_heads(m.num_attention_heads);
  r->set_num_key_value_heads(m.num_key_value_heads);
  r->set_max_model_len(m.max_model_len);
  r->set_max_num_seqs(m.max_num_seqs);
  r->set_max_waiting(m.max_waiting);
  r->set_max_num_batched_tokens(m.max_num_batched_tokens);
  r->set_kv_block_size(m.kv_block_size);
  r->set_kv_num_blocks(m.kv_num_blocks);
  r->set_kv_capacity_tokens(m.kv_capacity_tokens);
  r->set_kv_dtype(m.kv_dtype);
  r->set_device(m.device);
  r->mutable_eos_token_ids()->Add(m.eos_token_ids.begin(), m.eos_token_ids.end());
}

ModelSummary FromModelInfoResponse(const v1::ModelInfoResponse& r) {
  ModelSummary m;
  m.model_dir = r.model_dir();
  m.architecture = r.architecture();
  m.vocab_size = r.vocab_size();
  m.hidden_size = r.hidden_size();
  m.num_layers = r.num_layers();
  m.num_attention_heads = r.num_attention_heads();
  m.num_key_value_heads = r.num_key_value_heads();
  m.max_model_len = r.max_model_len();
  m.max_num_seqs = r.max_num_seqs();
  m.max_waiting = r.max_waiting();
  m.max_num_batched_tokens = r.max_num_batched_tokens();
  m.kv_block_size = r.kv_block_size();
  m.kv_num_blocks = r.kv_num_blocks();
  m.kv_capacity_tokens = r.kv_capacity_tokens();
  m.kv_dtype = r.kv_dtype();
  m.device = r.device();
  m.eos_token_ids.assign(r.eos_token_ids().begin(), r.eos_token_ids().end());
  return m;
}

}  // namespace bitserve::rpc
