# safetensors_fuzz: libFuzzer target for the safetensors header parser (cmake/bitserve_fuzzer.cmake),
# run for a bounded time in ctest over the seed corpus in tests/data/safetensors_corpus.
bitserve_add_fuzzer(safetensors_fuzz
  SOURCES "${CMAKE_CURRENT_LIST_DIR}/safetensors_header.cc"
          "${CMAKE_CURRENT_LIST_DIR}/safetensors_fuzz.cc"
  HEADERS "${CMAKE_CURRENT_LIST_DIR}/safetensors_header.h"
          "${PROJECT_SOURCE_DIR}/base/status_macros.h"
  LIBS absl::status absl::statusor absl::strings nlohmann_json::nlohmann_json
  CORPUS "${PROJECT_SOURCE_DIR}/tests/data/safetensors_corpus")
