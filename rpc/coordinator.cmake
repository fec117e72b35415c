# The coordinator: scheduler + engine + tokenizer behind GenerationBackend.
add_library(bitserve_rpc_coordinator coordinator.cc)
target_link_libraries(bitserve_rpc_coordinator PUBLIC bitserve_engine_loader bitserve_text
                      bitserve_scheduler bitserve_metrics bitserve_options)

bitserve_add_test(coordinator_test
  SRCS coordinator_test.cc
  DEPS bitserve_rpc_coordinator bitserve_generation
  LABELS unit)
