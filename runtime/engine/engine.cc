#include "runtime/engine/engine.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace bitserve {

KvDtype DefaultKvDtype(const std::string& device) {
  return device == "cpu" ? KvDtype::kF32 : KvDtype::kBf16;
}

std::vector<KvDtype> SupportedKvDtypes(const std::string& device) {
  if (device == "cpu") return {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4};
  return {KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4};
}

absl::StatusOr<LoadFormat> ParseLoadFormat(absl::string_view name) {
  if (name == "safetensors") return LoadFormat::kSafetensors;
  if (name == "dummy") return LoadFormat::kDummy;
  return absl::InvalidArgumentError(
      absl::StrCat("load format \"", name, "\" is not one of safetensors, dummy"));
}

absl::StatusOr<LmHeadDtype> ParseLmHeadDtype(absl::string_view name) {
  if (name == "bf16") return LmHeadDtype::kBf16;
  if (name == "int8") return LmHeadDtype::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("LM head dtype \"", name, "\" is not one of bf16, int8"));
}

const char* LmHeadDtypeName(LmHeadDtype dtype) {
  return dtype == LmHeadDtype::kInt8 ? "int8" : "bf16";
}

absl::Status CheckKvDtype(const std::string& device, KvDtype dtype) {
  const std::vector<KvDtype> supported = SupportedKvDtypes(device);
  if (std::find(supported.begin(), supported.end(), dtype) != supported.end())
    return absl::OkStatus();
  std::vector<std::string> names;
  for (KvDtype d : supported) names.push_back(KvDtypeName(d));
  return absl::InvalidArgumentError(absl::StrCat(
      "device ", device, " keeps its KV cache as ", absl::StrJoin(names, ", "), ", not ",
      KvDtypeName(dtype), device == "cpu" ? "" : " (f32 is the CPU reference's)"));
}

absl::Status CheckKvRotation(std::optional<KvRotation> rotation) {
  if (!rotation || *rotation == KvRotation::kNone || *rotation == KvRotation::kHadamard)
    return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("kv_rotation ", static_cast<int>(*rotation), " is not none or hadamard"));
}

absl::Status ValidateBatch(std::span<const BatchEntry> entries, const ModelConfig& config,
                           int block_size, int num_kv_blocks, int64_t max_model_len,
                           int max_batch_tokens) {
  if (entries.empty()) return absl::InvalidArgumentError("the batch has no entries");
  int64_t total = 0;
  std::set<int32_t> written;  // blocks receiving new keys and values in this batch
  for (size_t e = 0; e < entries.size(); ++e) {
    const BatchEntry& entry = entries[e];
    if (entry.tokens.empty())
      return absl::InvalidArgumentError(absl::StrCat("entry ", e, " has no tokens"));
    if (entry.start_position < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", e, ": start_position ", entry.start_position, " is negative"));
    }
    for (int32_t id : entry.tokens) {
      if (id < 0 || id >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("entry ", e, ": token id ", id,
                                                       " is outside the vocabulary [0, ",
                                                       config.vocab_size, ")"));
      }
    }
    const int64_t end = int64_t{entry.start_position} + static_cast<int64_t>(entry.tokens.size());
    if (end > max_model_len) {
      return absl::OutOfRangeError(absl::StrCat("entry ", e, ": the sequence would reach ", end,
                                                " positions; the limit is ", max_model_len));
    }
    const int64_t blocks_needed = (end + block_size - 1) / block_size;
    if (static_cast<int64_t>(entry.block_table.size()) < blocks_needed) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", e, ": block table has ", entry.block_table.size(),
                       " blocks; positions [0, ", end, ") need ", blocks_needed));
    }
    for (int64_t b = 0; b < blocks_needed; ++b) {
      const int32_t id = entry.block_table[b];
      if (id < 0 || id >= num_kv_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("entry ", e, ": block id ", id, " outside [0, ", num_kv_blocks, ")"));
      }
      if (b >= entry.start_position / block_size && !written.insert(id).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("entry ", e, ": block ", id, " is written by two entries of the batch"));
      }
    }
    total += static_cast<int64_t>(entry.tokens.size());
  }
  if (total > max_batch_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("the batch has ", total, " tokens; the limit is ", max_batch_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> ExpertsOfRank(const ModelConfig& config,
                                                   const EngineOptions& options) {
  const ExpertExchange& exchange = *options.expert_exchange;
  if (!config.is_moe()) {
    return absl::InvalidArgumentError(
        "expert parallelism needs a mixture-of-experts model; this one is dense");
  }
  if (static_cast<int>(options.expert_owner.size()) != config.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("expert_owner names ",
                                                   options.expert_owner.size(),
                                                   " experts; the model has ", config.num_experts));
  }
  std::vector<int32_t> experts;
  for (int e = 0; e < config.num_experts; ++e) {
    const int owner = options.expert_owner[e];
    if (owner < 0 || owner >= exchange.group_size()) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", e, " is owned by rank ", owner,
                                                     " of a group of ", exchange.group_size()));
    }
    if (owner == exchange.rank()) experts.push_back(e);
  }
  if (experts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert-parallel rank ", exchange.rank(), " owns no expert"));
  }
  return experts;
}

absl::Status Engine::StageStep(std::span<const BatchEntry> entries,
                               std::span<const SampleSpec> samples, const StageIo& io,
                               std::vector<SampleResult>* results) {
  if (!stage().whole_model()) {
    return absl::UnimplementedError(
        absl::StrCat("device ", device_name(), " runs no pipeline stages"));
  }
  return io.logits != nullptr ? Forward(entries, io.logits) : Step(entries, samples, results);
}

}  // namespace bitserve
