// Bad checkpoints fail to load with an error naming the file and the tensor or field; nothing
// crashes or reads out of bounds (the suite also runs clean under ASan/UBSan builds).
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "base/bf16.h"
#include "base/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint/model_weights.h"
#include "runtime/checkpoint/safetensors_archive.h"
#include "runtime/checkpoint/safetensors_writer.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string ReadAll(const fs::path& p) { return ReadFileToString(p).value_or(""); }

void WriteAll(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// A fresh copy of the test-gqa checkpoint per test.
class BadCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("bitserve_bad_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    auto preset = FindModelPreset("test-gqa");
    ASSERT_TRUE(preset.ok());
    ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, dir_, {}).ok());
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path file() const { return dir_ / "model.safetensors"; }

  std::string LoadError() {
    auto w = LoadModelWeights(dir_);
    EXPECT_FALSE(w.ok()) << "loaded a bad checkpoint";
    return w.ok() ? "" : std::string(w.status().message());
  }

  // Rewrites the checkpoint with `edit` applied to its tensor list (bytes copied from the
  // original).
  void Rewrite(const std::function<void(std::vector<TensorSpec>&)>& edit) {
    auto archive = SafetensorsArchive::Open(dir_);
    ASSERT_TRUE(archive.ok());
    std::vector<std::string> names = archive->TensorNames();
    std::vector<std::string> blobs;
    std::vector<TensorSpec> specs;
    for (const std::string& name : names) {
      const auto* e = archive->Find(name);
      blobs.emplace_back(reinterpret_cast<const char*>(e->bytes.data()), e->bytes.size());
    }
    for (size_t i = 0; i < names.size(); ++i) {
      const auto* e = archive->Find(names[i]);
      std::string blob = blobs[i];
      specs.push_back({names[i], e->info->dtype, e->info->shape, [blob](std::span<uint8_t> out) {
                         std::memcpy(out.data(), blob.data(), std::min(out.size(), blob.size()));
                         return absl::OkStatus();
                       }});
    }
    edit(specs);
    fs::path tmp = dir_.string() + "_new";
    ASSERT_TRUE(WriteSafetensors(tmp, std::move(specs)).ok());
    fs::copy_file(tmp / "model.safetensors", file(), fs::copy_options::overwrite_existing);
    fs::remove_all(tmp);
  }

  // Byte offset in the file of a tensor's data.
  uint64_t Offset(const std::string& name) {
    auto archive = SafetensorsArchive::Open(dir_);
    EXPECT_TRUE(archive.ok());
    const auto* e = archive->Find(name);
    return e->file->header().data_offset + e->info->begin;
  }

  void EditConfig(const std::string& from, const std::string& to) {
    std::string config = ReadAll(dir_ / "config.json");
    size_t at = config.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    config.replace(at, from.size(), to);
    WriteAll(dir_ / "config.json", config);
  }

  fs::path dir_;
};

TEST_F(BadCheckpoint, LoadsWhenIntact) { EXPECT_TRUE(LoadModelWeights(dir_).ok()); }

TEST_F(BadCheckpoint, TruncatedInsideTheData) {
  fs::resize_file(file(), fs::file_size(file()) - 1000);
  EXPECT_THAT(LoadError(), HasSubstr("model.safetensors"));
}

TEST_F(BadCheckpoint, TruncatedInsideTheHeader) {
  fs::resize_file(file(), 100);
  EXPECT_THAT(LoadError(), HasSubstr("model.safetensors"));
}

TEST_F(BadCheckpoint, OversizedHeaderLength) {
  std::string bytes = ReadAll(file());
  uint64_t huge = uint64_t{1} << 40;
  std::memcpy(bytes.data(), &huge, 8);
  WriteAll(file(), bytes);
  EXPECT_THAT(LoadError(), HasSubstr("model.safetensors"));
}

TEST_F(BadCheckpoint, CorruptedHeaderJson) {
  std::string bytes = ReadAll(file());
  bytes[8 + 5] = '#';
  WriteAll(file(), bytes);
  EXPECT_THAT(LoadError(), HasSubstr("model.safetensors"));
}

TEST_F(BadCheckpoint, WeightCodeThree) {
  std::string bytes = ReadAll(file());
  bytes[Offset("model.layers.1.mlp.up_proj.weight") + 17] =
      static_cast<char>(0xC5);  // code 3 in bits 6-7
  WriteAll(file(), bytes);
  EXPECT_THAT(LoadError(),
              AllOf(HasSubstr("model.safetensors"), HasSubstr("model.layers.1.mlp.up_proj.weight"),
                    HasSubstr("code 3")));
}

TEST_F(BadCheckpoint, MissingTensor) {
  Rewrite([](std::vector<TensorSpec>& specs) {
    std::erase_if(specs, [](const TensorSpec& s) {
      return s.name == "model.layers.2.mlp.ffn_sub_norm.weight";
    });
  });
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("missing tensor model.layers.2.mlp.ffn_sub_norm.weight"),
                                 HasSubstr("[320]")));
}

TEST_F(BadCheckpoint, UnexpectedTensor) {
  Rewrite([](std::vector<TensorSpec>& specs) {
    TensorSpec extra = specs.back();
    extra.name = "model.layers.0.self_attn.rotary_emb.inv_freq";
    specs.push_back(extra);
  });
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("model.safetensors"), HasSubstr("rotary_emb.inv_freq"),
                                 HasSubstr("unexpected tensor")));
}

TEST_F(BadCheckpoint, LmHeadWhileTied) {
  Rewrite([](std::vector<TensorSpec>& specs) {
    for (const TensorSpec& s : specs) {
      if (s.name == "model.embed_tokens.weight") {
        TensorSpec head = s;
        head.name = "lm_head.weight";
        specs.push_back(head);
        break;
      }
    }
  });
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("lm_head.weight"), HasSubstr("tie_word_embeddings")));
}

TEST_F(BadCheckpoint, WrongDtype) {
  Rewrite([](std::vector<TensorSpec>& specs) {
    for (TensorSpec& s : specs) {
      if (s.name == "model.layers.0.self_attn.k_proj.weight") s.dtype = DType::kI8;
    }
  });
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("model.layers.0.self_attn.k_proj.weight"),
                                 HasSubstr("dtype I8, expected U8")));
}

TEST_F(BadCheckpoint, WrongShape) {
  Rewrite([](std::vector<TensorSpec>& specs) {
    for (TensorSpec& s : specs) {
      if (s.name == "model.layers.0.self_attn.v_proj.weight") s.shape = {8, 256};  // same bytes
    }
  });
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("model.layers.0.self_attn.v_proj.weight"),
                                 HasSubstr("shape [8, 256]"), HasSubstr("[16, 128]")));
}

TEST_F(BadCheckpoint, ScalarWeightScaleIsAccepted) {
  Rewrite([](std::vector<TensorSpec>& specs) {
    for (TensorSpec& s : specs) {
      if (s.name == "model.layers.0.mlp.up_proj.weight_scale") s.shape = {};
    }
  });
  auto w = LoadModelWeights(dir_);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_GT(w->layers[0].ffn.up.scale.value, 0.0f);
}

TEST_F(BadCheckpoint, ConfigContradictsTensors) {
  EditConfig("\"hidden_size\": 128", "\"hidden_size\": 256");
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("model.embed_tokens.weight"), HasSubstr("[1024, 128]"),
                                 HasSubstr("[1024, 256]")));
}

TEST_F(BadCheckpoint, ConfigHasMoreLayersThanTheCheckpoint) {
  EditConfig("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 4");
  EXPECT_THAT(LoadError(), HasSubstr("missing tensor model.layers.3."));
}

TEST_F(BadCheckpoint, NonFiniteNormWeight) {
  std::string bytes = ReadAll(file());
  uint16_t nan = FloatToBf16(NAN);
  std::memcpy(bytes.data() + Offset("model.norm.weight") + 2 * 7, &nan, 2);
  WriteAll(file(), bytes);
  EXPECT_THAT(LoadError(),
              AllOf(HasSubstr("model.norm.weight"), HasSubstr("element 7 is not finite")));
}

// The embedding (and, untied, the LM head) feed every output: a NaN or Inf there once made every
// generated token 0 without an error. Each is checked, whichever element is bad.
TEST_F(BadCheckpoint, NonFiniteEmbedding) {
  std::string bytes = ReadAll(file());
  const uint16_t nan = FloatToBf16(NAN);
  // Row 1000, column 5 of [1024, 128]: in the last chunk of the tensor, not the first.
  std::memcpy(bytes.data() + Offset("model.embed_tokens.weight") + 2 * (1000 * 128 + 5), &nan, 2);
  WriteAll(file(), bytes);
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("model.embed_tokens.weight"),
                                 HasSubstr("element 128005 (row 1000, column 5) is NaN")));
}

TEST_F(BadCheckpoint, InfiniteEmbeddingOnAPipelineStage) {
  std::string bytes = ReadAll(file());
  const uint16_t inf = FloatToBf16(-INFINITY);
  std::memcpy(bytes.data() + Offset("model.embed_tokens.weight"), &inf, 2);
  WriteAll(file(), bytes);
  auto reader = CheckpointReader::Open(dir_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  // The first stage embeds; a tied last stage reads the embedding as its LM head.
  for (const PipelineStage& stage : {PipelineStage{0, 3, 0, 1}, PipelineStage{2, 3, 2, 3}}) {
    auto ends = reader->StageEnds(stage);
    ASSERT_FALSE(ends.ok());
    EXPECT_THAT(ends.status().message(),
                AllOf(HasSubstr("model.embed_tokens.weight"),
                      HasSubstr("element 0 (row 0, column 0) is infinite")));
  }
  // A middle stage reads neither.
  EXPECT_TRUE(reader->StageEnds(PipelineStage{1, 3, 1, 2}).ok());
}

TEST_F(BadCheckpoint, NonFiniteUntiedLmHead) {
  EditConfig("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
  Rewrite([](std::vector<TensorSpec>& specs) {
    for (const TensorSpec& s : specs) {
      if (s.name == "model.embed_tokens.weight") {
        TensorSpec head = s;
        head.name = "lm_head.weight";
        head.fill = [](std::span<uint8_t> out) {
          std::memset(out.data(), 0, out.size());
          const uint16_t nan = FloatToBf16(NAN);
          std::memcpy(out.data() + out.size() - 2, &nan, 2);  // the very last element
          return absl::OkStatus();
        };
        specs.push_back(head);
        break;
      }
    }
  });
  EXPECT_THAT(LoadError(),
              AllOf(HasSubstr("lm_head.weight"), HasSubstr("(row 1023, column 127) is NaN")));
}

TEST_F(BadCheckpoint, NonPositiveWeightScale) {
  std::string bytes = ReadAll(file());
  uint16_t minus = FloatToBf16(-0.5f);
  std::memcpy(bytes.data() + Offset("model.layers.2.self_attn.o_proj.weight_scale"), &minus, 2);
  WriteAll(file(), bytes);
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("model.layers.2.self_attn.o_proj.weight_scale"),
                                 HasSubstr("must be positive")));
}

TEST_F(BadCheckpoint, MissingConfig) {
  fs::remove(dir_ / "config.json");
  EXPECT_THAT(LoadError(), HasSubstr("config.json"));
}

TEST_F(BadCheckpoint, TruncatedConfig) {
  std::string config = ReadAll(dir_ / "config.json");
  WriteAll(dir_ / "config.json", config.substr(0, config.size() / 2));
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("config.json"), HasSubstr("not valid JSON")));
}

TEST_F(BadCheckpoint, MissingWeights) {
  fs::remove(file());
  EXPECT_THAT(LoadError(), HasSubstr("model.safetensors"));
}

}  // namespace
}  // namespace bitserve
