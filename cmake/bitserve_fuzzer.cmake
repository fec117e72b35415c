# bitserve_add_fuzzer(NAME SOURCES files... [HEADERS files...] LIBS targets... CORPUS dir
#                     [SECONDS n]): a libFuzzer
# target built by clang++ from its sources (ASan, UBSan), plus a bounded ctest run of it (label
# unit) over the committed seed corpus. The project compiles with g++, which has no libFuzzer, so
# clang++ builds each fuzzer through a custom command; LIBS are imported targets (absl::...) whose
# include directories and shared libraries the sources need. Without a clang++ that can link
# -fsanitize=fuzzer every fuzzer is skipped, with one message.
find_program(BITSERVE_FUZZ_CXX NAMES clang++ clang++-14
             DOC "clang++ with the libFuzzer runtime, for the fuzzers")
if(BITSERVE_FUZZ_CXX AND (NOT DEFINED BITSERVE_FUZZ_CXX_WORKS OR
                          NOT BITSERVE_FUZZ_CXX_PROBED STREQUAL BITSERVE_FUZZ_CXX))
  # Debian ships clang and its libFuzzer runtime in separate packages: link a trivial fuzzer once.
  set(_fuzz_probe_dir "${CMAKE_BINARY_DIR}/fuzz_probe")
  file(WRITE "${_fuzz_probe_dir}/probe.cc"
       "#include <cstddef>\n#include <cstdint>\n"
       "extern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(
    COMMAND "${BITSERVE_FUZZ_CXX}" -fsanitize=fuzzer,address,undefined probe.cc -o probe
    WORKING_DIRECTORY "${_fuzz_probe_dir}"
    RESULT_VARIABLE _fuzz_probe_result OUTPUT_QUIET ERROR_QUIET)
  if(_fuzz_probe_result EQUAL 0)
    set(BITSERVE_FUZZ_CXX_WORKS TRUE CACHE INTERNAL "")
  else()
    set(BITSERVE_FUZZ_CXX_WORKS FALSE CACHE INTERNAL "")
  endif()
  set(BITSERVE_FUZZ_CXX_PROBED "${BITSERVE_FUZZ_CXX}" CACHE INTERNAL "")
endif()
if(NOT BITSERVE_FUZZ_CXX)
  message(STATUS "bitserve: no clang++ found, skipping the fuzzers")
elseif(NOT BITSERVE_FUZZ_CXX_WORKS)
  message(STATUS "bitserve: ${BITSERVE_FUZZ_CXX} cannot link -fsanitize=fuzzer "
                 "(libclang-rt-dev missing?), skipping the fuzzers")
endif()

function(bitserve_add_fuzzer name)
  cmake_parse_arguments(F "" "CORPUS;SECONDS" "SOURCES;HEADERS;LIBS" ${ARGN})
  if(NOT BITSERVE_FUZZ_CXX_WORKS)
    return()
  endif()
  if(NOT F_SECONDS)
    set(F_SECONDS 20)
  endif()
  # Header locations of the packages the sources use, except the default system directory:
  # naming /usr/include explicitly would break libstdc++'s #include_next.
  set(includes "-I${PROJECT_SOURCE_DIR}")
  set(libraries "")
  foreach(lib IN LISTS F_LIBS)
    get_target_property(dirs ${lib} INTERFACE_INCLUDE_DIRECTORIES)
    foreach(dir IN LISTS dirs)
      if(dir AND NOT dir STREQUAL "/usr/include")
        list(APPEND includes "-isystem${dir}")
      endif()
    endforeach()
    get_target_property(type ${lib} TYPE)
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      # Shared libraries on Debian, so their own dependencies (cord, ...) come along.
      list(APPEND libraries "$<TARGET_LINKER_FILE:${lib}>")
    endif()
  endforeach()
  # Named apart from the target: Ninja refuses a file and a target alias of the same path.
  set(binary "${CMAKE_CURRENT_BINARY_DIR}/${name}er")
  add_custom_command(
    OUTPUT "${binary}"
    COMMAND "${BITSERVE_FUZZ_CXX}" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined
            -fno-sanitize-recover=undefined -DBITSERVE_WITH_CUDA=0 -DBITSERVE_WITH_NCCL=0
            ${includes} ${F_SOURCES} -o "${binary}" ${libraries}
    DEPENDS ${F_SOURCES} ${F_HEADERS}
    COMMENT "Building ${name} with clang++ (libFuzzer, ASan, UBSan)"
    COMMAND_EXPAND_LISTS VERBATIM)
  add_custom_target(${name} ALL DEPENDS "${binary}")
  # libFuzzer writes new inputs into the first directory, so that is a build-tree directory and
  # the committed seeds stay untouched; crash reproducers also land in the build tree.
  set(work "${CMAKE_CURRENT_BINARY_DIR}/${name}_corpus")
  file(MAKE_DIRECTORY "${work}")
  add_test(NAME ${name}
    COMMAND "${binary}" -max_total_time=${F_SECONDS} -rss_limit_mb=2048 -timeout=10
            "-artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/${name}-" "${work}" "${F_CORPUS}")
  set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 120)
endfunction()
