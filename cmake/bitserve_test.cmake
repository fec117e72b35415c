# bitserve_add_test(NAME SRCS a.cc b.cc DEPS lib... LABELS unit|integration|gpu|slow)
# One gtest binary; each TEST becomes a ctest case carrying LABELS. Discovery runs at test time,
# so GPU test binaries build on machines without a GPU.
function(bitserve_add_test name)
  cmake_parse_arguments(T "" "" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${T_SRCS})
  target_link_libraries(${name} PRIVATE ${T_DEPS} bitserve_options GTest::gtest GTest::gmock
                        GTest::gtest_main)
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${T_LABELS}"
    DISCOVERY_MODE PRE_TEST)
endfunction()
