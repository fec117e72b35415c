#include "runtime/text/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/text/tokenizer/byte_level.h"
#include "runtime/text/tokenizer/pretokenizer.h"
#include "runtime/text/tokenizer/unicode_text.h"

namespace bitserve {
namespace {

// Ids index dense tables; a file claiming id 2^31 would otherwise make them 2^31 long.
constexpr int64_t kMaxTokenId = (1 << 24) - 1;
// Unused ids the tables may hold beyond one per token (see Create).
constexpr int64_t kMaxIdGap = 1 << 16;

absl::Status Invalid(absl::string_view source, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", what));
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open for reading"));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path.string(), ": read failed"));
  return std::move(contents).str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(
    TokenizerSpec spec, absl::string_view source, const std::optional<TokenizerConfigSpec>& config,
    absl::string_view config_source) {
  if (spec.vocab.empty()) return Invalid(source, "model.vocab", "is empty");
  int64_t max_id = 0;
  for (const auto& [token, id] : spec.vocab) {
    if (id > kMaxTokenId) {
      return Invalid(source, absl::StrCat("model.vocab[\"", token, "\"]"),
                     absl::StrCat("id ", id, " is larger than ", kMaxTokenId));
    }
    max_id = std::max<int64_t>(max_id, id);
  }
  for (size_t i = 0; i < spec.added_tokens.size(); ++i) {
    const int32_t id = spec.added_tokens[i].id;
    if (id > kMaxTokenId) {
      return Invalid(source, absl::StrCat("added_tokens[", i, "].id"),
                     absl::StrCat(id, " is larger than ", kMaxTokenId));
    }
    max_id = std::max<int64_t>(max_id, id);
  }
  // The tables hold a string per id up to the largest: ids far beyond the number of tokens would
  // make a small file allocate as if it held millions of tokens (a 3 KB file with one id of
  // 16777215 took 600 MB and seconds). Vocabularies are dense; as many unused ids as tokens, plus
  // kMaxIdGap, are accepted.
  const int64_t num_tokens = static_cast<int64_t>(spec.vocab.size() + spec.added_tokens.size());
  if (max_id >= 2 * num_tokens + kMaxIdGap) {
    std::string field;
    for (const auto& [token, id] : spec.vocab) {
      if (id == max_id) field = absl::StrCat("model.vocab[\"", token, "\"]");
    }
    for (size_t i = 0; i < spec.added_tokens.size(); ++i) {
      if (spec.added_tokens[i].id == max_id) field = absl::StrCat("added_tokens[", i, "].id");
    }
    return Invalid(
        source, field,
        absl::StrCat("id ", max_id, " leaves most ids unused (", num_tokens, " tokens; ids below ",
                     2 * num_tokens + kMaxIdGap, " are accepted)"));
  }

  // The vocabulary, by id and by string.
  absl::flat_hash_map<std::string, int32_t> token_ids;
  token_ids.reserve(spec.vocab.size() + spec.added_tokens.size());
  std::vector<int32_t> vocab_entry(max_id + 1, -1);  // id -> index into spec.vocab
  for (size_t i = 0; i < spec.vocab.size(); ++i) {
    const auto& [token, id] = spec.vocab[i];
    if (vocab_entry[id] >= 0) {
      return Invalid(source, "model.vocab",
                     absl::StrCat("id ", id, " is used by both \"",
                                  spec.vocab[vocab_entry[id]].first, "\" and \"", token, "\""));
    }
    if (!token_ids.try_emplace(token, id).second) {
      return Invalid(source, "model.vocab", absl::StrCat("token \"", token, "\" appears twice"));
    }
    vocab_entry[id] = static_cast<int32_t>(i);
  }

  std::array<int32_t, 256> byte_tokens;
  for (int b = 0; b < 256; ++b) {
    auto it = token_ids.find(ByteLevelChar(static_cast<unsigned char>(b)));
    if (it == token_ids.end()) {
      return Invalid(source, "model.vocab",
                     absl::StrCat("has no token for byte 0x", absl::Hex(b, absl::kZeroPad2), " (\"",
                                  ByteLevelChar(static_cast<unsigned char>(b)),
                                  "\"); a byte-level vocabulary needs all 256"));
    }
    byte_tokens[b] = it->second;
  }

  // Added tokens: unique contents and ids, consistent with the vocabulary.
  std::vector<AddedTokenMatcher::Token> raw_added, normalized_added;
  absl::flat_hash_map<std::string, size_t> added_by_content;
  absl::flat_hash_map<int32_t, size_t> added_by_id;
  for (size_t i = 0; i < spec.added_tokens.size(); ++i) {
    const AddedTokenSpec& added = spec.added_tokens[i];
    const std::string field = absl::StrCat("added_tokens[", i, "]");
    if (auto [it, inserted] = added_by_content.try_emplace(added.content, i); !inserted) {
      return Invalid(
          source, field + ".content",
          absl::StrCat("\"", added.content, "\" is also added_tokens[", it->second, "]"));
    }
    if (auto [it, inserted] = added_by_id.try_emplace(added.id, i); !inserted) {
      return Invalid(source, field + ".id",
                     absl::StrCat(added.id, " is also the id of added_tokens[", it->second, "]"));
    }
    auto in_vocab = token_ids.find(added.content);
    if (in_vocab != token_ids.end() && in_vocab->second != added.id) {
      return Invalid(source, field + ".id",
                     absl::StrCat(added.id, " but model.vocab gives \"", added.content, "\" id ",
                                  in_vocab->second));
    }
    if (in_vocab == token_ids.end() && vocab_entry[added.id] >= 0) {
      return Invalid(source, field + ".id",
                     absl::StrCat(added.id, " is already model.vocab's \"",
                                  spec.vocab[vocab_entry[added.id]].first, "\""));
    }
    (added.normalized ? normalized_added : raw_added)
        .push_back({added.content, added.id, added.special, added.lstrip, added.rstrip});
  }

  std::unique_ptr<BpeTokenizer> tok(
      new BpeTokenizer(byte_tokens, std::move(raw_added), std::move(normalized_added)));
  tok->ignore_merges_ = spec.ignore_merges;

  // Token bytes. token_bytes_ is sized once and never resized: vocab_by_bytes_ views into it.
  tok->token_bytes_.resize(max_id + 1);
  tok->is_special_.assign(max_id + 1, false);
  std::vector<bool> in_alphabet(max_id + 1, false);
  for (auto& [token, id] : spec.vocab) {
    std::optional<std::string> bytes = ByteLevelDecode(token);
    // A token outside the byte-level alphabet can never come out of merging bytes; it decodes
    // to its own text, as Hugging Face's ByteLevel decoder does for unknown characters.
    in_alphabet[id] = bytes.has_value();
    tok->token_bytes_[id] = bytes ? std::move(*bytes) : token;
  }
  for (const AddedTokenSpec& added : spec.added_tokens) {
    tok->token_bytes_[added.id] = added.content;
    tok->is_special_[added.id] = added.special;
    in_alphabet[added.id] = false;
    token_ids.insert_or_assign(added.content, added.id);
  }
  tok->vocab_by_bytes_.reserve(spec.vocab.size());
  for (const auto& [token, id] : spec.vocab) {
    if (in_alphabet[id]) tok->vocab_by_bytes_.emplace(tok->token_bytes_[id], id);
  }
  // An added token that strips whitespace beside it stands for any number of input bytes.
  const bool strips = std::any_of(spec.added_tokens.begin(), spec.added_tokens.end(),
                                  [](const AddedTokenSpec& a) { return a.lstrip || a.rstrip; });
  for (const std::string& bytes : tok->token_bytes_) {
    tok->max_token_bytes_ = std::max(tok->max_token_bytes_, bytes.size());
  }
  if (strips) tok->max_token_bytes_ = 0;

  // Merges, by rank.
  tok->bpe_.ReserveMerges(spec.merges.size());
  std::string merged;
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    const std::string field = absl::StrCat("model.merges[", rank, "]");
    auto left_id = token_ids.find(left);
    if (left_id == token_ids.end()) {
      return Invalid(source, field, absl::StrCat("token \"", left, "\" is not in model.vocab"));
    }
    auto right_id = token_ids.find(right);
    if (right_id == token_ids.end()) {
      return Invalid(source, field, absl::StrCat("token \"", right, "\" is not in model.vocab"));
    }
    merged.assign(left).append(right);
    auto merged_id = token_ids.find(merged);
    if (merged_id == token_ids.end()) {
      return Invalid(source, field,
                     absl::StrCat("merged token \"", merged, "\" is not in model.vocab"));
    }
    tok->bpe_.AddMerge(left_id->second, right_id->second, static_cast<int32_t>(rank),
                       merged_id->second);
  }
  tok->token_ids_ = std::move(token_ids);

  // BOS: tokenizer_config.json's bos_token, else the post-processor template's.
  if (config.has_value() && config->bos_token.has_value()) {
    std::optional<int32_t> id = tok->TokenId(*config->bos_token);
    if (!id) {
      return Invalid(config_source, "bos_token",
                     absl::StrCat("\"", *config->bos_token, "\" is not a token of ", source));
    }
    tok->bos_id_ = id;
  } else if (spec.template_bos.has_value()) {
    std::optional<int32_t> id = tok->TokenId(*spec.template_bos);
    if (!id) {
      return Invalid(source, "post_processor",
                     absl::StrCat("template token \"", *spec.template_bos, "\" is not a token"));
    }
    tok->bos_id_ = id;
  }
  tok->add_bos_default_ = config.has_value() && config->add_bos_token.has_value()
                              ? *config->add_bos_token
                              : spec.template_bos.has_value();
  if (tok->add_bos_default_ && !tok->bos_id_) {
    return Invalid(config_source, "add_bos_token", "is true but no bos_token is given");
  }
  return tok;
}

std::vector<int32_t> BpeTokenizer::Encode(absl::string_view text,
                                          const EncodeOptions& options) const {
  std::string repaired;
  if (!IsValidUtf8(text)) {
    repaired = ReplaceInvalidUtf8(text);
    text = repaired;
  }
  // With a limit, work stops once it is passed: the ids then end at an arbitrary point.
  const size_t limit = options.max_tokens > 0 ? options.max_tokens : SIZE_MAX;
  std::vector<int32_t> ids;
  ids.reserve(std::min(text.size() / 3, limit) + 2);
  if (options.add_bos && bos_id_.has_value()) ids.push_back(*bos_id_);
  auto on_token = [&ids, limit](int32_t id) {
    if (ids.size() <= limit) ids.push_back(id);
  };
  auto on_ordinary = [&](absl::string_view part) { EncodeOrdinary(part, limit, &ids); };
  if (raw_added_.empty() && normalized_added_.empty()) {
    EncodeOrdinary(text, limit, &ids);
  } else {
    raw_added_.Split(
        text, options.parse_special,
        [&](absl::string_view part) {
          normalized_added_.Split(part, options.parse_special, on_ordinary, on_token);
        },
        on_token);
  }
  return ids;
}

void BpeTokenizer::EncodeOrdinary(absl::string_view text, size_t limit,
                                  std::vector<int32_t>* out) const {
  for (size_t pos = 0; pos < text.size() && out->size() <= limit;) {
    const size_t length = Llama3PreTokenLength(text, pos);
    EncodePreToken(text.substr(pos, length), out);
    pos += length;
  }
}

void BpeTokenizer::EncodePreToken(absl::string_view piece, std::vector<int32_t>* out) const {
  if (piece.size() == 1) {
    out->push_back(bpe_.ByteToken(static_cast<unsigned char>(piece[0])));
    return;
  }
  if (ignore_merges_) {
    auto it = vocab_by_bytes_.find(piece);
    if (it != vocab_by_bytes_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  if (cache_.Lookup(piece, out)) return;
  const size_t first = out->size();
  bpe_.Encode(piece, out);
  cache_.Insert(piece, absl::MakeConstSpan(out->data() + first, out->size() - first));
}

const std::string& BpeTokenizer::TokenBytes(int32_t id) const {
  static const std::string* const kEmpty = new std::string;
  if (id < 0 || id >= vocab_size()) return *kEmpty;
  return token_bytes_[id];
}

std::string BpeTokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || (skip_special && is_special_[id])) continue;
    text += token_bytes_[id];
  }
  if (!IsValidUtf8(text)) return ReplaceInvalidUtf8(text);
  return text;
}

std::optional<int32_t> BpeTokenizer::TokenId(absl::string_view token) const {
  auto it = token_ids_.find(token);
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

bool BpeTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && is_special_[id];
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view json,
                                                               absl::string_view source) {
  ASSIGN_OR_RETURN(TokenizerSpec spec, ParseTokenizerJson(json, source));
  ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tok,
                   BpeTokenizer::Create(std::move(spec), source));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::filesystem::path& path) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) {
    return absl::NotFoundError(
        absl::StrCat(path.string(),
                     ": no such file or directory (expected tokenizer.json or a directory "
                     "holding it)"));
  }
  const std::filesystem::path json_path =
      std::filesystem::is_directory(path, error) ? path / "tokenizer.json" : path;
  ASSIGN_OR_RETURN(std::string json, ReadFile(json_path));
  const std::string source = json_path.string();
  ASSIGN_OR_RETURN(TokenizerSpec spec, ParseTokenizerJson(json, source));
  json = std::string();  // the 9 MB text is no longer needed

  // tokenizer_config.json beside it is optional; when present it must be valid.
  std::optional<TokenizerConfigSpec> config;
  const std::filesystem::path config_path = json_path.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config_path, error)) {
    ASSIGN_OR_RETURN(std::string config_json, ReadFile(config_path));
    ASSIGN_OR_RETURN(config, ParseTokenizerConfigJson(config_json, config_path.string()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tok,
                   BpeTokenizer::Create(std::move(spec), source, config, config_path.string()));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace bitserve
