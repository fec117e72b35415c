#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/checkpoint/safetensors_archive.h"
#include "runtime/checkpoint/safetensors_file.h"
#include "runtime/checkpoint/safetensors_header.h"
#include "runtime/checkpoint/safetensors_writer.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// 8-byte little-endian length + header text + data, with no validation at all.
std::string RawFile(std::string_view header, std::string_view data = {}) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(uint64_t{header.size()} >> (8 * i));
  return out.append(header).append(data);
}

std::string RawFileWithLength(uint64_t length, std::string_view rest) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(length >> (8 * i));
  return out.append(rest);
}

// A valid file of U8 tensors laid out in the given order; byte j of tensor k is k + j.
std::string U8File(std::initializer_list<std::pair<std::string, size_t>> tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, size] : tensors) {
    header[name] = {
        {"dtype", "U8"}, {"shape", {size}}, {"data_offsets", {data.size(), data.size() + size}}};
    for (size_t j = 0; j < size; ++j) data.push_back(static_cast<char>(header.size() + j));
  }
  return RawFile(header.dump(), data);
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

WriteOptions Options(uint64_t max_shard_bytes, std::map<std::string, std::string> metadata = {}) {
  WriteOptions options;
  options.max_shard_bytes = max_shard_bytes;
  options.metadata = std::move(metadata);
  return options;
}

TensorSpec Spec(std::string name, DType dtype, std::vector<int64_t> shape, uint8_t seed) {
  return TensorSpec{std::move(name), dtype, std::move(shape), [seed](std::span<uint8_t> out) {
                      for (size_t i = 0; i < out.size(); ++i)
                        out[i] = static_cast<uint8_t>(seed + i);
                      return absl::OkStatus();
                    }};
}

void ExpectBytes(const SafetensorsArchive::Entry* entry, size_t size, uint8_t seed) {
  ASSERT_NE(entry, nullptr);
  ASSERT_EQ(entry->bytes.size(), size) << entry->info->name;
  for (size_t i = 0; i < size; ++i) {
    ASSERT_EQ(entry->bytes[i], static_cast<uint8_t>(seed + i))
        << entry->info->name << " byte " << i;
  }
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           ("bitserve_safetensors_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" +
            std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path Write(const std::string& name, const std::string& bytes) {
    std::ofstream(dir_ / name, std::ios::binary) << bytes;
    return dir_ / name;
  }

  // Writes `bytes` as bad.safetensors and opens it; the error must name the file.
  absl::Status OpenRaw(const std::string& bytes) {
    auto file = SafetensorsFile::Open(Write("bad.safetensors", bytes));
    if (file.ok()) return absl::OkStatus();
    EXPECT_THAT(file.status().message(), HasSubstr("bad.safetensors"));
    return file.status();
  }
  absl::Status OpenHeader(std::string_view header, std::string_view data = {}) {
    return OpenRaw(RawFile(header, data));
  }

  absl::Status OpenArchive() { return SafetensorsArchive::Open(dir_).status(); }

  fs::path dir_;
};

// Every error must carry the right code and name what is wrong (file, tensor, field).
#define EXPECT_ERROR(status_expr, expected_code, ...)                \
  do {                                                               \
    const absl::Status s_ = (status_expr);                           \
    EXPECT_EQ(s_.code(), absl::StatusCode::expected_code) << s_;     \
    for (const char* part : {__VA_ARGS__}) {                         \
      EXPECT_THAT(std::string(s_.message()), HasSubstr(part)) << s_; \
    }                                                                \
  } while (0)

TEST(DTypeTest, NamesAndSizesRoundTrip) {
  for (std::string_view name : {"BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "I32",
                                "F32", "U64", "I64", "F64"}) {
    auto dtype = ParseDType(name);
    ASSERT_TRUE(dtype.ok()) << name;
    EXPECT_EQ(DTypeName(*dtype), name);
  }
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
  EXPECT_EQ(ParseDType("bf16").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SafetensorsTest, RoundTripSingleFile) {
  std::vector<TensorSpec> specs;
  specs.push_back(Spec("z.weight", DType::kBF16, {2, 3}, 10));
  specs.push_back(Spec("a.scale", DType::kF32, {}, 20));
  specs.push_back(Spec("m.empty", DType::kI64, {0, 5}, 30));
  specs.push_back(Spec("m.packed", DType::kU8, {5}, 40));
  ASSERT_TRUE(WriteSafetensors(dir_, std::move(specs), Options(1 << 20, {{"format", "pt"}})).ok());
  EXPECT_TRUE(fs::exists(dir_ / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "model.safetensors.index.json"));

  auto archive = SafetensorsArchive::Open(dir_);
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_EQ(archive->num_files(), 1u);
  EXPECT_THAT(archive->TensorNames(), ElementsAre("a.scale", "m.empty", "m.packed", "z.weight"));
  ExpectBytes(archive->Find("z.weight"), 12, 10);
  ExpectBytes(archive->Find("a.scale"), 4, 20);
  ExpectBytes(archive->Find("m.empty"), 0, 30);
  ExpectBytes(archive->Find("m.packed"), 5, 40);
  EXPECT_EQ(archive->Find("missing"), nullptr);
  const auto* z = archive->Find("z.weight");
  EXPECT_EQ(z->info->dtype, DType::kBF16);
  EXPECT_THAT(z->info->shape, ElementsAre(2, 3));
  EXPECT_EQ(z->info->num_elements(), 6);
  EXPECT_EQ(archive->Find("a.scale")->info->num_elements(), 1);
  EXPECT_EQ(z->file->header().metadata.at("format"), "pt");

  // Moving the archive keeps entries and bytes valid.
  SafetensorsArchive moved = *std::move(archive);
  ExpectBytes(moved.Find("z.weight"), 12, 10);
}

TEST_F(SafetensorsTest, HeaderBytesAreAlignedAndOrdered) {
  std::vector<TensorSpec> specs;
  specs.push_back(Spec("b", DType::kU8, {3}, 1));
  specs.push_back(Spec("a", DType::kU16, {2}, 2));
  ASSERT_TRUE(WriteSafetensors(dir_, std::move(specs), Options(1 << 20, {{"format", "pt"}})).ok());
  const std::string bytes = ReadAll(dir_ / "model.safetensors");
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(length % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + length + 7);
  const std::string header = bytes.substr(8, length);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.substr(header.find_last_not_of(' ') + 1),
            std::string(length - 1 - header.find_last_not_of(' '), ' '));
  // Metadata first, then tensors in the given order with contiguous offsets.
  EXPECT_EQ(header.rfind(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"U8","shape":[3],)"
                         R"("data_offsets":[0,3]},"a":{"dtype":"U16","shape":[2],)"
                         R"("data_offsets":[3,7]}})",
                         0),
            0u)
      << header;
  EXPECT_EQ(bytes.substr(8 + length), std::string("\x01\x02\x03\x02\x03\x04\x05"));
}

TEST_F(SafetensorsTest, RoundTripSharded) {
  std::vector<TensorSpec> specs;
  specs.push_back(Spec("t0", DType::kU8, {40}, 0));
  specs.push_back(Spec("t1", DType::kU8, {5, 8}, 1));  // 40 + 40 > 64: new shard
  specs.push_back(Spec("t2", DType::kF32, {25}, 2));   // 100 > 64: a shard of its own
  specs.push_back(Spec("t3", DType::kU16, {4}, 3));    // after an oversized shard: new shard
  specs.push_back(Spec("t4", DType::kU8, {8}, 4));
  specs.push_back(Spec("t5", DType::kBF16, {0}, 5));
  ASSERT_TRUE(WriteSafetensors(dir_, std::move(specs), Options(64)).ok());
  EXPECT_FALSE(fs::exists(dir_ / "model.safetensors"));
  for (int k = 1; k <= 4; ++k) {
    EXPECT_TRUE(fs::exists(dir_ / ("model-0000" + std::to_string(k) + "-of-00004.safetensors")));
  }
  const auto index = nlohmann::json::parse(ReadAll(dir_ / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 40 + 40 + 100 + 8 + 8);
  EXPECT_EQ(index["weight_map"]["t1"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["t5"], "model-00004-of-00004.safetensors");

  auto archive = SafetensorsArchive::Open(dir_);
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_EQ(archive->num_files(), 4u);
  EXPECT_THAT(archive->TensorNames(), ElementsAre("t0", "t1", "t2", "t3", "t4", "t5"));
  ExpectBytes(archive->Find("t0"), 40, 0);
  ExpectBytes(archive->Find("t2"), 100, 2);
  ExpectBytes(archive->Find("t4"), 8, 4);
  ExpectBytes(archive->Find("t5"), 0, 5);
  EXPECT_EQ(archive->Find("t3")->file->path().filename(), "model-00004-of-00004.safetensors");
  EXPECT_TRUE(archive->Find("t3")->file->header().metadata.empty());
}

TEST_F(SafetensorsTest, RewriteReplacesThePreviousCheckpoint) {
  std::vector<TensorSpec> sharded;
  for (int i = 0; i < 3; ++i) sharded.push_back(Spec(absl::StrCat("s", i), DType::kU8, {8}, 0));
  ASSERT_TRUE(WriteSafetensors(dir_, std::move(sharded), Options(8)).ok());
  std::vector<TensorSpec> single;
  single.push_back(Spec("one", DType::kU8, {8}, 7));
  ASSERT_TRUE(WriteSafetensors(dir_, std::move(single)).ok());
  EXPECT_FALSE(fs::exists(dir_ / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir_ / "model-00001-of-00003.safetensors"));
  auto archive = SafetensorsArchive::Open(dir_);
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_THAT(archive->TensorNames(), ElementsAre("one"));
}

TEST_F(SafetensorsTest, FailedFillLeavesNoFilesAndKeepsOldCheckpoint) {
  std::vector<TensorSpec> old;
  old.push_back(Spec("old", DType::kU8, {4}, 1));
  ASSERT_TRUE(WriteSafetensors(dir_, std::move(old)).ok());
  std::vector<TensorSpec> specs;
  specs.push_back(Spec("good", DType::kU8, {4}, 1));
  specs.push_back(TensorSpec{"bad.tensor", DType::kU8, {4}, [](std::span<uint8_t>) {
                               return absl::UnavailableError("source went away");
                             }});
  EXPECT_ERROR(WriteSafetensors(dir_, std::move(specs), Options(4)), kUnavailable, "bad.tensor",
               "source went away", "model-00002-of-00002.safetensors");
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir_)) files.push_back(entry.path().filename());
  EXPECT_THAT(files, ElementsAre("model.safetensors"));
  auto archive = SafetensorsArchive::Open(dir_);
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_THAT(archive->TensorNames(), ElementsAre("old"));
}

TEST_F(SafetensorsTest, WriterRejectsBadSpecs) {
  std::vector<TensorSpec> dup;
  dup.push_back(Spec("x", DType::kU8, {1}, 0));
  dup.push_back(Spec("x", DType::kU8, {1}, 0));
  EXPECT_ERROR(WriteSafetensors(dir_, std::move(dup)), kInvalidArgument, "'x'", "duplicate");
  std::vector<TensorSpec> negative;
  negative.push_back(Spec("neg", DType::kU8, {2, -1}, 0));
  EXPECT_ERROR(WriteSafetensors(dir_, std::move(negative)), kInvalidArgument, "'neg'", "-1");
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(SafetensorsTest, EmptyCheckpointRoundTrips) {
  ASSERT_TRUE(WriteSafetensors(dir_, {}).ok());
  EXPECT_EQ(ReadAll(dir_ / "model.safetensors"), RawFile("{}      "));
  auto archive = SafetensorsArchive::Open(dir_);
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_TRUE(archive->TensorNames().empty());
  EXPECT_TRUE(OpenHeader(R"({"__metadata__":{}})").ok());
}

TEST_F(SafetensorsTest, ZeroSizedTensorsAndTrailingWhitespaceAreValid) {
  auto file = SafetensorsFile::Open(
      Write("ok.safetensors", RawFile(R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                      R"("a":{"dtype":"F32","shape":[3,0],"data_offsets":[0,0]},)"
                                      R"("c":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}  )"
                                      "\n\t\r ",
                                      "abcd")));
  ASSERT_TRUE(file.ok()) << file.status();
  const auto& tensors = (*file)->header().tensors;
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors[0].name, "a");
  EXPECT_EQ(tensors[1].name, "b");
  EXPECT_EQ(tensors[2].name, "c");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*file)->Data(tensors[1]).data()), 4),
            "abcd");
  EXPECT_EQ((*file)->header().Find("c"), &tensors[2]);
}

// --- Truncation and the length prefix ---------------------------------------------------------

TEST_F(SafetensorsTest, EmptyFile) { EXPECT_ERROR(OpenRaw(""), kDataLoss, "empty"); }

TEST_F(SafetensorsTest, TruncatedInsideLength) {
  EXPECT_ERROR(OpenRaw(U8File({{"w", 4}}).substr(0, 5)), kDataLoss, "8-byte header length");
}

TEST_F(SafetensorsTest, TruncatedInsideHeader) {
  EXPECT_ERROR(OpenRaw(U8File({{"w", 4}}).substr(0, 20)), kDataLoss, "header length",
               "past the end");
}

TEST_F(SafetensorsTest, TruncatedInsideData) {
  const std::string full = U8File({{"first", 4}, {"last.weight", 16}});
  EXPECT_ERROR(OpenRaw(full.substr(0, full.size() - 3)), kDataLoss, "'last.weight'",
               "past the end of the file");
}

TEST_F(SafetensorsTest, HeaderLengthHuge) {
  EXPECT_ERROR(OpenRaw(RawFileWithLength(uint64_t{1} << 40, "{}")), kInvalidArgument,
               "header length", "exceeds");
}

TEST_F(SafetensorsTest, HeaderLengthZero) {
  EXPECT_ERROR(OpenRaw(RawFileWithLength(0, "{}")), kInvalidArgument, "header length is 0");
}

TEST_F(SafetensorsTest, HeaderLengthPastEof) {
  EXPECT_ERROR(OpenRaw(RawFileWithLength(1000, "{}")), kDataLoss, "header length 1000",
               "past the end");
}

TEST(SafetensorsHeaderTest, PrefixMustHoldTheWholeHeader) {
  const std::string file = U8File({{"w", 4}});
  const auto* bytes = reinterpret_cast<const uint8_t*>(file.data());
  EXPECT_ERROR(ParseSafetensorsHeader(std::span(bytes, 12), file.size(), "p.safetensors").status(),
               kInvalidArgument, "p.safetensors", "whole header");
  auto header = ParseSafetensorsHeader(std::span(bytes, file.size() - 4), file.size(), "p");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->data_offset, file.size() - 4);
}

// --- JSON structure ------------------------------------------------------------------------------

TEST_F(SafetensorsTest, NotJson) {
  EXPECT_ERROR(OpenHeader("{not json}"), kInvalidArgument, "header is not valid JSON");
}

TEST_F(SafetensorsTest, NotUtf8) {
  EXPECT_ERROR(OpenHeader("{\"w\xff\":{}}"), kInvalidArgument, "UTF-8");
}

TEST_F(SafetensorsTest, JsonArray) {
  EXPECT_ERROR(OpenHeader("[1, 2]"), kInvalidArgument, "JSON object", "'['");
  EXPECT_ERROR(OpenHeader(" {}"), kInvalidArgument, "starting with '{'");
}

TEST_F(SafetensorsTest, DeeplyNestedJson) {
  EXPECT_ERROR(OpenHeader("{\"w\":" + std::string(100000, '[') + std::string(100000, ']') + "}"),
               kInvalidArgument, "levels deep");
}

TEST_F(SafetensorsTest, DuplicateTensorNames) {
  EXPECT_ERROR(OpenHeader(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                          "ab"),
               kInvalidArgument, "duplicate tensor name 'w'");
  EXPECT_ERROR(
      OpenHeader(R"({"w":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", "a"),
      kInvalidArgument, "'w'", "duplicate key 'dtype'");
}

TEST_F(SafetensorsTest, EntryNotObject) {
  EXPECT_ERROR(OpenHeader(R"({"w":[1]})"), kInvalidArgument, "'w'", "must be an object");
}

TEST_F(SafetensorsTest, EmptyTensorName) {
  EXPECT_ERROR(OpenHeader(R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})"),
               kInvalidArgument, "name is empty");
}

TEST_F(SafetensorsTest, MissingFields) {
  EXPECT_ERROR(OpenHeader(R"({"w.a":{"shape":[1],"data_offsets":[0,1]}})", "a"), kInvalidArgument,
               "'w.a'", "missing \"dtype\"");
  EXPECT_ERROR(OpenHeader(R"({"w.b":{"dtype":"U8","data_offsets":[0,1]}})", "a"), kInvalidArgument,
               "'w.b'", "missing \"shape\"");
  EXPECT_ERROR(OpenHeader(R"({"w.c":{"dtype":"U8","shape":[1]}})", "a"), kInvalidArgument, "'w.c'",
               "missing \"data_offsets\"");
}

TEST_F(SafetensorsTest, WrongTypes) {
  EXPECT_ERROR(OpenHeader(R"({"w":{"dtype":8,"shape":[1],"data_offsets":[0,1]}})", "a"),
               kInvalidArgument, "'w'", "\"dtype\" must be a string");
  EXPECT_ERROR(OpenHeader(R"({"neg":{"dtype":"U8","shape":[2,-1],"data_offsets":[0,1]}})", "a"),
               kInvalidArgument, "'neg'", "\"shape\"[1]", "-1");
  EXPECT_ERROR(OpenHeader(R"({"flt":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", "a"),
               kInvalidArgument, "'flt'", "\"shape\"[0]", "non-integer");
  EXPECT_ERROR(OpenHeader(R"({"str":{"dtype":"U8","shape":"1","data_offsets":[0,1]}})", "a"),
               kInvalidArgument, "'str'", "\"shape\" must be an array");
  EXPECT_ERROR(OpenHeader(R"({"r9":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],)"
                          R"("data_offsets":[0,1]}})",
                          "a"),
               kInvalidArgument, "'r9'", "rank 9");
  EXPECT_ERROR(OpenHeader(R"({"big":{"dtype":"U8","shape":[1099511627776],)"
                          R"("data_offsets":[0,1]}})",
                          "a"),
               kInvalidArgument, "'big'", "2^40");
  EXPECT_ERROR(OpenHeader(R"({"o3":{"dtype":"U8","shape":[1],"data_offsets":[0,1,1]}})", "a"),
               kInvalidArgument, "'o3'", "\"data_offsets\"", "array of 3");
  EXPECT_ERROR(OpenHeader(R"({"oneg":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", "a"),
               kInvalidArgument, "'oneg'", "\"data_offsets\"", "-1");
  EXPECT_ERROR(OpenHeader(R"({"rev":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}})", "a"),
               kInvalidArgument, "'rev'", "begin > end");
}

TEST_F(SafetensorsTest, UnknownDtype) {
  EXPECT_ERROR(OpenHeader(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "a"),
               kInvalidArgument, "'w'", "unknown dtype 'F8_E4M3'");
}

TEST_F(SafetensorsTest, UnknownKey) {
  EXPECT_ERROR(OpenHeader(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}})", "a"),
               kInvalidArgument, "'w'", "unknown key 'x'");
}

TEST_F(SafetensorsTest, ByteLengthMismatch) {
  EXPECT_ERROR(OpenHeader(R"({"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,4]}})", "abcd"),
               kInvalidArgument, "'w'", "span 4 bytes", "need 8");
  EXPECT_ERROR(OpenHeader(R"({"ovf":{"dtype":"F64","shape":[1099511627775,1099511627775,)"
                          R"(1099511627775],"data_offsets":[0,8]}})",
                          "abcdefgh"),
               kInvalidArgument, "'ovf'", "overflows");
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  EXPECT_ERROR(OpenHeader(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
                          "0123456789ab"),
               kInvalidArgument, "'b'", "overlap", "'a'");
}

TEST_F(SafetensorsTest, HoleInDataSection) {
  EXPECT_ERROR(OpenHeader(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
                          "0123456789ab"),
               kInvalidArgument, "[4, 8)", "hole before tensor 'b'");
  EXPECT_ERROR(OpenHeader(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "01234567"),
               kInvalidArgument, "[4, 8)", "after tensor 'a'");
}

TEST_F(SafetensorsTest, OffsetsPastEof) {
  EXPECT_ERROR(OpenHeader(R"({"w":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}})", "0123"),
               kDataLoss, "'w'", "past the end of the file");
}

TEST_F(SafetensorsTest, BadMetadata) {
  EXPECT_ERROR(OpenHeader(R"({"__metadata__":"pt"})"), kInvalidArgument, "\"__metadata__\"",
               "object of string to string");
  EXPECT_ERROR(OpenHeader(R"({"__metadata__":{"format":1}})"), kInvalidArgument,
               "\"__metadata__\" key 'format'", "must map to a string");
  EXPECT_ERROR(OpenHeader(R"({"__metadata__":{},"__metadata__":{}})"), kInvalidArgument,
               "\"__metadata__\" appears twice");
  EXPECT_ERROR(OpenHeader(R"({"__metadata__":{"k":"a","k":"b"}})"), kInvalidArgument,
               "\"__metadata__\": duplicate key 'k'");
}

// --- Sharded checkpoints -------------------------------------------------------------------------

class ShardedTest : public SafetensorsTest {
 protected:
  void WriteIndex(const std::string& text) { Write("model.safetensors.index.json", text); }
  void WriteTwoShards() {
    Write("s1.safetensors", U8File({{"a", 4}, {"b", 2}}));
    Write("s2.safetensors", U8File({{"c", 8}}));
  }
};

TEST_F(ShardedTest, ValidIndex) {
  WriteTwoShards();
  WriteIndex(R"({"metadata":{"total_size":14},"weight_map":{"a":"s1.safetensors",)"
             R"("b":"s1.safetensors","c":"s2.safetensors"}})");
  auto archive = SafetensorsArchive::Open(dir_);
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_EQ(archive->num_files(), 2u);
  EXPECT_THAT(archive->TensorNames(), ElementsAre("a", "b", "c"));
  EXPECT_EQ(archive->Find("c")->file->path().filename(), "s2.safetensors");
}

TEST_F(ShardedTest, NoCheckpoint) {
  EXPECT_ERROR(OpenArchive(), kNotFound, dir_.c_str(), "model.safetensors ",
               "model.safetensors.index.json");
  EXPECT_ERROR(SafetensorsArchive::Open(dir_ / "nope").status(), kNotFound, "nope");
}

TEST_F(ShardedTest, MissingShardFile) {
  Write("s1.safetensors", U8File({{"a", 4}, {"b", 2}}));
  WriteIndex(R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"}})");
  EXPECT_ERROR(OpenArchive(), kNotFound, "s2.safetensors", "does not exist", "'c'");
}

TEST_F(ShardedTest, TensorListedButAbsentFromShard) {
  WriteTwoShards();
  WriteIndex(R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors",)"
             R"("d":"s2.safetensors"}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "model.safetensors.index.json", "'d'",
               "s2.safetensors", "does not hold it");
}

TEST_F(ShardedTest, TensorInShardMissingFromIndex) {
  WriteTwoShards();
  WriteIndex(R"({"weight_map":{"a":"s1.safetensors","c":"s2.safetensors"}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "s1.safetensors", "'b'",
               "model.safetensors.index.json", "does not list");
}

TEST_F(ShardedTest, TensorMappedToAnotherShard) {
  WriteTwoShards();
  WriteIndex(R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "s1.safetensors", "'b'",
               "maps to 's2.safetensors'");
}

TEST_F(ShardedTest, SameTensorInTwoShards) {
  Write("s1.safetensors", U8File({{"a", 4}}));
  Write("s2.safetensors", U8File({{"a", 4}, {"c", 1}}));
  WriteIndex(R"({"weight_map":{"a":"s1.safetensors","c":"s2.safetensors"}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "'a'", "two shards", "s1.safetensors",
               "s2.safetensors");
}

TEST_F(ShardedTest, DuplicateInWeightMap) {
  WriteTwoShards();
  WriteIndex(R"({"weight_map":{"a":"s1.safetensors","a":"s2.safetensors"}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "model.safetensors.index.json", "'a'", "twice");
}

TEST_F(ShardedTest, TotalSizeMismatch) {
  WriteTwoShards();
  WriteIndex(R"({"metadata":{"total_size":15},"weight_map":{"a":"s1.safetensors",)"
             R"("b":"s1.safetensors","c":"s2.safetensors"}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "model.safetensors.index.json", "total_size", "15",
               "14 bytes");
  WriteIndex(R"({"metadata":{"total_size":"14"},"weight_map":{}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "total_size", "non-negative integer");
}

TEST_F(ShardedTest, PathTraversalInShardName) {
  WriteIndex(R"({"weight_map":{"a":"../s1.safetensors"}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "model.safetensors.index.json", "'a'",
               "'../s1.safetensors'", "not a plain file name");
  WriteIndex(R"({"weight_map":{"b":"/etc/passwd"}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "'b'", "not a plain file name");
}

TEST_F(ShardedTest, MalformedIndex) {
  WriteIndex(R"({"weight_map":{"a":)");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "model.safetensors.index.json", "not valid JSON");
  WriteIndex(R"(["weight_map"])");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "model.safetensors.index.json", "JSON object");
  WriteIndex(R"({"metadata":{}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "model.safetensors.index.json", "\"weight_map\"");
  WriteIndex(R"({"weight_map":)" + std::string(1000, '[') + std::string(1000, ']') + "}");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "model.safetensors.index.json", "levels deep");
  WriteIndex(R"({"weight_map":{"a":1}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "'a'", "must map to a file name");
}

TEST_F(ShardedTest, BadShardIsReportedWithItsPath) {
  Write("s1.safetensors", RawFile("{\"a\":1}"));
  WriteIndex(R"({"weight_map":{"a":"s1.safetensors"}})");
  EXPECT_ERROR(OpenArchive(), kInvalidArgument, "s1.safetensors", "'a'");
}

}  // namespace
}  // namespace bitserve
