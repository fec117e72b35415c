// libFuzzer target for tokenizer.json (runtime/text/tokenizer/tokenizer_json.h) and the BPE
// tokenizer built from it (bpe_tokenizer.h): any bytes give an error naming what is wrong, or a
// tokenizer that encodes and decodes without crashing.
//
// Input: the tokenizer.json text, optionally followed by a NUL byte and a text to encode (JSON
// cannot hold a raw NUL, so the split is unambiguous). Without one, a fixed sample with words,
// digits, contractions, newlines and the tiny corpus tokenizer's added tokens is encoded, so a
// mutated vocabulary or merge list still meets the pre-tokenizer and the merges. The same JSON is
// also read as tokenizer_config.json (a root "bos_token"/"add_bos_token" then applies).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "runtime/text/tokenizer/bpe_tokenizer.h"
#include "runtime/text/tokenizer/tokenizer_json.h"
#include "runtime/text/tokenizer/unicode_text.h"

namespace {

constexpr char kSampleText[] =
    "hello world, I'LL say it's 12345 <|bos|>héllo\r\n\n  wörld<tool> <|eot|>\t!!";

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "tokenizer_json_fuzz: %s\n", what);
  std::abort();
}

void CheckIds(const bitserve::Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) Fail("Encode made an id outside the vocabulary");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string json = input.substr(0, nul);
  const std::string text = nul == std::string::npos ? kSampleText : input.substr(nul + 1);

  auto spec = bitserve::ParseTokenizerJson(json, "fuzz/tokenizer.json");
  if (!spec.ok()) {
    if (spec.status().message().empty()) Fail("an error without a message");
    return 0;
  }
  std::optional<bitserve::TokenizerConfigSpec> config;
  if (auto parsed = bitserve::ParseTokenizerConfigJson(json, "fuzz/tokenizer_config.json");
      parsed.ok()) {
    config = *parsed;
  }
  const bool has_added_tokens = !spec->added_tokens.empty();
  auto tok = bitserve::BpeTokenizer::Create(*std::move(spec), "fuzz/tokenizer.json", config,
                                            "fuzz/tokenizer_config.json");
  if (!tok.ok()) {
    if (tok.status().message().empty()) Fail("an error without a message");
    return 0;
  }

  const std::vector<int32_t> ids = (*tok)->Encode(text);
  CheckIds(**tok, ids);
  const std::string decoded = (*tok)->Decode(ids);
  if (!bitserve::IsValidUtf8(decoded)) Fail("Decode made invalid UTF-8");
  // Byte-level BPE loses nothing: without added tokens (whose text may strip whitespace, or
  // replace a vocabulary token's bytes) every valid UTF-8 text comes back as it was.
  if (!has_added_tokens && bitserve::IsValidUtf8(text) && decoded != text) {
    Fail("Decode(Encode(text)) != text");
  }
  bitserve::EncodeOptions options;
  options.parse_special = true;
  options.add_bos = true;
  options.max_tokens = 4;
  const std::vector<int32_t> special = (*tok)->Encode(text, options);
  CheckIds(**tok, special);
  (void)(*tok)->Decode(special, /*skip_special=*/true);
  for (int32_t id : special) (void)(*tok)->TokenBytes(id);
  return 0;
}
