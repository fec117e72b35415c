// serve, batch --model and bench-serve --model turn their flags into a coordinator's options the
// same way (tools/serving_flags.h).
#include "tools/serving_flags.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitserve::cli {
namespace {

using ::testing::HasSubstr;

TEST(ServingFlags, ParsedFlagsBecomeTheOptionsOfEngineAndScheduler) {
  CLI::App app;
  ServingFlags flags;
  AddServingFlags(&app, &flags);
  app.parse(
      "--device cpu --kv-dtype int8 --kv-rotation none --max-num-seqs 16 --max-waiting 7 "
      "--max-batch-tokens 512 "
      "--max-model-len 1000 --block-size 8 --no-prefix-caching",
      /*program_name_included=*/false);
  auto options = ToCoordinatorOptions(flags, "/m");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->model_dir, "/m");
  EXPECT_EQ(options->engine.device, "cpu");
  EXPECT_EQ(options->engine.kv_dtype, KvDtype::kInt8);
  EXPECT_EQ(options->engine.kv_rotation, KvRotation::kNone);
  EXPECT_EQ(options->engine.block_size, 8);
  EXPECT_EQ(options->engine.max_sequences, 16);
  EXPECT_EQ(options->engine.max_batch_tokens, 512);
  EXPECT_EQ(options->engine.max_model_len, 1000);
  EXPECT_EQ(options->scheduler.max_num_seqs, 16);
  EXPECT_EQ(options->scheduler.max_waiting, 7);
  EXPECT_EQ(options->scheduler.max_num_batched_tokens, 512);
  EXPECT_EQ(options->scheduler.max_model_len, 1000);
  EXPECT_EQ(options->scheduler.long_prefill_chunk, 512);  // never beyond a step's tokens
  EXPECT_FALSE(options->scheduler.enable_prefix_caching);
}

TEST(ServingFlags, DefaultsAreServes) {
  auto options = ToCoordinatorOptions(ServingFlags(), "/m");
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->scheduler.max_num_seqs, 256);
  EXPECT_EQ(options->scheduler.max_waiting, 1024);
  EXPECT_EQ(options->scheduler.max_num_batched_tokens, 8192);
  EXPECT_EQ(options->engine.block_size, 16);
  EXPECT_FALSE(options->engine.kv_dtype.has_value());
  EXPECT_FALSE(options->engine.kv_rotation.has_value());  // the engine's: DefaultKvRotation
  EXPECT_TRUE(options->scheduler.enable_prefix_caching);
}

TEST(ServingFlags, BadValuesNameTheFlag) {
  ServingFlags zero_seqs;
  zero_seqs.max_num_seqs = 0;
  EXPECT_THAT(std::string(ToCoordinatorOptions(zero_seqs, "m").status().message()),
              HasSubstr("--max-num-seqs"));
  ServingFlags negative_len;
  negative_len.max_model_len = -1;
  EXPECT_THAT(std::string(ToCoordinatorOptions(negative_len, "m").status().message()),
              HasSubstr("--max-model-len"));
  ServingFlags unknown_dtype;
  unknown_dtype.kv_dtype = "fp8";
  EXPECT_THAT(std::string(ToCoordinatorOptions(unknown_dtype, "m").status().message()),
              HasSubstr("--kv-dtype"));
  ServingFlags unknown_rotation;
  unknown_rotation.kv_rotation = "random";
  const absl::Status bad_rotation = ToCoordinatorOptions(unknown_rotation, "m").status();
  EXPECT_EQ(bad_rotation.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_rotation.message()),
              HasSubstr("--kv-rotation: KV rotation \"random\" is not one of none, hadamard"));
  ServingFlags hadamard;
  hadamard.kv_dtype = "int4";
  hadamard.kv_rotation = "hadamard";
  auto rotated = ToCoordinatorOptions(hadamard, "m");
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(rotated->engine.kv_rotation, KvRotation::kHadamard);
  ServingFlags int8_head;
  int8_head.lm_head_dtype = "int8";
  auto quantized = ToCoordinatorOptions(int8_head, "m");
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  EXPECT_EQ(quantized->engine.lm_head_dtype, LmHeadDtype::kInt8);
  ServingFlags int4_head;
  int4_head.lm_head_dtype = "int4";
  EXPECT_THAT(std::string(ToCoordinatorOptions(int4_head, "m").status().message()),
              HasSubstr("--lm-head-dtype: LM head dtype \"int4\" is not one of bf16, int8"));
  ServingFlags f32_on_gpu;  // refused before any worker starts
  f32_on_gpu.device = "cuda:0";
  f32_on_gpu.kv_dtype = "f32";
  const absl::Status refused = ToCoordinatorOptions(f32_on_gpu, "m").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("--kv-dtype: device cuda:0 keeps its KV cache as bf16"));
  ServingFlags bad_format;
  bad_format.load_format = "gguf";
  EXPECT_THAT(std::string(ToCoordinatorOptions(bad_format, "m").status().message()),
              HasSubstr("--load-format: load format \"gguf\" is not one of safetensors, dummy"));
  ServingFlags dummy;
  dummy.load_format = "dummy";
  auto options = ToCoordinatorOptions(dummy, "m");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->engine.load_format, LoadFormat::kDummy);
}

}  // namespace
}  // namespace bitserve::cli
