# The OpenAI-compatible HTTP API (`serve --http-listen`): request/response JSON, the cpp-httplib
# server on a GenerationBackend, and the socket look-up that notices clients that go away.
add_library(bitserve_openai_http STATIC
  openai_api.cc
  openai_http.cc
  connection_socket.cc
)
target_link_libraries(bitserve_openai_http
  PUBLIC bitserve_text bitserve_options absl::status absl::statusor absl::strings
         nlohmann_json::nlohmann_json Threads::Threads
  PRIVATE bitserve_metrics bitserve_tls PkgConfig::CPP_HTTPLIB)

# The client side: a GenerationBackend over the HTTP API (bench-serve --base-url).
add_library(bitserve_openai_http_client STATIC openai_http_client.cc)
target_link_libraries(bitserve_openai_http_client
  PUBLIC bitserve_text absl::status absl::statusor absl::strings nlohmann_json::nlohmann_json
         Threads::Threads
  PRIVATE PkgConfig::CPP_HTTPLIB)

bitserve_add_test(openai_api_test
  SRCS openai_api_test.cc
  DEPS bitserve_openai_http
  LABELS unit)

bitserve_add_test(openai_http_test
  SRCS openai_http_test.cc
  DEPS bitserve_openai_http bitserve_rpc_coordinator bitserve_generation PkgConfig::CPP_HTTPLIB
  LABELS integration)

bitserve_add_fuzzer(openai_request_fuzz
  SOURCES "${CMAKE_CURRENT_SOURCE_DIR}/openai_api.cc"
          "${CMAKE_CURRENT_SOURCE_DIR}/openai_request_fuzz.cc"
          "${PROJECT_SOURCE_DIR}/kernels/cpu/sampling.cc"
  HEADERS "${CMAKE_CURRENT_SOURCE_DIR}/openai_api.h"
          "${CMAKE_CURRENT_SOURCE_DIR}/generation_backend.h"
  LIBS absl::status absl::statusor absl::strings absl::str_format absl::str_format_internal
       nlohmann_json::nlohmann_json
  CORPUS "${PROJECT_SOURCE_DIR}/tests/data/openai_request_corpus")
