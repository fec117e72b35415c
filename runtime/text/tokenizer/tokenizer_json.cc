#include "runtime/text/tokenizer/tokenizer_json.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer/pretokenizer.h"

namespace bitserve {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", what));
}

// A short rendering of a JSON value for error messages.
std::string Show(const Json& value) {
  std::string text = value.dump();
  if (text.size() > 80) text = text.substr(0, 77) + "...";
  return text;
}

// Reads a 9 MB tokenizer.json in one pass: model.vocab and model.merges (nearly all of the file)
// go straight into vectors, everything else into a small DOM. Building the whole DOM would take
// three times as long as parsing.
class TokenizerJsonSax : public nlohmann::json_sax<Json> {
 public:
  Json root;
  bool saw_vocab = false;
  bool saw_merges = false;
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::string error;  // why parsing stopped: a syntax error or a bad vocab/merges entry

  bool null() override { return Value(nullptr); }
  bool boolean(bool v) override { return Value(v); }
  bool number_integer(number_integer_t v) override {
    if (mode_ == Mode::kVocab) return VocabId(v);
    return Value(v);
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == Mode::kVocab) return VocabId(v);
    return Value(v);
  }
  bool number_float(number_float_t v, const string_t&) override { return Value(v); }
  bool binary(binary_t& v) override { return Value(std::move(v)); }

  bool string(string_t& v) override {
    switch (mode_) {
      case Mode::kMerges: {
        const size_t space = v.find(' ');
        if (space == std::string::npos || v.find(' ', space + 1) != std::string::npos) {
          return Fail(MergeField(),
                      absl::StrCat("\"", v, "\" is not two tokens separated by one space"));
        }
        merges.emplace_back(v.substr(0, space), v.substr(space + 1));
        return true;
      }
      case Mode::kMergePair:
        if (pair_.size() == 2) return Fail(MergeField(), "a merge pair has more than two tokens");
        pair_.push_back(std::move(v));
        return true;
      default:
        return Value(std::move(v));
    }
  }

  bool start_object(std::size_t) override {
    if (mode_ == Mode::kDom && pending_ == Mode::kVocab) {
      pending_ = Mode::kDom;
      saw_vocab = true;
      mode_ = Mode::kVocab;
      return true;
    }
    if (mode_ == Mode::kVocab) return Fail(VocabField(), "expected an integer id, got an object");
    if (mode_ != Mode::kDom)
      return Fail(MergeField(), "expected \"a b\" or [\"a\", \"b\"], got an object");
    return Open(Json::object());
  }
  bool key(string_t& k) override {
    if (mode_ == Mode::kVocab) {
      vocab_key_ = std::move(k);
      return true;
    }
    // model.vocab and model.merges are recognized by their path: root -> "model" -> key.
    pending_ = Mode::kDom;
    if (stack_.size() == 2 && stack_keys_[1] == "model") {
      if (k == "vocab") pending_ = Mode::kVocab;
      if (k == "merges") pending_ = Mode::kMerges;
    }
    last_key_ = k;
    object_element_ = &(*stack_.back())[k];
    return true;
  }
  bool end_object() override {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kDom;
      return true;
    }
    stack_.pop_back();
    stack_keys_.pop_back();
    return true;
  }

  bool start_array(std::size_t) override {
    if (mode_ == Mode::kDom && pending_ == Mode::kMerges) {
      pending_ = Mode::kDom;
      saw_merges = true;
      mode_ = Mode::kMerges;
      return true;
    }
    if (mode_ == Mode::kMerges) {
      pair_.clear();
      mode_ = Mode::kMergePair;
      return true;
    }
    if (mode_ == Mode::kVocab) return Fail(VocabField(), "expected an integer id, got an array");
    if (mode_ == Mode::kMergePair) return Fail(MergeField(), "a merge pair holds a nested array");
    return Open(Json::array());
  }
  bool end_array() override {
    if (mode_ == Mode::kMerges) {
      mode_ = Mode::kDom;
      return true;
    }
    if (mode_ == Mode::kMergePair) {
      if (pair_.size() != 2) {
        return Fail(MergeField(),
                    absl::StrCat("a merge pair has ", pair_.size(), " tokens (expected two)"));
      }
      merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      mode_ = Mode::kMerges;
      return true;
    }
    stack_.pop_back();
    stack_keys_.pop_back();
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    if (error.empty()) error = absl::StrCat("not valid JSON: ", e.what());
    return false;
  }

 private:
  enum class Mode { kDom, kVocab, kMerges, kMergePair };

  std::string VocabField() const { return absl::StrCat("model.vocab[\"", vocab_key_, "\"]"); }
  std::string MergeField() const { return absl::StrCat("model.merges[", merges.size(), "]"); }

  bool Fail(absl::string_view field, absl::string_view what) {
    error = absl::StrCat(field, ": ", what);
    return false;
  }

  template <typename T>
  bool VocabId(T v) {
    if (v < 0 ||
        static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
      return Fail(VocabField(), absl::StrCat("id ", v, " is out of range"));
    }
    vocab.emplace_back(std::move(vocab_key_), static_cast<int32_t>(v));
    return true;
  }

  template <typename T>
  bool Value(T&& v) {
    if (mode_ == Mode::kVocab) return Fail(VocabField(), "expected an integer id");
    if (mode_ != Mode::kDom) return Fail(MergeField(), "expected \"a b\" or [\"a\", \"b\"]");
    pending_ = Mode::kDom;  // e.g. "vocab": null goes to the DOM and is reported from there
    Place(Json(std::forward<T>(v)));
    return true;
  }

  Json* Place(Json&& v) {
    if (stack_.empty()) {
      root = std::move(v);
      return &root;
    }
    if (stack_.back()->is_array()) {
      stack_.back()->push_back(std::move(v));
      return &stack_.back()->back();
    }
    *object_element_ = std::move(v);
    return object_element_;
  }

  bool Open(Json&& container) {
    const std::string key =
        !stack_.empty() && stack_.back()->is_object() ? last_key_ : std::string();
    pending_ = Mode::kDom;
    stack_.push_back(Place(std::move(container)));
    stack_keys_.push_back(key);
    return true;
  }

  Mode mode_ = Mode::kDom;
  Mode pending_ = Mode::kDom;
  std::vector<Json*> stack_;
  std::vector<std::string> stack_keys_;
  Json* object_element_ = nullptr;
  std::string last_key_;  // the key object_element_ belongs to
  std::string vocab_key_;
  std::vector<std::string> pair_;
};

// Typed field access with errors that name the field.
class Fields {
 public:
  explicit Fields(absl::string_view source) : source_(source) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return FieldError(source_, field, what);
  }

  // The object at `field` (which must be one).
  absl::StatusOr<const Json*> Object(const Json& parent, absl::string_view parent_name,
                                     const char* key) const {
    auto it = parent.find(key);
    const std::string field = Join(parent_name, key);
    if (it == parent.end()) return Error(field, "missing");
    if (!it->is_object())
      return Error(field, absl::StrCat("expected an object, got ", it->type_name()));
    return &*it;
  }

  absl::StatusOr<std::string> String(const Json& parent, absl::string_view parent_name,
                                     const char* key) const {
    auto it = parent.find(key);
    const std::string field = Join(parent_name, key);
    if (it == parent.end()) return Error(field, "missing");
    if (!it->is_string())
      return Error(field, absl::StrCat("expected a string, got ", it->type_name()));
    return it->get<std::string>();
  }

  // An optional boolean (absent or null: `fallback`).
  absl::StatusOr<bool> Bool(const Json& parent, absl::string_view parent_name, const char* key,
                            bool fallback) const {
    auto it = parent.find(key);
    if (it == parent.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) {
      return Error(Join(parent_name, key),
                   absl::StrCat("expected true or false, got ", it->type_name()));
    }
    return it->get<bool>();
  }

  static std::string Join(absl::string_view parent, absl::string_view key) {
    return parent.empty() ? std::string(key) : absl::StrCat(parent, ".", key);
  }

 private:
  absl::string_view source_;
};

// The string at `key`, or "" when absent or not a string (for matching fixed configurations).
std::string StringOr(const Json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

bool IsAbsent(const Json& parent, const char* key) {
  auto it = parent.find(key);
  return it == parent.end() || it->is_null();
}

absl::Status CheckModel(const Json& model, const Fields& f) {
  ASSIGN_OR_RETURN(std::string type, f.String(model, "model", "type"));
  if (type != "BPE") {
    return f.Error("model.type",
                   absl::StrCat("\"", type, "\" is not supported (expected \"BPE\")"));
  }
  if (!IsAbsent(model, "dropout")) {
    return f.Error("model.dropout",
                   absl::StrCat(Show(model["dropout"]),
                                " is not supported (BPE dropout is random; expected null)"));
  }
  ASSIGN_OR_RETURN(bool byte_fallback, f.Bool(model, "model", "byte_fallback", false));
  if (byte_fallback) {
    return f.Error("model.byte_fallback",
                   "true is not supported (a byte-level vocabulary needs no fallback)");
  }
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (IsAbsent(model, affix)) continue;
    const Json& value = model[affix];
    if (!value.is_string() || !value.get<std::string>().empty()) {
      return f.Error(Fields::Join("model", affix),
                     absl::StrCat(Show(value), " is not supported (expected null)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPreTokenizer(const Json& root, const Fields& f) {
  const std::string expected = absl::StrCat(
      "expected a Sequence of Split(Regex: the LLaMA-3 pattern, behavior: Isolated) and "
      "ByteLevel(add_prefix_space: false, use_regex: false)");
  ASSIGN_OR_RETURN(const Json* pre, f.Object(root, "", "pre_tokenizer"));
  ASSIGN_OR_RETURN(std::string type, f.String(*pre, "pre_tokenizer", "type"));
  auto steps = pre->find("pretokenizers");
  if (type != "Sequence" || steps == pre->end() || !steps->is_array() || steps->size() != 2) {
    return f.Error("pre_tokenizer",
                   absl::StrCat("unsupported configuration ", Show(*pre), "; ", expected));
  }
  const Json& split = (*steps)[0];
  const Json& byte_level = (*steps)[1];
  if (!split.is_object() || StringOr(split, "type") != "Split") {
    return f.Error("pre_tokenizer.pretokenizers[0]",
                   absl::StrCat("expected a Split, got ", Show(split)));
  }
  const Json* pattern = split.contains("pattern") ? &split["pattern"] : nullptr;
  if (pattern == nullptr || !pattern->is_object() || !pattern->contains("Regex") ||
      !(*pattern)["Regex"].is_string()) {
    return f.Error("pre_tokenizer.pretokenizers[0].pattern",
                   absl::StrCat("expected {\"Regex\": ...}, got ",
                                pattern ? Show(*pattern) : std::string("nothing")));
  }
  const std::string regex = (*pattern)["Regex"].get<std::string>();
  if (regex != kLlama3SplitPattern) {
    return f.Error("pre_tokenizer.pretokenizers[0].pattern.Regex",
                   absl::StrCat("unsupported regex \"", regex,
                                "\" (bitserve implements only the LLaMA-3 pattern)"));
  }
  if (StringOr(split, "behavior") != "Isolated") {
    return f.Error("pre_tokenizer.pretokenizers[0].behavior",
                   absl::StrCat(split.contains("behavior") ? Show(split["behavior"]) : "missing",
                                " is not supported (expected \"Isolated\")"));
  }
  ASSIGN_OR_RETURN(bool invert, f.Bool(split, "pre_tokenizer.pretokenizers[0]", "invert", false));
  if (invert) return f.Error("pre_tokenizer.pretokenizers[0].invert", "true is not supported");
  if (!byte_level.is_object() || StringOr(byte_level, "type") != "ByteLevel") {
    return f.Error("pre_tokenizer.pretokenizers[1]",
                   absl::StrCat("expected a ByteLevel, got ", Show(byte_level)));
  }
  // Hugging Face's defaults for both are true, so absence is refused too.
  for (const char* flag : {"add_prefix_space", "use_regex"}) {
    ASSIGN_OR_RETURN(bool value, f.Bool(byte_level, "pre_tokenizer.pretokenizers[1]", flag, true));
    if (value) {
      return f.Error(Fields::Join("pre_tokenizer.pretokenizers[1]", flag),
                     "must be false (the Split already did the pre-tokenization)");
    }
  }
  return absl::OkStatus();
}

absl::Status ReadPostProcessor(const Json& processor, absl::string_view field, const Fields& f,
                               TokenizerSpec* spec) {
  if (processor.is_null()) return absl::OkStatus();
  if (!processor.is_object())
    return f.Error(field, absl::StrCat("expected an object, got ", processor.type_name()));
  ASSIGN_OR_RETURN(std::string type, f.String(processor, field, "type"));
  if (type == "ByteLevel") return absl::OkStatus();  // it only adjusts offsets
  if (type == "Sequence") {
    auto steps = processor.find("processors");
    if (steps == processor.end() || !steps->is_array()) {
      return f.Error(Fields::Join(field, "processors"), "expected an array");
    }
    for (size_t i = 0; i < steps->size(); ++i) {
      RETURN_IF_ERROR(
          ReadPostProcessor((*steps)[i], absl::StrCat(field, ".processors[", i, "]"), f, spec));
    }
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    // Supported: "$A" alone or preceded by one special token (the BOS). Templates that append
    // tokens (EOS, SEP) are refused: Encode has no option for them.
    const std::string single_field = Fields::Join(field, "single");
    auto single = processor.find("single");
    if (single == processor.end() || !single->is_array() || single->empty()) {
      return f.Error(single_field, "expected a non-empty array");
    }
    auto is_sequence_a = [](const Json& item) {
      return item.is_object() && item.contains("Sequence") && item["Sequence"].is_object() &&
             StringOr(item["Sequence"], "id") == "A";
    };
    const Json& first = (*single)[0];
    if (single->size() == 1 && is_sequence_a(first)) return absl::OkStatus();
    if (single->size() == 2 && is_sequence_a((*single)[1]) && first.is_object() &&
        first.contains("SpecialToken") && first["SpecialToken"].is_object() &&
        first["SpecialToken"].contains("id") && first["SpecialToken"]["id"].is_string()) {
      spec->template_bos = first["SpecialToken"]["id"].get<std::string>();
      return absl::OkStatus();
    }
    return f.Error(single_field, absl::StrCat("unsupported template ", Show(*single),
                                              " (expected [$A] or [BOS, $A])"));
  }
  return f.Error(Fields::Join(field, "type"),
                 absl::StrCat("\"", type,
                              "\" is not supported (expected ByteLevel, "
                              "TemplateProcessing or a Sequence of them)"));
}

absl::Status ReadAddedTokens(const Json& root, const Fields& f, TokenizerSpec* spec) {
  auto added = root.find("added_tokens");
  if (added == root.end() || added->is_null()) return absl::OkStatus();
  if (!added->is_array()) {
    return f.Error("added_tokens", absl::StrCat("expected an array, got ", added->type_name()));
  }
  for (size_t i = 0; i < added->size(); ++i) {
    const Json& item = (*added)[i];
    const std::string field = absl::StrCat("added_tokens[", i, "]");
    if (!item.is_object())
      return f.Error(field, absl::StrCat("expected an object, got ", item.type_name()));
    AddedTokenSpec token;
    auto id = item.find("id");
    if (id == item.end()) return f.Error(field + ".id", "missing");
    if (!id->is_number_unsigned() || id->get<uint64_t>() > std::numeric_limits<int32_t>::max()) {
      return f.Error(field + ".id",
                     absl::StrCat("expected a non-negative integer id, got ", Show(*id)));
    }
    token.id = id->get<int32_t>();
    ASSIGN_OR_RETURN(token.content, f.String(item, field, "content"));
    if (token.content.empty()) return f.Error(field + ".content", "is empty");
    ASSIGN_OR_RETURN(token.special, f.Bool(item, field, "special", false));
    ASSIGN_OR_RETURN(token.lstrip, f.Bool(item, field, "lstrip", false));
    ASSIGN_OR_RETURN(token.rstrip, f.Bool(item, field, "rstrip", false));
    // Hugging Face's default: special tokens match the raw text, others the normalized text.
    ASSIGN_OR_RETURN(token.normalized, f.Bool(item, field, "normalized", !token.special));
    ASSIGN_OR_RETURN(bool single_word, f.Bool(item, field, "single_word", false));
    if (single_word) {
      return f.Error(field + ".single_word",
                     "true is not supported (its word-boundary rule is not implemented)");
    }
    spec->added_tokens.push_back(std::move(token));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenizerSpec> ParseTokenizerJson(absl::string_view json, absl::string_view source) {
  TokenizerJsonSax sax;
  const bool parsed = Json::sax_parse(json.data(), json.data() + json.size(), &sax);
  if (!parsed || !sax.error.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", sax.error.empty() ? std::string("not valid JSON") : sax.error));
  }
  const Fields f(source);
  const Json& root = sax.root;
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object at the top level, got ", root.type_name()));
  }
  ASSIGN_OR_RETURN(const Json* model, f.Object(root, "", "model"));
  RETURN_IF_ERROR(CheckModel(*model, f));

  TokenizerSpec spec;
  if (!sax.saw_vocab) {
    return f.Error("model.vocab", model->contains("vocab")
                                      ? absl::StrCat("expected an object of token -> id, got ",
                                                     (*model)["vocab"].type_name())
                                      : std::string("missing"));
  }
  if (!sax.saw_merges) {
    return f.Error("model.merges", model->contains("merges")
                                       ? absl::StrCat("expected an array of merges, got ",
                                                      (*model)["merges"].type_name())
                                       : std::string("missing"));
  }
  spec.vocab = std::move(sax.vocab);
  spec.merges = std::move(sax.merges);
  ASSIGN_OR_RETURN(spec.ignore_merges, f.Bool(*model, "model", "ignore_merges", false));

  if (!IsAbsent(root, "normalizer")) {
    return f.Error("normalizer",
                   absl::StrCat(Show(root["normalizer"]), " is not supported (expected null)"));
  }
  for (const char* field : {"truncation", "padding"}) {
    if (!IsAbsent(root, field)) {
      return f.Error(field, absl::StrCat(Show(root[field]), " is not supported (expected null)"));
    }
  }
  RETURN_IF_ERROR(CheckPreTokenizer(root, f));
  if (root.contains("post_processor")) {
    RETURN_IF_ERROR(ReadPostProcessor(root["post_processor"], "post_processor", f, &spec));
  }
  ASSIGN_OR_RETURN(const Json* decoder, f.Object(root, "", "decoder"));
  ASSIGN_OR_RETURN(std::string decoder_type, f.String(*decoder, "decoder", "type"));
  if (decoder_type != "ByteLevel") {
    return f.Error("decoder.type", absl::StrCat("\"", decoder_type,
                                                "\" is not supported (expected \"ByteLevel\")"));
  }
  RETURN_IF_ERROR(ReadAddedTokens(root, f, &spec));
  return spec;
}

absl::StatusOr<TokenizerConfigSpec> ParseTokenizerConfigJson(absl::string_view json,
                                                             absl::string_view source) {
  Json root = Json::parse(json.begin(), json.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object at the top level, got ", root.type_name()));
  }
  const Fields f(source);
  TokenizerConfigSpec config;
  auto bos = root.find("bos_token");
  if (bos != root.end() && !bos->is_null()) {
    if (bos->is_string()) {
      config.bos_token = bos->get<std::string>();
    } else if (bos->is_object() && bos->contains("content") && (*bos)["content"].is_string()) {
      config.bos_token = (*bos)["content"].get<std::string>();
    } else {
      return f.Error("bos_token",
                     absl::StrCat("expected a string or {\"content\": string}, got ", Show(*bos)));
    }
  }
  if (!IsAbsent(root, "add_bos_token")) {
    ASSIGN_OR_RETURN(bool add, f.Bool(root, "", "add_bos_token", false));
    config.add_bos_token = add;
  }
  return config;
}

}  // namespace bitserve
