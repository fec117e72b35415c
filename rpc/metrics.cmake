# Prometheus metrics: the registry and its text format, the serving metrics the coordinator
# reports, and the HTTP endpoint that serves them (Debian's cpp-httplib: a compiled library whose
# header must see the same CPPHTTPLIB_* feature macros it was built with, hence pkg-config).
find_package(PkgConfig REQUIRED)
pkg_check_modules(CPP_HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)

add_library(bitserve_metrics STATIC
  metrics.cc
  serving_metrics.cc
  metrics_http.cc
  http_listen.cc
  api_keys.cc
)
target_link_libraries(bitserve_metrics
  PUBLIC bitserve_options absl::status absl::statusor absl::strings Threads::Threads
  PRIVATE PkgConfig::CPP_HTTPLIB)

bitserve_add_test(metrics_test
  SRCS metrics_test.cc
  DEPS bitserve_metrics PkgConfig::CPP_HTTPLIB
  LABELS unit)

bitserve_add_test(api_keys_test
  SRCS api_keys_test.cc
  DEPS bitserve_metrics
  LABELS unit)
