// Synthetic checkpoints load back with the statistics they promise, sharded or not, bit for bit
// reproducibly.
#include "runtime/model_weights.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/file_io.h"
#include "runtime/safetensors_archive.h"
#include "runtime/synthetic_checkpoint.h"

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
  const TernaryMatrix& up = w->layers[1].up;
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
  EXPECT_EQ(wa->layers[2].down.values, ws->layers[2].down.values);
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

}  // namespace
}  // namespace bitserve
