// Conversion between the public bitserve.v1 messages (rpc/proto/bitserve/v1/bitserve.proto) and
// the C++ types of rpc/generation_backend.h, in both directions: the service parses requests and
// writes responses, the client (rpc/client.h) does the reverse. Request validation lives here so
// that both ends reject a bad parameter with the same message.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "bitserve/v1/bitserve.pb.h"
#include "grpcpp/support/status.h"
#include "rpc/generation_backend.h"

namespace bitserve::rpc {

// absl and gRPC status codes are numerically identical (both are google.rpc.Code).
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Defaults for fields left out of a GenerateRequest (documented in the proto and docs/api.md).
inline constexpr int kDefaultMaxTokens = 256;
inline constexpr int kMaxTopLogprobs = 20;

// Checks every field and fills `input` and `params`. InvalidArgument naming the field, e.g.
// "sampling.top_p must be in (0, 1], got 1.5" or "input must be set: one of text, messages,
// token_ids". Range checks that need the model (token ids against the vocabulary, prompt length
// against max_model_len) are left to the backend.
absl::Status ParseGenerateRequest(const v1::GenerateRequest& request, GenerationInput* input,
                                  GenerationParams* params);

// The request that ParseGenerateRequest turns back into (input, params).
v1::GenerateRequest ToGenerateRequest(const GenerationInput& input, const GenerationParams& params);

// One streamed chunk as a response message. A final chunk of finish reason "error" is not a
// message (the stream ends with its status instead): only its tokens, if any, are converted.
v1::GenerateResponse ToGenerateResponse(const GenerationChunk& chunk,
                                        const std::string& request_id);
// The reverse. A message with a finish reason becomes a final chunk.
GenerationChunk FromGenerateResponse(const v1::GenerateResponse& response);

// "eos" <-> FINISH_REASON_EOS ...; unknown strings map to FINISH_REASON_UNSPECIFIED and back to "".
v1::FinishReason FinishReasonToProto(absl::string_view reason);
std::string FinishReasonFromProto(v1::FinishReason reason);

void ToModelInfoResponse(const ModelSummary& summary, v1::ModelInfoResponse* response);
ModelSummary FromModelInfoResponse(const v1::ModelInfoResponse& response);

}  // namespace bitserve::rpc
