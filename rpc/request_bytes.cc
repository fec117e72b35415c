#include "rpc/request_bytes.h"

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "runtime/text/tokenizer/unicode_text.h"

namespace bitserve::rpc {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

// Nested messages deeper than this are refused (our messages nest two levels; protobuf's own
// limit is 100).
constexpr int kMaxDepth = 32;

absl::Status Malformed(const Descriptor& root, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("the request is not a valid ", root.full_name(),
                                                 ": malformed protobuf bytes (", what, ")"));
}

// Walks the fields of one message whose bytes are what `in` holds up to its current limit.
// `bytes` is the whole buffer `in` reads (its positions index it); `path` names this message.
absl::Status Walk(CodedInputStream& in, const std::string& bytes, const Descriptor& type,
                  const Descriptor& root, const std::string& path, int depth) {
  absl::flat_hash_map<int, int> occurrences;  // of repeated fields, for their indexes
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) {
      // End of the bytes (or of the nested message), or a tag that is not a varint / field 0.
      if (in.ConsumedEntireMessage()) return absl::OkStatus();
      return Malformed(root, absl::StrCat("a bad field tag", path.empty() ? "" : " in ", path));
    }
    const int number = static_cast<int>(WireFormatLite::GetTagFieldNumber(tag));
    const FieldDescriptor* field = type.FindFieldByNumber(number);
    const bool length_delimited =
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    const bool is_string = field != nullptr && field->type() == FieldDescriptor::TYPE_STRING;
    const bool is_message = field != nullptr && field->type() == FieldDescriptor::TYPE_MESSAGE;
    if (!length_delimited || !(is_string || is_message)) {
      // Scalars, bytes, packed numbers, unknown fields (also groups): only their framing matters.
      if (!WireFormatLite::SkipField(&in, tag)) {
        return Malformed(root, absl::StrCat("field number ", number, " runs past the end"));
      }
      continue;
    }
    std::string name = path.empty() ? field->name() : absl::StrCat(path, ".", field->name());
    if (field->is_repeated()) absl::StrAppend(&name, "[", occurrences[number]++, "]");
    uint32_t length = 0;
    if (!in.ReadVarint32(&length) ||
        static_cast<int64_t>(length) > static_cast<int64_t>(bytes.size()) - in.CurrentPosition() ||
        (in.BytesUntilLimit() >= 0 && static_cast<int64_t>(length) > in.BytesUntilLimit())) {
      return Malformed(root, absl::StrCat(name, " runs past the end"));
    }
    if (is_string) {
      const absl::string_view value(bytes.data() + in.CurrentPosition(), length);
      if (!IsValidUtf8(value)) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " is not valid UTF-8 (string fields must be UTF-8 text)"));
      }
      in.Skip(static_cast<int>(length));
      continue;
    }
    if (depth >= kMaxDepth) return Malformed(root, absl::StrCat(name, " nests too deep"));
    const CodedInputStream::Limit limit = in.PushLimit(static_cast<int>(length));
    if (absl::Status s = Walk(in, bytes, *field->message_type(), root, name, depth + 1); !s.ok()) {
      return s;
    }
    in.PopLimit(limit);
  }
}

}  // namespace

absl::Status ParseRequestBytes(const std::string& bytes, google::protobuf::Message* message) {
  message->Clear();
  const Descriptor& root = *message->GetDescriptor();
  {
    CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                        static_cast<int>(bytes.size()));
    if (absl::Status s = Walk(in, bytes, root, root, "", 0); !s.ok()) return s;
  }
  // The walk checked what protobuf would refuse; anything left is malformed as well.
  if (!message->ParseFromString(bytes)) return Malformed(root, "protobuf could not parse it");
  return absl::OkStatus();
}

absl::Status ParseRequestBytes(grpc::ByteBuffer* buffer, google::protobuf::Message* message) {
  std::string bytes;
  {
    std::vector<grpc::Slice> slices;
    if (!buffer->Dump(&slices).ok()) {
      return absl::InvalidArgumentError("the request message could not be read");
    }
    bytes.reserve(buffer->Length());
    for (const grpc::Slice& s : slices)
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    buffer->Clear();
  }
  return ParseRequestBytes(bytes, message);
}

absl::Status SerializeToBuffer(const google::protobuf::Message& message, grpc::ByteBuffer* buffer) {
  std::string bytes;
  if (!message.SerializeToString(&bytes)) {
    return absl::InternalError(
        absl::StrCat("cannot serialize a ", message.GetDescriptor()->full_name()));
  }
  grpc::Slice slice(std::move(bytes));
  *buffer = grpc::ByteBuffer(&slice, 1);
  return absl::OkStatus();
}

}  // namespace bitserve::rpc
