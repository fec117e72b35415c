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
inline constexpr uint32_t kWorkerProtocolVersion = 3;

// Element types on the wire. An unspecified KV dtype is the device's default (nullopt); an
// unknown value is InvalidArgument naming `field`.
wire::KvDtype KvDtypeToProto(KvDtype dtype);
absl::StatusOr<std::optional<KvDtype>> KvDtypeFromProto(wire::KvDtype dtype, const char* field);
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
// InvalidArgument when the result does not hold exactly `expected` tokens.
absl::StatusOr<std::vector<SampleResult>> DecodeResults(const wire::StepResult& result,
                                                        size_t expected);

}  // namespace bitserve::rpc
