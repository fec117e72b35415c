// The GPU mixture-of-experts block against the CPU reference (kernels/cpu/moe_ffn.h):
//   GroupedProduct: the grouping of (token, expert) pairs and the grouped ternary products of
//     every compiled run length, bit for bit against the packed-layout reference per row;
//   Routing: the bf16 router product (float tolerance) and softmax + top-k on the same logits
//     (experts exact, ties to the lower index, weights within float tolerance);
//   Block: MoeFeedForward against cpu::MoeFeedForward (float tolerance) for experts that get no
//     token, every token on one expert, k = E, a shared expert, norm_topk_prob on and off.
// Re-run a failure with BITSERVE_TEST_SEED=<printed seed>.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "base/bf16.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/bf16_matmul.h"
#include "kernels/cpu/moe_ffn.h"
#include "kernels/cuda/moe/moe_ffn.cuh"
#include "kernels/cuda/moe/moe_routing.cuh"
#include "kernels/cuda/norm/act_quant.cuh"
#include "kernels/cuda/op_test_harness.cuh"
#include "kernels/cuda/ternary/ternary_layout.h"

namespace bitserve::cuda {
namespace {

std::vector<int8_t> Ternary(int64_t n, Rng& rng) {
  std::vector<int8_t> v(n);
  for (int8_t& x : v) x = static_cast<int8_t>(static_cast<int>(rng.Bits() % 3) - 1);
  return v;
}

TernaryMatrix RandomMatrix(int64_t rows, int64_t cols, Rng& rng) {
  TernaryMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.values = Ternary(rows * cols, rng);
  m.scale.divide = (rng.Bits() & 1) != 0;
  m.scale.value = rng.Uniform(0.3f, 4.0f);
  return m;
}

FfnWeights RandomFfn(int64_t hidden, int64_t inter, Rng& rng) {
  FfnWeights f;
  f.gate = RandomMatrix(inter, hidden, rng);
  f.up = RandomMatrix(inter, hidden, rng);
  f.down = RandomMatrix(hidden, inter, rng);
  f.sub_norm.resize(inter);
  for (float& w : f.sub_norm) w = rng.Uniform(0.2f, 2.5f);
  return f;
}

std::vector<uint16_t> RandomBf16(int64_t n, float sd, Rng& rng) {
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = FloatToBf16(rng.Normal(sd));
  return v;
}

template <typename T>
DeviceBuffer<T> Uploaded(const std::vector<T>& v) {
  DeviceBuffer<T> d = Alloc<T>(std::max<int64_t>(static_cast<int64_t>(v.size()), 1));
  EXPECT_TRUE(d.CopyFromHost(v.data(), static_cast<int64_t>(v.size())).ok());
  return d;
}

// ---- GroupedProduct ------------------------------------------------------------------------

struct GroupedCase {
  std::string name;
  int experts, top_k;
  int64_t tokens, rows, cols;
  int rows_per_item;
  enum class Spread { kRandom, kOneExpert, kFewExperts } spread = Spread::kRandom;
  int config = -1;  // an index into AllGroupedGemvConfigs(); -1: the default
  int tiled = -1;   // instead, an index into AllGroupedTiledConfigs()
};

std::vector<int32_t> Assign(const GroupedCase& c, Rng& rng) {
  std::vector<int32_t> experts(c.tokens * c.top_k);
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::vector<int32_t> order(c.experts);
    std::iota(order.begin(), order.end(), 0);
    const int pool =
        c.spread == GroupedCase::Spread::kFewExperts ? std::min(c.experts, c.top_k + 1) : c.experts;
    for (int j = 0; j < c.top_k; ++j) {
      std::swap(order[j], order[j + static_cast<int>(rng.Bits() % (pool - j))]);
      experts[t * c.top_k + j] = order[j];
    }
    if (c.spread == GroupedCase::Spread::kOneExpert) {
      // Expert 2 in every token's list (slot varies), so one expert gets every token.
      const int j = static_cast<int>(rng.Bits() % c.top_k);
      for (int i = 0; i < c.top_k; ++i) {
        if (experts[t * c.top_k + i] == 2)
          std::swap(experts[t * c.top_k + i], experts[t * c.top_k + j]);
      }
      experts[t * c.top_k + j] = 2;
    }
  }
  return experts;
}

class GroupedProductTest : public GpuOpTest<GroupedCase> {};

TEST_P(GroupedProductTest, MatchesPerExpertReference) {
  const GroupedCase& c = GetParam();
  Rng rng(BaseSeed() ^ std::hash<std::string>{}(c.name));
  const int64_t pairs = c.tokens * c.top_k;
  // Experts' matrices, packed, one buffer.
  std::vector<PackedTernaryMatrix> packed;
  std::vector<uint32_t> words;
  std::vector<TernaryOutputScale> scales;
  for (int e = 0; e < c.experts; ++e) {
    TernaryMatrix m = RandomMatrix(c.rows, c.cols, rng);
    auto p = PackTernaryMatrix(m.values.data(), c.rows, c.cols, m.scale);
    ASSERT_TRUE(p.ok()) << p.status();
    words.insert(words.end(), p->words.begin(), p->words.end());
    scales.push_back(p->scale);
    packed.push_back(std::move(p).value());
  }
  DeviceBuffer<uint32_t> d_words = Uploaded(words);
  DeviceBuffer<TernaryOutputScale> d_scales = Uploaded(scales);
  GroupedTernaryWeights w;
  w.first.words = d_words.get();
  w.first.rows = c.rows;
  w.first.cols = c.cols;
  w.first.padded_rows = packed[0].padded_rows;
  w.first.padded_cols = packed[0].padded_cols;
  w.expert_words = static_cast<int64_t>(packed[0].words.size());
  w.num_experts = c.experts;
  w.scales = d_scales.get();

  // Activations of the tokens (the grouped rows gather them), random full-range int8.
  const int64_t stride = PaddedInputs(c.cols);
  std::vector<int8_t> x(c.tokens * stride);
  std::vector<float> xs(c.tokens);
  std::vector<int32_t> sums(c.tokens, 0);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t i = 0; i < stride; ++i) {
      x[t * stride + i] = static_cast<int8_t>(rng.Bits() & 0xff);
      if (i < c.cols) sums[t] += x[t * stride + i];
    }
    xs[t] = 127.0f / rng.Uniform(0.01f, 30.0f);
  }
  DeviceBuffer<int8_t> d_x = Uploaded(x);
  DeviceBuffer<float> d_xs = Uploaded(xs);
  DeviceBuffer<int32_t> d_sums = Uploaded(sums);
  Int8Activations xa;
  xa.values = d_x.get();
  xa.scales = d_xs.get();
  xa.sums = d_sums.get();
  xa.rows = c.tokens;
  xa.cols = c.cols;
  xa.stride = stride;

  const std::vector<int32_t> experts = Assign(c, rng);
  DeviceBuffer<int32_t> d_experts = Uploaded(experts);
  const int max_items = MaxGroupedItems(pairs, c.experts, c.rows_per_item);
  DeviceBuffer<int32_t> expert_rows = Alloc<int32_t>(c.experts + 1), source = Alloc<int32_t>(pairs),
                        row_expert = Alloc<int32_t>(pairs), pair_rows = Alloc<int32_t>(pairs),
                        num_items = Alloc<int32_t>(1);
  DeviceBuffer<GroupedProductItem> items = Alloc<GroupedProductItem>(std::max(max_items, 1));
  ExpertGrouping g{expert_rows.get(), source.get(), row_expert.get(),
                   pair_rows.get(),   items.get(),  num_items.get()};
  ASSERT_OK(GroupByExpert(d_experts.get(), c.tokens, c.top_k, c.experts, c.rows_per_item, max_items,
                          g, nullptr));
  DeviceBuffer<int32_t> acc = Alloc<int32_t>(pairs * c.rows);
  DeviceBuffer<float> y = Alloc<float>(pairs * c.rows);
  ASSERT_EQ(cudaMemset(acc.get(), kPoisonInt32, acc.bytes()), cudaSuccess);
  ASSERT_EQ(cudaMemset(y.get(), kPoisonFloat, y.bytes()), cudaSuccess);
  GroupedRows rows{items.get(), num_items.get(), max_items, c.rows_per_item, source.get()};
  if (c.config >= 0) rows.config = &AllGroupedGemvConfigs()[c.config];
  if (c.tiled >= 0) rows.tiled = &AllGroupedTiledConfigs()[c.tiled];
  ASSERT_OK(GroupedTernaryGemv(w, xa, rows, nullptr, acc.get(), nullptr));
  ASSERT_OK(GroupedTernaryGemv(w, xa, rows, y.get(), nullptr, nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  // The grouping: every pair once, in its expert's range, the work list covering each range.
  const std::vector<int32_t> h_rows = Download(expert_rows), h_source = Download(source),
                             h_row_expert = Download(row_expert), h_pair = Download(pair_rows);
  std::vector<int32_t> counts(c.experts, 0);
  for (int32_t e : experts) ++counts[e];
  int32_t begin = 0;
  for (int e = 0; e <= c.experts; ++e) {
    ASSERT_EQ(h_rows[e], begin) << "expert_rows[" << e << "]";
    if (e < c.experts) begin += counts[e];
  }
  std::set<int32_t> seen;
  for (int64_t i = 0; i < pairs; ++i) {
    const int32_t r = h_pair[i], e = experts[i];
    ASSERT_TRUE(r >= h_rows[e] && r < h_rows[e + 1]) << "pair " << i << " -> row " << r;
    ASSERT_EQ(h_row_expert[r], e);
    ASSERT_EQ(h_source[r], i / c.top_k);
    ASSERT_TRUE(seen.insert(r).second) << "row " << r << " twice";
  }
  const int32_t n_items = Download(num_items)[0];
  ASSERT_LE(n_items, max_items);
  const std::vector<GroupedProductItem> h_items = Download(items);
  std::vector<int32_t> covered(pairs, 0);
  for (int i = 0; i < n_items; ++i) {
    const GroupedProductItem& it = h_items[i];
    ASSERT_TRUE(it.rows >= 1 && it.rows <= c.rows_per_item) << "item " << i;
    for (int r = it.row_begin; r < it.row_begin + it.rows; ++r) {
      ASSERT_EQ(h_row_expert[r], it.expert);
      ++covered[r];
    }
  }
  for (int64_t r = 0; r < pairs; ++r) ASSERT_EQ(covered[r], 1) << "grouped row " << r;

  // Each grouped row against its expert's packed reference: int32 and float, bit for bit.
  std::vector<int32_t> ref_acc(pairs * c.rows);
  std::vector<float> ref_y(pairs * c.rows);
  for (int64_t r = 0; r < pairs; ++r) {
    const int32_t t = h_source[r], e = h_row_expert[r];
    PackedTernaryMatmulInt32Reference(packed[e], x.data() + t * stride, stride, &sums[t], 1,
                                      ref_acc.data() + r * c.rows);
    for (int64_t o = 0; o < c.rows; ++o) {
      ref_y[r * c.rows + o] = ApplyTernaryOutputScale(ref_acc[r * c.rows + o], xs[t], scales[e]);
    }
  }
  ExpectBitExact(Download(acc), ref_acc, c.rows, c.name + " int32");
  ExpectBitExact(Download(y), ref_y, c.rows, c.name + " float");
}

std::vector<GroupedCase> GroupedCases() {
  std::vector<GroupedCase> cases;
  using S = GroupedCase::Spread;
  for (int t : {1, 8, 16, 32, 64, 128, 256}) {
    // Long inputs (gate/up: 16+ k-tiles) and short ones (down: 6), partial row tiles.
    for (const auto& [rows, cols] :
         {std::pair<int64_t, int64_t>{200, 2048}, {2048, 768}, {96, 200}}) {
      for (int64_t tokens : {1, 5, 40, 300}) {
        cases.push_back({"t" + std::to_string(t) + "_" + std::to_string(rows) + "x" +
                             std::to_string(cols) + "_m" + std::to_string(tokens),
                         16, 4, tokens, rows, cols, t});
      }
    }
    cases.push_back({"one_expert_t" + std::to_string(t), 8, 2, 70, 160, 384, t, S::kOneExpert});
    cases.push_back({"few_experts_t" + std::to_string(t), 64, 2, 33, 160, 384, t, S::kFewExperts});
    cases.push_back({"k_equals_e_t" + std::to_string(t), 4, 4, 21, 160, 384, t});
  }
  // Items of several tiled blocks (up to 256 rows per expert) at the qwen3-30b-a3b shapes.
  for (int t : {64, 128, 256}) {
    for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1536, 2048}, {2048, 768}}) {
      cases.push_back({"prefill_t" + std::to_string(t) + "_" + std::to_string(rows) + "x" +
                           std::to_string(cols),
                       32, 8, 700, rows, cols, t});
    }
  }
  // Every compiled grouped configuration (the benchmarks may pick any): dp4a at one row per item;
  // mma at items of fewer rows than its block and of several blocks, long and short inputs.
  const std::vector<TernaryGemvConfig>& configs = AllGroupedGemvConfigs();
  for (int i = 0; i < static_cast<int>(configs.size()); ++i) {
    const bool dp4a = configs[i].kind == TernaryGemvConfig::Kind::kDp4a;
    for (int t : dp4a ? std::vector<int>{1} : std::vector<int>{16, 64}) {
      for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{200, 2048}, {96, 200}}) {
        GroupedCase c{"config_" + configs[i].Name() + "_t" + std::to_string(t) + "_" +
                          std::to_string(rows) + "x" + std::to_string(cols),
                      16,
                      4,
                      40,
                      rows,
                      cols,
                      t};
        c.config = i;
        cases.push_back(c);
      }
    }
  }
  // Every grouped tiled configuration: items of one block, of several blocks and past the last
  // partly filled block of an expert; long and short inputs, partial row tiles. 150 tokens over
  // 16 experts (top 4) put ~38 rows on each, 300 over 4 (top 2) ~150.
  const std::vector<TernaryTiledConfig>& tiled = AllGroupedTiledConfigs();
  for (int i = 0; i < static_cast<int>(tiled.size()); ++i) {
    for (int t : {16, 32, 64, 128, 256}) {
      if (t % tiled[i].block_tokens() != 0) continue;
      const std::string name = "tiled_" + tiled[i].Name() + "_t" + std::to_string(t);
      for (GroupedCase c : {GroupedCase{name + "_200x2048", 16, 4, 150, 200, 2048, t},
                            GroupedCase{name + "_136x768_e4", 4, 2, 300, 136, 768, t},
                            GroupedCase{name + "_96x200", 16, 4, 150, 96, 200, t}}) {
        c.tiled = i;
        cases.push_back(c);
      }
    }
    GroupedCase one{
        "tiled_" + tiled[i].Name() + "_one_expert", 8, 2, 70, 160, 384, 64, S::kOneExpert};
    one.tiled = i;
    cases.push_back(one);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Moe, GroupedProductTest, ::testing::ValuesIn(GroupedCases()),
                         [](const auto& info) { return info.param.name; });

// ---- Routing and the whole block -------------------------------------------------------------

struct BlockCase {
  std::string name;
  int64_t hidden, inter, tokens;
  int experts, top_k;
  bool norm_topk_prob;
  int64_t shared_inter;      // 0: none
  bool one_expert = false;   // every token routes to expert 1 first
  bool tied_logits = false;  // router of zeros: every probability equal
};

// Draws the router and the tokens so that no two top-(k+1) probabilities of a token are within
// 1e-4 of each other (relative): the CPU and GPU sums may differ in the last bits, which must not
// change the selection. Tied logits (the tie rule) are exact on both sides.
struct BlockInputs {
  MoeWeights w;
  MoeShape shape;
  std::vector<float> n;
};

bool WellSeparated(const std::vector<float>& logits, int64_t m, int experts, int k) {
  for (int64_t t = 0; t < m; ++t) {
    std::vector<float> l(logits.begin() + t * experts, logits.begin() + (t + 1) * experts);
    std::sort(l.rbegin(), l.rend());
    for (int j = 0; j < std::min(k + 1, experts) - 1; ++j) {
      if (l[j] - l[j + 1] < 1e-3f * std::max(1.0f, std::fabs(l[j]))) return false;
    }
  }
  return true;
}

BlockInputs MakeBlock(const BlockCase& c, Rng& rng) {
  BlockInputs b;
  b.shape = {c.hidden, c.experts, c.top_k, c.norm_topk_prob, 1e-5f};
  for (int e = 0; e < c.experts; ++e) b.w.experts.push_back(RandomFfn(c.hidden, c.inter, rng));
  if (c.shared_inter > 0) {
    b.w.shared = RandomFfn(c.hidden, c.shared_inter, rng);
    b.w.shared_gate = RandomBf16(c.hidden, 0.05f, rng);
  }
  for (int attempt = 0; attempt < 100; ++attempt) {
    b.w.router = c.tied_logits ? std::vector<uint16_t>(c.experts * c.hidden, 0)
                               : RandomBf16(c.experts * c.hidden, 0.05f, rng);
    b.n.resize(c.tokens * c.hidden);
    for (float& v : b.n) v = rng.Normal(1.0f);
    if (c.one_expert) {
      for (int64_t t = 0; t < c.tokens; ++t) b.n[t * c.hidden] = 20.0f;
      b.w.router[1 * c.hidden] = FloatToBf16(1.0f);
    }
    if (c.tied_logits) break;
    std::vector<float> logits(c.tokens * c.experts);
    cpu::Bf16Matmul(b.n.data(), c.tokens, b.w.router.data(), c.experts, c.hidden, logits.data());
    if (WellSeparated(logits, c.tokens, c.experts, c.top_k)) break;
  }
  return b;
}

class MoeBlockTest : public GpuOpTest<BlockCase> {};

TEST_P(MoeBlockTest, RoutingMatchesCpu) {
  const BlockCase& c = GetParam();
  Rng rng(BaseSeed() ^ std::hash<std::string>{}(c.name));
  BlockInputs b = MakeBlock(c, rng);
  const int64_t m = c.tokens;
  std::vector<float> cpu_logits(m * c.experts);
  cpu::Bf16Matmul(b.n.data(), m, b.w.router.data(), c.experts, c.hidden, cpu_logits.data());
  DeviceBuffer<float> d_n = Uploaded(b.n), logits = Alloc<float>(m * c.experts),
                      weights = Alloc<float>(m * c.top_k);
  DeviceBuffer<uint16_t> d_router = Uploaded(b.w.router);
  DeviceBuffer<int32_t> experts = Alloc<int32_t>(m * c.top_k);
  ASSERT_OK(
      Bf16RowProducts(d_n.get(), m, d_router.get(), c.experts, c.hidden, logits.get(), nullptr));
  const std::vector<float> gpu_logits = Download(logits);
  for (size_t i = 0; i < gpu_logits.size(); ++i) {
    ASSERT_NEAR(gpu_logits[i], cpu_logits[i], 1e-4f * std::max(1.0f, std::fabs(cpu_logits[i])))
        << "logit " << i;
  }
  // The many-token router (cuBLAS SGEMM over the widened router) within the same tolerance.
  {
    std::vector<float> widened(b.w.router.size());
    for (size_t i = 0; i < widened.size(); ++i) widened[i] = Bf16ToFloat(b.w.router[i]);
    DeviceBuffer<float> d_widened = Uploaded(widened), sgemm_logits = Alloc<float>(m * c.experts);
    auto sgemm = RouterSgemm::Create();
    ASSERT_TRUE(sgemm.ok()) << sgemm.status();
    ASSERT_OK((*sgemm)->Run(d_n.get(), m, d_widened.get(), c.experts, c.hidden, sgemm_logits.get(),
                            nullptr));
    const std::vector<float> got = Download(sgemm_logits);
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], cpu_logits[i], 1e-4f * std::max(1.0f, std::fabs(cpu_logits[i])))
          << "SGEMM logit " << i;
    }
  }
  // Top-k on the GPU's logits against the CPU's selection rule on the same logits.
  ASSERT_OK(SoftmaxTopK(logits.get(), c.experts, m, c.experts, c.top_k, c.norm_topk_prob,
                        experts.get(), weights.get(), nullptr));
  std::vector<int32_t> ref_experts(m * c.top_k);
  std::vector<float> ref_weights(m * c.top_k);
  cpu::RouteTopK(gpu_logits.data(), m, c.experts, c.top_k, c.norm_topk_prob, ref_experts.data(),
                 ref_weights.data());
  ExpectBitExact(Download(experts), ref_experts, c.top_k, c.name + " experts");
  const std::vector<float> gpu_weights = Download(weights);
  for (size_t i = 0; i < gpu_weights.size(); ++i) {
    ASSERT_NEAR(gpu_weights[i], ref_weights[i], 1e-6f) << "weight " << i;
  }

  // The batch-1 launch (top-k + grouping of one token) against SoftmaxTopK + GroupByExpert on
  // the last token's logits: the same experts, weights and grouping, bit for bit.
  const float* last = logits.get() + (m - 1) * c.experts;
  const int per_item = GroupedRowsPerItem(ExpectedRowsPerExpert(c.top_k, c.experts));
  const int max_items = MaxGroupedItems(c.top_k, c.experts, per_item);
  struct Grouped {
    DeviceBuffer<int32_t> experts, expert_rows, source, row_expert, pair_rows, num_items;
    DeviceBuffer<float> weights;
    DeviceBuffer<GroupedProductItem> items;
    ExpertGrouping view() {
      return {expert_rows.get(), source.get(), row_expert.get(),
              pair_rows.get(),   items.get(),  num_items.get()};
    }
  };
  const auto make = [&] {
    Grouped g{Alloc<int32_t>(c.top_k), Alloc<int32_t>(c.experts + 1),
              Alloc<int32_t>(c.top_k), Alloc<int32_t>(c.top_k),
              Alloc<int32_t>(c.top_k), Alloc<int32_t>(1),
              Alloc<float>(c.top_k),   Alloc<GroupedProductItem>(max_items)};
    EXPECT_EQ(cudaMemset(g.items.get(), 0, g.items.bytes()), cudaSuccess);
    return g;
  };
  Grouped two = make(), one = make();
  ASSERT_OK(SoftmaxTopK(last, c.experts, 1, c.experts, c.top_k, c.norm_topk_prob, two.experts.get(),
                        two.weights.get(), nullptr));
  ASSERT_OK(GroupByExpert(two.experts.get(), 1, c.top_k, c.experts, per_item, max_items, two.view(),
                          nullptr));
  ASSERT_OK(SoftmaxTopKGroupOneToken(last, c.experts, c.top_k, c.norm_topk_prob, one.experts.get(),
                                     one.weights.get(), per_item, max_items, one.view(), nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(Download(one.experts), Download(two.experts)) << "experts";
  EXPECT_EQ(Download(one.weights), Download(two.weights)) << "weights";
  EXPECT_EQ(Download(one.expert_rows), Download(two.expert_rows)) << "expert_rows";
  EXPECT_EQ(Download(one.source), Download(two.source)) << "source_rows";
  EXPECT_EQ(Download(one.row_expert), Download(two.row_expert)) << "row_expert";
  EXPECT_EQ(Download(one.pair_rows), Download(two.pair_rows)) << "pair_rows";
  const std::vector<int32_t> n_one = Download(one.num_items), n_two = Download(two.num_items);
  ASSERT_EQ(n_one, n_two) << "num_items";
  const std::vector<GroupedProductItem> i_one = Download(one.items), i_two = Download(two.items);
  for (int i = 0; i < n_one[0]; ++i) {
    EXPECT_EQ(i_one[i].expert, i_two[i].expert) << "item " << i;
    EXPECT_EQ(i_one[i].row_begin, i_two[i].row_begin) << "item " << i;
    EXPECT_EQ(i_one[i].rows, i_two[i].rows) << "item " << i;
  }
}

TEST_P(MoeBlockTest, BlockMatchesCpu) {
  const BlockCase& c = GetParam();
  Rng rng(BaseSeed() ^ std::hash<std::string>{}(c.name) ^ 1);
  BlockInputs b = MakeBlock(c, rng);
  const int64_t m = c.tokens, h = c.hidden;
  std::vector<float> ref(m * h);
  cpu::MoeFeedForward(b.w, b.shape, b.n.data(), m, ref.data());

  auto device = DeviceMoeWeights::Upload(b.w, b.shape);  // consumes b.w's int8 values
  ASSERT_TRUE(device.ok()) << device.status();
  auto scratch = MoeFfnScratch::Create(b.shape, c.inter, c.shared_inter, m + 3);
  ASSERT_TRUE(scratch.ok()) << scratch.status();
  DeviceBuffer<float> d_n = Uploaded(b.n), out = Alloc<float>(m * h);
  DeviceBuffer<int8_t> q = Alloc<int8_t>(m * PaddedInputs(h));
  DeviceBuffer<float> qs = Alloc<float>(m);
  DeviceBuffer<int32_t> qsum = Alloc<int32_t>(m);
  const Int8ActivationsOut qo{q.get(), qs.get(), qsum.get(), PaddedInputs(h)};
  ASSERT_OK(QuantizeActivations(d_n.get(), m, h, qo, nullptr));
  ASSERT_EQ(cudaMemset(out.get(), kPoisonFloat, out.bytes()), cudaSuccess);
  ASSERT_OK(MoeFeedForward(device->view(), b.shape, d_n.get(), Int8Activations(qo, m, h), out.get(),
                           *scratch, nullptr, nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> gpu = Download(out);
  double worst = 0.0;
  for (int64_t t = 0; t < m; ++t) {
    float scale = 1e-6f;
    for (int64_t i = 0; i < h; ++i) scale = std::max(scale, std::fabs(ref[t * h + i]));
    for (int64_t i = 0; i < h; ++i) {
      const double err = std::fabs(gpu[t * h + i] - ref[t * h + i]) / scale;
      ASSERT_FALSE(std::isnan(gpu[t * h + i])) << "token " << t << " element " << i;
      worst = std::max(worst, err);
    }
  }
  EXPECT_LT(worst, 1e-3) << c.name << ": largest error relative to the row's largest value";
}

std::vector<BlockCase> BlockCases() {
  return {
      // name, hidden, inter, tokens, experts, top_k, norm_topk_prob, shared, one_expert, tied
      {"decode1_e16_k4", 256, 128, 1, 16, 4, true, 0},
      {"decode8_e64_k8_most_empty", 512, 96, 8, 64, 8, false, 0},
      {"decode3_e128_k8_shared", 512, 64, 3, 128, 8, true, 96},
      {"decode2_tied_logits", 128, 64, 2, 8, 3, true, 0, false, true},
      {"batch40_e16_k2_shared", 256, 128, 40, 16, 2, true, 192},
      {"prefill300_e8_k2", 384, 256, 300, 8, 2, true, 0},
      {"prefill300_e32_k4_shared", 256, 128, 300, 32, 4, false, 128},
      {"all_tokens_on_one_expert", 256, 128, 50, 8, 2, true, 0, true},
      {"k_equals_e", 256, 64, 17, 4, 4, true, 64},
      {"tied_logits_lower_index_wins", 128, 64, 9, 8, 3, true, 0, false, true},
      {"qwen3_moe_slice", 2048, 768, 20, 128, 8, true, 0},
      // Expert counts off the warp / float4 grid, and the most SoftmaxTopK takes.
      {"decode1_e150_k6", 128, 64, 1, 150, 6, true, 0},
      {"batch5_e256_k8_shared", 128, 64, 5, 256, 8, false, 64},
      {"decode2_e1024_k16", 128, 32, 2, 1024, 16, true, 0},
      // Router rows split over 4 and 8 warps (one and two batches of loads a warp).
      {"hidden4096_e16_k4", 4096, 64, 5, 16, 4, false, 0},
      {"hidden8192_e8_k2", 8192, 32, 3, 8, 2, true, 0},
      {"decode1_hidden12288_e8_k2_shared", 12288, 32, 1, 8, 2, true, 32},
  };
}

INSTANTIATE_TEST_SUITE_P(Moe, MoeBlockTest, ::testing::ValuesIn(BlockCases()),
                         [](const auto& info) { return info.param.name; });

// The routing launches refuse shapes they cannot run before touching the device, naming what is
// wrong.
TEST(MoeRoutingTest, RefusesBadShapes) {
  if (!HaveCudaDevice()) GTEST_SKIP() << "no CUDA device";
  const auto refused = [](const absl::Status& status, const std::string& says) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(status.message().find(says), std::string::npos) << status;
  };
  refused(SoftmaxTopK(nullptr, 8, 1, 8, 9, true, nullptr, nullptr, nullptr), "top 9 of 8 experts");
  refused(SoftmaxTopK(nullptr, 8, 1, 2048, 8, true, nullptr, nullptr, nullptr), "at most 1024");
  refused(SoftmaxTopK(nullptr, 4, 1, 8, 2, true, nullptr, nullptr, nullptr), "logit rows of 4");
  refused(GroupByExpert(nullptr, 4, 2, 8, 1, 1, ExpertGrouping{}, nullptr),
          "GroupByExpert: room for 1 work items");
  refused(SoftmaxTopKGroupOneToken(nullptr, 8, 0, true, nullptr, nullptr, 1, 8, ExpertGrouping{},
                                   nullptr),
          "top 0 of 8 experts");
  refused(SoftmaxTopKGroupOneToken(nullptr, 8, 2, true, nullptr, nullptr, 0, 8, ExpertGrouping{},
                                   nullptr),
          "0 rows per item");
  refused(SoftmaxTopKGroupOneToken(nullptr, 8, 4, true, nullptr, nullptr, 1, 2, ExpertGrouping{},
                                   nullptr),
          "room for 2 work items");
  refused(
      CombineExperts(nullptr, nullptr, nullptr, 1, 1025, 64, nullptr, 0, nullptr, nullptr, nullptr),
      "top 1025");
  refused(CombineExperts(nullptr, nullptr, nullptr, 1, 2, 6, nullptr, 0, nullptr, nullptr, nullptr),
          "hidden 6");
}

}  // namespace
}  // namespace bitserve::cuda
