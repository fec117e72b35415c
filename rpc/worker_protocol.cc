#include "rpc/worker_protocol.h"

#include "absl/strings/str_cat.h"

namespace bitserve::rpc {

wire::KvDtype KvDtypeToProto(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF32:
      return wire::KV_DTYPE_F32;
    case KvDtype::kBf16:
      return wire::KV_DTYPE_BF16;
    case KvDtype::kInt8:
      return wire::KV_DTYPE_INT8;
    case KvDtype::kInt4:
      return wire::KV_DTYPE_INT4;
  }
  return wire::KV_DTYPE_UNSPECIFIED;
}

absl::StatusOr<std::optional<KvDtype>> KvDtypeFromProto(wire::KvDtype dtype, const char* field) {
  switch (dtype) {
    case wire::KV_DTYPE_UNSPECIFIED:
      return std::optional<KvDtype>();
    case wire::KV_DTYPE_F32:
      return KvDtype::kF32;
    case wire::KV_DTYPE_BF16:
      return KvDtype::kBf16;
    case wire::KV_DTYPE_INT8:
      return KvDtype::kInt8;
    case wire::KV_DTYPE_INT4:
      return KvDtype::kInt4;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": unknown KV dtype ", static_cast<int>(dtype)));
  }
}

wire::KvRotation KvRotationToProto(KvRotation rotation) {
  switch (rotation) {
    case KvRotation::kNone:
      return wire::KV_ROTATION_NONE;
    case KvRotation::kHadamard:
      return wire::KV_ROTATION_HADAMARD;
  }
  return wire::KV_ROTATION_UNSPECIFIED;
}

wire::LmHeadDtype LmHeadDtypeToProto(LmHeadDtype dtype) {
  return dtype == LmHeadDtype::kInt8 ? wire::LM_HEAD_DTYPE_INT8 : wire::LM_HEAD_DTYPE_BF16;
}

absl::StatusOr<LmHeadDtype> LmHeadDtypeFromProto(wire::LmHeadDtype dtype, const char* field) {
  switch (dtype) {
    case wire::LM_HEAD_DTYPE_UNSPECIFIED:
    case wire::LM_HEAD_DTYPE_BF16:
      return LmHeadDtype::kBf16;
    case wire::LM_HEAD_DTYPE_INT8:
      return LmHeadDtype::kInt8;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": unknown LM head dtype ", static_cast<int>(dtype)));
  }
}

absl::StatusOr<std::optional<KvRotation>> KvRotationFromProto(wire::KvRotation rotation,
                                                              const char* field) {
  switch (rotation) {
    case wire::KV_ROTATION_UNSPECIFIED:
      return std::optional<KvRotation>();
    case wire::KV_ROTATION_NONE:
      return KvRotation::kNone;
    case wire::KV_ROTATION_HADAMARD:
      return KvRotation::kHadamard;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": unknown KV rotation ", static_cast<int>(rotation)));
  }
}

wire::ActivationDtype TransferDtypeToProto(TransferDtype dtype) {
  return dtype == TransferDtype::kBf16 ? wire::ACTIVATION_DTYPE_BF16 : wire::ACTIVATION_DTYPE_INT8;
}

absl::StatusOr<TransferDtype> TransferDtypeFromProto(wire::ActivationDtype dtype,
                                                     const char* field) {
  switch (dtype) {
    case wire::ACTIVATION_DTYPE_INT8:
      return TransferDtype::kInt8;
    case wire::ACTIVATION_DTYPE_BF16:
      return TransferDtype::kBf16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": unknown or unspecified activation dtype ", static_cast<int>(dtype)));
  }
}

wire::Status StatusToProto(const absl::Status& status) {
  wire::Status out;
  out.set_code(static_cast<int32_t>(status.code()));
  out.set_message(std::string(status.message()));
  return out;
}

absl::Status StatusFromProto(const wire::Status& status) {
  if (status.code() == 0) return absl::OkStatus();
  // Codes outside absl's range (a newer peer) still fail, as UNKNOWN.
  const int code = status.code();
  const auto absl_code = code > 0 && code <= static_cast<int>(absl::StatusCode::kUnauthenticated)
                             ? static_cast<absl::StatusCode>(code)
                             : absl::StatusCode::kUnknown;
  return absl::Status(absl_code, status.message());
}

void EncodeStep(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                wire::StepPlan* plan) {
  size_t next_sample = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const BatchEntry& e = entries[i];
    wire::StepEntry* out = plan->add_entries();
    out->set_seq_id(i);
    out->set_start_position(e.start_position);
    out->mutable_token_ids()->Add(e.tokens.begin(), e.tokens.end());
    out->mutable_block_table()->Add(e.block_table.begin(), e.block_table.end());
    switch (e.logits) {
      case LogitsWanted::kNone:
        out->set_logits(wire::LOGITS_WANTED_NONE);
        break;
      case LogitsWanted::kLast:
        out->set_logits(wire::LOGITS_WANTED_LAST);
        break;
      case LogitsWanted::kAll:
        out->set_logits(wire::LOGITS_WANTED_ALL);
        break;
    }
    if (e.logits != LogitsWanted::kLast || next_sample >= samples.size()) continue;
    const SampleSpec& spec = samples[next_sample++];
    const SamplingParams& p = *spec.params;
    wire::SampleSpec* s = out->mutable_sampling();
    s->set_temperature(p.temperature);
    s->set_top_k(p.top_k);
    s->set_top_p(p.top_p);
    s->set_min_p(p.min_p);
    s->set_repetition_penalty(p.repetition_penalty);
    s->set_presence_penalty(p.presence_penalty);
    s->set_frequency_penalty(p.frequency_penalty);
    s->set_seed(spec.seed);
    s->set_draw_index(spec.draw_index);
    s->set_logprobs(true);
    s->set_top_logprobs(p.top_logprobs);
    const bool penalties = p.presence_penalty != 0 || p.frequency_penalty != 0;
    if (p.repetition_penalty != 1) {
      s->mutable_prompt_token_ids()->Add(spec.prompt.begin(), spec.prompt.end());
    }
    if (penalties || p.repetition_penalty != 1) {
      s->mutable_output_token_ids()->Add(spec.output.begin(), spec.output.end());
    }
  }
}

absl::Status DecodeStep(const wire::StepPlan& plan, DecodedStep* out) {
  const int n = plan.entries_size();
  out->entries.clear();
  out->samples.clear();
  out->sampled_seq_ids.clear();
  out->tokens_.assign(n, {});
  out->tables_.assign(n, {});
  out->prompts_.clear();
  out->outputs_.clear();
  out->params_.clear();
  // Reserve first: the spans taken below must not move.
  out->prompts_.reserve(n);
  out->outputs_.reserve(n);
  out->params_.reserve(n);
  for (int i = 0; i < n; ++i) {
    const wire::StepEntry& e = plan.entries(i);
    if (e.token_ids().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", plan.step_id(), " entry ", i, ": no token_ids"));
    }
    out->tokens_[i].assign(e.token_ids().begin(), e.token_ids().end());
    out->tables_[i].assign(e.block_table().begin(), e.block_table().end());
    BatchEntry entry;
    entry.start_position = e.start_position();
    entry.tokens = out->tokens_[i];
    entry.block_table = out->tables_[i];
    switch (e.logits()) {
      case wire::LOGITS_WANTED_NONE:
        entry.logits = LogitsWanted::kNone;
        break;
      case wire::LOGITS_WANTED_LAST:
        entry.logits = LogitsWanted::kLast;
        break;
      case wire::LOGITS_WANTED_ALL:
        entry.logits = LogitsWanted::kAll;
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("step ", plan.step_id(), " entry ", i,
                                                       ": unknown logits value ", e.logits()));
    }
    out->entries.push_back(entry);
    if (entry.logits != LogitsWanted::kLast) continue;
    const wire::SampleSpec& s = e.sampling();
    SamplingParams p;
    p.temperature = s.temperature();
    p.top_k = s.top_k();
    p.top_p = s.top_p();
    p.min_p = s.min_p();
    p.repetition_penalty = s.repetition_penalty();
    p.presence_penalty = s.presence_penalty();
    p.frequency_penalty = s.frequency_penalty();
    p.seed = s.seed();
    p.top_logprobs = s.top_logprobs();
    if (absl::Status status = p.Validate(); !status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", plan.step_id(), " entry ", i, ": ", status.message()));
    }
    out->params_.push_back(p);
    out->prompts_.emplace_back(s.prompt_token_ids().begin(), s.prompt_token_ids().end());
    out->outputs_.emplace_back(s.output_token_ids().begin(), s.output_token_ids().end());
    SampleSpec spec;
    spec.params = &out->params_.back();
    spec.seed = s.seed();
    spec.draw_index = s.draw_index();
    spec.prompt = out->prompts_.back();
    spec.output = out->outputs_.back();
    out->samples.push_back(spec);
    out->sampled_seq_ids.push_back(e.seq_id());
  }
  return absl::OkStatus();
}

void EncodeResults(std::span<const SampleResult> results, std::span<const uint64_t> seq_ids,
                   wire::StepResult* out) {
  for (size_t i = 0; i < results.size(); ++i) {
    wire::SampledToken* t = out->add_tokens();
    t->set_seq_id(i < seq_ids.size() ? seq_ids[i] : 0);
    t->set_token_id(results[i].token);
    t->set_logprob(results[i].logprob);
    for (const TokenLogprob& top : results[i].top_logprobs) {
      wire::TopLogprob* o = t->add_top_logprobs();
      o->set_token_id(top.token);
      o->set_logprob(top.logprob);
    }
  }
}

absl::StatusOr<std::vector<SampleResult>> DecodeResults(const wire::StepResult& result,
                                                        size_t expected, int32_t vocab_size) {
  if (static_cast<size_t>(result.tokens_size()) != expected) {
    return absl::InvalidArgumentError(absl::StrCat("step ", result.step_id(), ": ",
                                                   result.tokens_size(),
                                                   " sampled tokens, expected ", expected));
  }
  auto outside = [&](size_t i, absl::string_view what, int32_t id) {
    return absl::InvalidArgumentError(absl::StrCat("step ", result.step_id(), " token ", i, ": ",
                                                   what, " ", id, " is outside the vocabulary [0, ",
                                                   vocab_size, ")"));
  };
  std::vector<SampleResult> out(expected);
  for (size_t i = 0; i < expected; ++i) {
    const wire::SampledToken& t = result.tokens(i);
    if (t.token_id() < 0 || t.token_id() >= vocab_size) return outside(i, "token id", t.token_id());
    out[i].token = t.token_id();
    out[i].logprob = t.logprob();
    for (const wire::TopLogprob& top : t.top_logprobs()) {
      if (top.token_id() < 0 || top.token_id() >= vocab_size) {
        return outside(i, "top_logprobs token id", top.token_id());
      }
      out[i].top_logprobs.push_back({top.token_id(), top.logprob()});
    }
  }
  return out;
}

absl::Status CheckExpertLoad(const wire::StepResult& result, int num_layers, int num_experts) {
  for (const wire::ExpertLoad& load : result.expert_load()) {
    if (load.layer() < 0 || load.layer() >= num_layers || load.rows_size() > num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step ", result.step_id(), ": expert_load of layer ", load.layer(), " with ",
          load.rows_size(), " experts; the model has ", num_layers, " layers of ", num_experts));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> ExpertGroupRanks(const wire::Assignment& assignment) {
  const wire::ModelShard& shard = assignment.shard();
  // In 64 bits: a group index times a group size from the wire must not overflow.
  const int64_t world = assignment.world_size();
  const int64_t size = shard.expert_group_size() == 0 ? 1 : shard.expert_group_size();
  const int64_t first = int64_t{shard.expert_group()} * size;
  if (world < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Assignment.world_size: ", world, " (expected at least 1)"));
  }
  if (size < 1 || shard.expert_group() < 0 || first + size > world) {
    return absl::InvalidArgumentError(
        absl::StrCat("Assignment.shard: expert group ", shard.expert_group(), " of ", size,
                     " ranks does not fit a world of ", world, " (Assignment.world_size)"));
  }
  // Every rank of a group holds an expert, so expert_owner (one entry per expert, real bytes of
  // the message) bounds the group: a size claimed alone sizes no allocation.
  if (size > 1 && size > shard.expert_owner_size()) {
    return absl::InvalidArgumentError(absl::StrCat("Assignment.shard.expert_group_size: ", size,
                                                   " ranks for ", shard.expert_owner_size(),
                                                   " experts (expert_owner)"));
  }
  if (shard.rank_in_expert_group() < 0 || shard.rank_in_expert_group() >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("Assignment.shard.rank_in_expert_group: ", shard.rank_in_expert_group(),
                     " is outside a group of ", size));
  }
  std::vector<int> ranks(size);
  for (int64_t r = 0; r < size; ++r) ranks[r] = static_cast<int>(first + r);
  return ranks;
}

}  // namespace bitserve::rpc
