// The engine's batch types (runtime/engine.h) on the wire of the internal worker protocol
// (rpc/proto/bitserve/internal/worker.proto), both ways. The coordinator encodes a step plan, a
// worker decodes it into spans its engine can run, and the sampled tokens come back.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitserve/internal/worker.pb.h"
#include "runtime/engine/engine.h"

namespace bitserve::rpc {

namespace wire = ::bitserve::internal::v1;

// A worker whose Register.protocol_version differs is refused. Bump on any incompatible change.
// 2: element types as enums (KvDtype, ActivationDtype) instead of strings.
// 3: expert parallelism (ModelShard.expert_owner, StepResult.expert_load).
// 4: KV rotation (KvCacheSpec.rotation, Ready.kv_rotation): a worker that ignored it would cache
//    keys the coordinator's other stages read differently.
// 5: the LM head's element type (ModelShard.lm_head_dtype, Ready.lm_head_dtype): a worker that
//    ignored it would serve the bf16 head's logits for an int8 head's coordinator.
inline constexpr uint32_t kWorkerProtocolVersion = 5;

// Element types on the wire. An unspecified KV dtype is the device's default (nullopt); an
// unknown value is InvalidArgument naming `field`.
wire::KvDtype KvDtypeToProto(KvDtype dtype);
absl::StatusOr<std::optional<KvDtype>> KvDtypeFromProto(wire::KvDtype dtype, const char* field);
// The same for the KV rotation: unspecified is the dtype's default (nullopt).
wire::KvRotation KvRotationToProto(KvRotation rotation);
absl::StatusOr<std::optional<KvRotation>> KvRotationFromProto(wire::KvRotation rotation,
                                                              const char* field);
// The LM head's element type: unspecified is bf16.
wire::LmHeadDtype LmHeadDtypeToProto(LmHeadDtype dtype);
absl::StatusOr<LmHeadDtype> LmHeadDtypeFromProto(wire::LmHeadDtype dtype, const char* field);
wire::ActivationDtype TransferDtypeToProto(TransferDtype dtype);
absl::StatusOr<TransferDtype> TransferDtypeFromProto(wire::ActivationDtype dtype,
                                                     const char* field);

wire::Status StatusToProto(const absl::Status& status);
absl::Status StatusFromProto(const wire::Status& status);

// Fills plan->entries from a batch and its sample specs (engine.h Step: one spec per kLast entry,
// in order). Penalty state (prompt, output) is sent only when a penalty needs it.
void EncodeStep(std::span<const BatchEntry> entries, std::span<const SampleSpec> samples,
                wire::StepPlan* plan);

// A decoded plan: owns the token ids, block tables and sampling parameters that `entries` and
// `samples` point into. Not copyable (the spans would dangle).
struct DecodedStep {
  DecodedStep() = default;
  DecodedStep(const DecodedStep&) = delete;
  DecodedStep& operator=(const DecodedStep&) = delete;

  std::vector<BatchEntry> entries;
  std::vector<SampleSpec> samples;
  std::vector<uint64_t> sampled_seq_ids;  // seq_id of each sampled entry, for the results

 private:
  friend absl::Status DecodeStep(const wire::StepPlan& plan, DecodedStep* out);
  std::vector<std::vector<int32_t>> tokens_, tables_, prompts_, outputs_;
  std::vector<SamplingParams> params_;
};

// InvalidArgument naming the entry and field when the plan is malformed (empty tokens, a
// sampling parameter out of range). Limits that need the model (token ids, block ids) are the
// engine's to check (ValidateBatch).
absl::Status DecodeStep(const wire::StepPlan& plan, DecodedStep* out);

void EncodeResults(std::span<const SampleResult> results, std::span<const uint64_t> seq_ids,
                   wire::StepResult* out);
// InvalidArgument when the result does not hold exactly `expected` tokens, or a sampled token or
// alternative lies outside [0, vocab_size) (it would go on into the sequence and its next plan).
absl::StatusOr<std::vector<SampleResult>> DecodeResults(const wire::StepResult& result,
                                                        size_t expected, int32_t vocab_size);
// InvalidArgument when the result's expert load names a layer outside [0, num_layers) or more
// than num_experts experts: the coordinator keeps a metric series per (layer, expert) it names.
absl::Status CheckExpertLoad(const wire::StepResult& result, int num_layers, int num_experts);

// The transport ranks of the worker's expert-parallel group, [expert_group * expert_group_size,
// (expert_group + 1) * expert_group_size) (group size 0: 1, no expert parallelism). InvalidArgument
// naming the field when the group does not fit Assignment.world_size, has more ranks than
// expert_owner has experts, or the worker's rank_in_expert_group does not fit the group.
absl::StatusOr<std::vector<int>> ExpertGroupRanks(const wire::Assignment& assignment);

}  // namespace bitserve::rpc
