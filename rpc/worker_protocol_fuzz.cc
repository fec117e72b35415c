// libFuzzer target for the internal worker protocol (rpc/worker_protocol.h): the bytes are read as
// each message a peer sends, a CoordinatorMessage (what a worker receives) and a WorkerMessage
// (what the coordinator receives), and every decoder of peer input runs on what they hold. A
// decoder gives an error naming what is wrong, or values the engine can rely on; never a crash, and
// never an allocation sized by a number in the message rather than by its bytes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "google/protobuf/stubs/logging.h"
#include "rpc/worker_protocol.h"

namespace {

namespace wire = bitserve::rpc::wire;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "worker_protocol_fuzz: %s\n", what);
  std::abort();
}

void CheckError(const absl::Status& status) {
  if (status.ok() || status.message().empty()) Fail("an error without a message");
}

void CheckStatus(const wire::Status& proto) {
  const absl::Status status = bitserve::rpc::StatusFromProto(proto);
  if (status.ok() != (proto.code() == 0)) Fail("StatusFromProto lost whether the peer failed");
}

void FuzzStep(const wire::StepPlan& plan) {
  bitserve::rpc::DecodedStep step;
  if (absl::Status s = bitserve::rpc::DecodeStep(plan, &step); !s.ok()) return CheckError(s);
  if (step.entries.size() != static_cast<size_t>(plan.entries_size()) ||
      step.samples.size() != step.sampled_seq_ids.size()) {
    Fail("DecodeStep's entries or samples do not match the plan");
  }
  // Read everything the spans point at: ASan reports a span into freed or moved storage.
  int64_t sum = 0;
  for (const bitserve::BatchEntry& e : step.entries) {
    if (e.tokens.empty()) Fail("DecodeStep accepted an entry without tokens");
    for (int32_t t : e.tokens) sum += t;
    for (int32_t b : e.block_table) sum += b;
  }
  for (const bitserve::SampleSpec& s : step.samples) {
    if (s.params == nullptr || !s.params->Validate().ok()) Fail("an unchecked sampling spec");
    for (int32_t t : s.prompt) sum += t;
    for (int32_t t : s.output) sum += t;
  }
  static volatile int64_t sink;
  sink = sum;  // the reads are not optimized away
}

void FuzzAssignment(const wire::Assignment& a) {
  auto kv = bitserve::rpc::KvDtypeFromProto(a.kv_cache().dtype(), "Assignment.kv_cache.dtype");
  if (!kv.ok()) CheckError(kv.status());
  auto rotation =
      bitserve::rpc::KvRotationFromProto(a.kv_cache().rotation(), "Assignment.kv_cache.rotation");
  if (!rotation.ok()) CheckError(rotation.status());
  auto transfer = bitserve::rpc::TransferDtypeFromProto(a.transport().activation_dtype(),
                                                        "Assignment.transport.activation_dtype");
  if (!transfer.ok()) CheckError(transfer.status());
  auto group = bitserve::rpc::ExpertGroupRanks(a);
  if (!group.ok()) return CheckError(group.status());
  if (group->empty() || static_cast<int64_t>(group->size()) > a.world_size()) {
    Fail("ExpertGroupRanks made a group that does not fit the world");
  }
  for (int rank : *group) {
    if (rank < 0 || rank >= a.world_size()) Fail("ExpertGroupRanks made a rank outside the world");
  }
}

void FuzzResult(const wire::StepResult& result) {
  if (result.has_status()) CheckStatus(result.status());
  constexpr int32_t kVocab = 1000;
  const size_t n = static_cast<size_t>(result.tokens_size());
  auto tokens = bitserve::rpc::DecodeResults(result, n, kVocab);
  if (!tokens.ok()) return CheckError(tokens.status());
  auto in_vocab = [](int32_t id) { return id >= 0 && id < kVocab; };
  for (const bitserve::SampleResult& t : *tokens) {
    if (!in_vocab(t.token)) Fail("DecodeResults accepted a token outside the vocabulary");
    for (const bitserve::TokenLogprob& top : t.top_logprobs) {
      if (!in_vocab(top.token)) Fail("DecodeResults accepted an alternative out of the vocabulary");
    }
  }
  CheckError(bitserve::rpc::DecodeResults(result, n + 1, kVocab).status());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // A string field with invalid UTF-8 fails the parse and logs a line: quiet, or the log is most
  // of the run.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  wire::CoordinatorMessage to_worker;
  if (to_worker.ParseFromArray(data, static_cast<int>(size))) {
    if (to_worker.has_step()) FuzzStep(to_worker.step());
    if (to_worker.has_assignment()) FuzzAssignment(to_worker.assignment());
    if (to_worker.has_reject()) CheckStatus(to_worker.reject().status());
  }
  wire::WorkerMessage to_coordinator;
  if (to_coordinator.ParseFromArray(data, static_cast<int>(size))) {
    if (to_coordinator.has_step_result()) FuzzResult(to_coordinator.step_result());
    if (to_coordinator.has_failure()) CheckStatus(to_coordinator.failure().status());
    if (to_coordinator.has_ready()) {
      auto kv =
          bitserve::rpc::KvDtypeFromProto(to_coordinator.ready().kv_dtype(), "Ready.kv_dtype");
      if (!kv.ok()) CheckError(kv.status());
      auto rotation = bitserve::rpc::KvRotationFromProto(to_coordinator.ready().kv_rotation(),
                                                         "Ready.kv_rotation");
      if (!rotation.ok()) CheckError(rotation.status());
    }
  }
  return 0;
}
