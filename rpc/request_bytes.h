// Requests of the public API parsed from their raw bytes by bitserve itself, not by gRPC's
// protobuf deserializer: that one answers malformed bytes or invalid UTF-8 in a string field with
// INTERNAL and an empty message (docs/api.md keeps INTERNAL for server bugs), and libprotobuf logs
// an error line for every such request. Here a bad request is INVALID_ARGUMENT naming what is
// wrong: the field path for invalid UTF-8 ("messages.messages[1].content"), or "malformed" bytes.
//
// The wire is walked once with the message's descriptor before it is parsed: unknown fields are
// skipped (as protobuf does), string fields are checked to be UTF-8, nested messages are walked
// in turn, and a length, tag or varint that does not fit the bytes is malformed.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"

namespace bitserve::rpc {

// Parses `bytes` into `message` (cleared first). INVALID_ARGUMENT naming the field or the defect.
absl::Status ParseRequestBytes(const std::string& bytes, google::protobuf::Message* message);
// The same from a received message, which is emptied once copied (a long prompt is then held
// twice at most, not three times).
absl::Status ParseRequestBytes(grpc::ByteBuffer* buffer, google::protobuf::Message* message);

// `message` serialized into `buffer` (for the raw streams of GenerationService).
absl::Status SerializeToBuffer(const google::protobuf::Message& message, grpc::ByteBuffer* buffer);

}  // namespace bitserve::rpc
