# tokenizer_json_fuzz: libFuzzer target for tokenizer.json and the BPE tokenizer built from it
# (cmake/bitserve_fuzzer.cmake), run for a bounded time in ctest over the seed corpus in
# tests/data/tokenizer_json_corpus.
#
# The fuzzer helper links the shared libraries of imported targets, and pkg-config's
# PkgConfig::UTF8PROC is an interface target: name the library itself.
add_library(bitserve_fuzz_utf8proc SHARED IMPORTED)
set_target_properties(bitserve_fuzz_utf8proc PROPERTIES IMPORTED_LOCATION "${UTF8PROC_LINK_LIBRARIES}")
set(_tokenizer_dir "${CMAKE_CURRENT_LIST_DIR}")
bitserve_add_fuzzer(tokenizer_json_fuzz
  SOURCES "${_tokenizer_dir}/unicode_text.cc" "${_tokenizer_dir}/pretokenizer.cc"
          "${_tokenizer_dir}/byte_level.cc" "${_tokenizer_dir}/bpe_model.cc"
          "${_tokenizer_dir}/pretoken_cache.cc" "${_tokenizer_dir}/added_tokens.cc"
          "${_tokenizer_dir}/tokenizer_json.cc" "${_tokenizer_dir}/bpe_tokenizer.cc"
          "${_tokenizer_dir}/tokenizer_json_fuzz.cc"
  HEADERS "${_tokenizer_dir}/unicode_text.h" "${_tokenizer_dir}/pretokenizer.h"
          "${_tokenizer_dir}/byte_level.h" "${_tokenizer_dir}/bpe_model.h"
          "${_tokenizer_dir}/pretoken_cache.h" "${_tokenizer_dir}/added_tokens.h"
          "${_tokenizer_dir}/tokenizer_json.h" "${_tokenizer_dir}/bpe_tokenizer.h"
          "${_tokenizer_dir}/tokenizer.h" "${PROJECT_SOURCE_DIR}/base/status_macros.h"
  LIBS absl::status absl::statusor absl::strings absl::flat_hash_map absl::hash
       absl::synchronization absl::function_ref absl::span absl::raw_hash_set absl::throw_delegate
       nlohmann_json::nlohmann_json
       bitserve_fuzz_utf8proc
  CORPUS "${PROJECT_SOURCE_DIR}/tests/data/tokenizer_json_corpus")
