# worker_protocol_fuzz: libFuzzer target for the internal worker protocol's decoders
# (cmake/bitserve_fuzzer.cmake), run for a bounded time in ctest over the seed corpus in
# tests/data/worker_protocol_corpus. The generated worker.pb.cc (grpc.cmake) is compiled with the
# fuzzer's clang++ too; naming it as a source makes protoc run first.
add_library(bitserve_fuzz_worker_proto_headers INTERFACE)
target_include_directories(bitserve_fuzz_worker_proto_headers INTERFACE ${BITSERVE_PROTO_OUT_DIR})
bitserve_add_fuzzer(worker_protocol_fuzz
  SOURCES "${CMAKE_CURRENT_SOURCE_DIR}/worker_protocol.cc"
          "${CMAKE_CURRENT_SOURCE_DIR}/worker_protocol_fuzz.cc"
          "${BITSERVE_PROTO_OUT_DIR}/bitserve/internal/worker.pb.cc"
          "${PROJECT_SOURCE_DIR}/kernels/cpu/sampling.cc"
  HEADERS "${CMAKE_CURRENT_SOURCE_DIR}/worker_protocol.h"
          "${PROJECT_SOURCE_DIR}/runtime/engine/engine.h"
          "${PROJECT_SOURCE_DIR}/kernels/cpu/sampling.h"
  LIBS absl::status absl::statusor absl::strings absl::str_format absl::str_format_internal
       protobuf::libprotobuf bitserve_fuzz_worker_proto_headers
  CORPUS "${PROJECT_SOURCE_DIR}/tests/data/worker_protocol_corpus")
