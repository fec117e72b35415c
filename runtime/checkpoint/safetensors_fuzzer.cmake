# safetensors_fuzz: libFuzzer target for the safetensors header parser, plus a bounded ctest run of
# it (label unit) over the seed corpus in tests/data/safetensors_corpus.
# The project compiles with g++, which has no libFuzzer, so clang++ builds the fuzzer through a
# custom command from the parser's own sources, with ASan and UBSan. Without a clang++ that can
# link -fsanitize=fuzzer the fuzzer is skipped.
get_filename_component(_st_fuzz_root "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

find_program(BITSERVE_FUZZ_CXX NAMES clang++ clang++-14
             DOC "clang++ with the libFuzzer runtime, for safetensors_fuzz")
if(NOT BITSERVE_FUZZ_CXX)
  message(STATUS "bitserve: no clang++ found, skipping safetensors_fuzz")
  return()
endif()

# Debian ships clang and its libFuzzer runtime in separate packages: link a trivial fuzzer once.
if(NOT DEFINED BITSERVE_FUZZ_CXX_WORKS OR NOT BITSERVE_FUZZ_CXX_PROBED STREQUAL BITSERVE_FUZZ_CXX)
  set(_st_probe_dir "${CMAKE_CURRENT_BINARY_DIR}/safetensors_fuzz_probe")
  file(WRITE "${_st_probe_dir}/probe.cc"
       "#include <cstddef>\n#include <cstdint>\n"
       "extern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(
    COMMAND "${BITSERVE_FUZZ_CXX}" -fsanitize=fuzzer,address,undefined probe.cc -o probe
    WORKING_DIRECTORY "${_st_probe_dir}"
    RESULT_VARIABLE _st_probe_result OUTPUT_QUIET ERROR_QUIET)
  if(_st_probe_result EQUAL 0)
    set(BITSERVE_FUZZ_CXX_WORKS TRUE CACHE INTERNAL "")
  else()
    set(BITSERVE_FUZZ_CXX_WORKS FALSE CACHE INTERNAL "")
  endif()
  set(BITSERVE_FUZZ_CXX_PROBED "${BITSERVE_FUZZ_CXX}" CACHE INTERNAL "")
endif()
if(NOT BITSERVE_FUZZ_CXX_WORKS)
  message(STATUS "bitserve: ${BITSERVE_FUZZ_CXX} cannot link -fsanitize=fuzzer "
                 "(libclang-rt-dev missing?), skipping safetensors_fuzz")
  return()
endif()
message(STATUS "bitserve: safetensors_fuzz built with ${BITSERVE_FUZZ_CXX}")

set(_st_fuzz_sources
  "${CMAKE_CURRENT_LIST_DIR}/safetensors_header.cc"
  "${CMAKE_CURRENT_LIST_DIR}/safetensors_fuzz.cc")
# Named apart from the target: Ninja refuses a file and a target alias of the same path.
set(_st_fuzz_binary "${CMAKE_CURRENT_BINARY_DIR}/safetensors_fuzzer")
# Header locations of the packages the parser uses, except the default system directory: naming
# /usr/include explicitly would break libstdc++'s #include_next.
set(_st_fuzz_includes "-I${_st_fuzz_root}")
foreach(_st_target absl::status nlohmann_json::nlohmann_json)
  get_target_property(_st_dirs ${_st_target} INTERFACE_INCLUDE_DIRECTORIES)
  foreach(_st_dir IN LISTS _st_dirs)
    if(_st_dir AND NOT _st_dir STREQUAL "/usr/include")
      list(APPEND _st_fuzz_includes "-isystem${_st_dir}")
    endif()
  endforeach()
endforeach()

add_custom_command(
  OUTPUT "${_st_fuzz_binary}"
  COMMAND "${BITSERVE_FUZZ_CXX}" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined
          -fno-sanitize-recover=undefined -DBITSERVE_WITH_CUDA=0 -DBITSERVE_WITH_NCCL=0
          ${_st_fuzz_includes} ${_st_fuzz_sources} -o "${_st_fuzz_binary}"
          # Shared libraries on Debian, so their own dependencies (cord, ...) come along.
          "$<TARGET_LINKER_FILE:absl::status>" "$<TARGET_LINKER_FILE:absl::statusor>"
          "$<TARGET_LINKER_FILE:absl::strings>"
  DEPENDS ${_st_fuzz_sources} "${CMAKE_CURRENT_LIST_DIR}/safetensors_header.h"
          "${_st_fuzz_root}/base/status_macros.h"
  COMMENT "Building safetensors_fuzz with clang++ (libFuzzer, ASan, UBSan)"
  COMMAND_EXPAND_LISTS VERBATIM)
add_custom_target(safetensors_fuzz ALL DEPENDS "${_st_fuzz_binary}")

# libFuzzer writes new inputs into the first directory, so that is a build-tree directory and the
# committed seeds stay untouched; crash reproducers also land in the build tree.
set(_st_fuzz_work "${CMAKE_CURRENT_BINARY_DIR}/safetensors_fuzz_corpus")
file(MAKE_DIRECTORY "${_st_fuzz_work}")
add_test(NAME safetensors_fuzz
  COMMAND "${_st_fuzz_binary}" -max_total_time=20 -rss_limit_mb=2048 -timeout=10
          "-artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/safetensors_fuzz-"
          "${_st_fuzz_work}" "${_st_fuzz_root}/tests/data/safetensors_corpus")
set_tests_properties(safetensors_fuzz PROPERTIES LABELS unit TIMEOUT 120)
