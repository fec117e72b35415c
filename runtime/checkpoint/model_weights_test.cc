// Synthetic checkpoints load back with the statistics they promise, sharded or not, bit for bit
// reproducibly.
#include "runtime/checkpoint/model_weights.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint/safetensors_archive.h"
#include "runtime/checkpoint/synthetic_checkpoint.h"

namespace bitserve {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("bitserve_mw_" + std::to_string(getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

std::string ReadAll(const fs::path& p) { return ReadFileToString(p).value_or(""); }

TEST(SyntheticCheckpoint, LoadsWithRealisticStatistics) {
  TempDir dir;
  auto preset = FindModelPreset("test-gqa");
  ASSERT_TRUE(preset.ok());
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, dir.path(), {}).ok());
  auto w = LoadModelWeights(dir.path());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->layers.size(), 3u);
  const TernaryMatrix& up = w->layers[1].ffn.up;
  EXPECT_EQ(up.rows, 320);
  EXPECT_EQ(up.cols, 128);
  int64_t neg = 0, pos = 0;
  for (int8_t v : up.values) {
    neg += v == -1;
    pos += v == 1;
  }
  const double n = static_cast<double>(up.values.size());
  EXPECT_NEAR(neg / n, 9.0 / 32, 0.02);
  EXPECT_NEAR(pos / n, 9.0 / 32, 0.02);
  EXPECT_GT(up.scale.multiplier(), 0.5 / std::sqrt(0.5625 * 128));
  EXPECT_LT(up.scale.multiplier(), 1.5 / std::sqrt(0.5625 * 128));
  for (float g : w->layers[0].input_norm) {
    EXPECT_GT(g, 0.4f);
    EXPECT_LT(g, 1.6f);
  }
  EXPECT_TRUE(w->lm_head.empty());  // tied
}

TEST(SyntheticCheckpoint, BitLinearScalesAreDividedAndHeadUntied) {
  TempDir dir;
  auto preset = FindModelPreset("test-odd");
  ASSERT_TRUE(preset.ok());
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, dir.path(), {}).ok());
  auto archive = SafetensorsArchive::Open(dir.path());
  ASSERT_TRUE(archive.ok());
  ASSERT_NE(archive->Find("lm_head.weight"), nullptr);
  auto w = LoadModelWeights(dir.path());
  ASSERT_TRUE(w.ok()) << w.status();
  // Stored weight_scale is 1/alpha for bitlinear, so the folded multiplier is small again.
  EXPECT_LT(w->layers[0].q.scale.multiplier(), 1.5 / std::sqrt(0.5625 * 96));
  EXPECT_EQ(w->lm_head.size(), 777u * 96);
}

TEST(SyntheticCheckpoint, SameSeedSameBytesShardedOrNot) {
  TempDir a, b, sharded, other;
  auto preset = FindModelPreset("test-gqa");
  ASSERT_TRUE(preset.ok());
  SyntheticCheckpointOptions options;
  options.seed = 5;
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, a.path(), options).ok());
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, b.path(), options).ok());
  EXPECT_EQ(ReadAll(a.path() / "model.safetensors"), ReadAll(b.path() / "model.safetensors"));
  options.max_shard_bytes = 100000;
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, sharded.path(), options).ok());
  EXPECT_TRUE(fs::exists(sharded.path() / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(sharded.path() / "model.safetensors"));
  auto wa = LoadModelWeights(a.path());
  auto ws = LoadModelWeights(sharded.path());
  ASSERT_TRUE(wa.ok() && ws.ok()) << ws.status();
  EXPECT_EQ(wa->embedding, ws->embedding);
  EXPECT_EQ(wa->layers[2].ffn.down.values, ws->layers[2].ffn.down.values);
  options.seed = 6;
  options.max_shard_bytes = 4ull << 30;
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, other.path(), options).ok());
  EXPECT_NE(ReadAll(a.path() / "model.safetensors"), ReadAll(other.path() / "model.safetensors"));
}

TEST(SyntheticCheckpoint, UnknownPresetListsTheKnownOnes) {
  auto p = FindModelPreset("gpt-5");
  EXPECT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), ::testing::HasSubstr("bitnet-2b4t"));
}

// A pipeline stage reads only what it uses: its layers; the embedding on the first stage; final
// norm and LM head on the last, with the embedding there only when the LM head is tied to it.
TEST(CheckpointReader, StagesReadOnlyWhatTheyUse) {
  for (bool tied : {false, true}) {
    TempDir dir;
    auto preset = FindModelPreset("test-gqa");  // 3 layers
    ASSERT_TRUE(preset.ok());
    ModelPreset p = *preset;
    p.config.tie_word_embeddings = tied;
    ASSERT_TRUE(WriteSyntheticCheckpoint(p, dir.path(), {}).ok());
    auto whole = LoadModelWeights(dir.path());
    ASSERT_TRUE(whole.ok()) << whole.status();
    const PipelineStage first{0, 3, 0, 1}, middle{1, 3, 1, 2}, last{2, 3, 2, 3};
    auto w0 = LoadModelWeights(dir.path(), first);
    auto w1 = LoadModelWeights(dir.path(), middle);
    auto w2 = LoadModelWeights(dir.path(), last);
    ASSERT_TRUE(w0.ok() && w1.ok() && w2.ok()) << w0.status() << w1.status() << w2.status();
    EXPECT_EQ(w0->embedding, whole->embedding);
    EXPECT_TRUE(w0->lm_head.empty() && w0->final_norm.empty());
    EXPECT_TRUE(w1->embedding.empty() && w1->lm_head.empty() && w1->final_norm.empty());
    EXPECT_EQ(w2->final_norm, whole->final_norm);
    EXPECT_EQ(w2->lm_head, whole->lm_head);
    EXPECT_EQ(w2->embedding.empty(), !tied);
    EXPECT_EQ(
        std::vector<uint16_t>(w2->lm_head_data(), w2->lm_head_data() + whole->embedding.size()),
        std::vector<uint16_t>(whole->lm_head_data(),
                              whole->lm_head_data() + whole->embedding.size()));
    EXPECT_EQ(w1->layers[1].ffn.up.values, whole->layers[1].ffn.up.values);
    EXPECT_TRUE(w1->layers[0].ffn.up.values.empty() && w1->layers[2].ffn.up.values.empty());
  }
}

TEST(CheckpointReader, RefusesBadRanges) {
  TempDir dir;
  auto preset = FindModelPreset("test-gqa");
  ASSERT_TRUE(preset.ok());
  ASSERT_TRUE(WriteSyntheticCheckpoint(*preset, dir.path(), {}).ok());
  auto reader = CheckpointReader::Open(dir.path());
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->Layers(2, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reader->Layers(-1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reader->StageEnds(PipelineStage{0, 2, 1, 2}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto none = reader->Layers(1, 1);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(CheckpointReader::Open(dir.path() / "missing").ok());
}

}  // namespace
}  // namespace bitserve
