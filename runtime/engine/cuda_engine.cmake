# The CUDA engine (issue 4): included from runtime/engine/CMakeLists.txt. Only with the CUDA
# toolkit; LoadEngine (engine_loader.cc) reaches it through LoadCudaEngine (cuda_engine.h).
if(BITSERVE_WITH_CUDA)
  add_library(bitserve_cuda_engine
    ${CMAKE_CURRENT_LIST_DIR}/cuda_model.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda_engine.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda_expert_parallel.cu)
  target_link_libraries(bitserve_cuda_engine PUBLIC bitserve_engine bitserve_cuda_kernels
                        bitserve_options)

  bitserve_add_test(cuda_engine_test
    SRCS ${PROJECT_SOURCE_DIR}/tests/cuda_engine_test.cc
         ${PROJECT_SOURCE_DIR}/tests/cuda_trained_moe_test.cc
         ${PROJECT_SOURCE_DIR}/tests/cuda_expert_parallel_test.cc
    DEPS bitserve_cuda_engine bitserve_engine_loader bitserve_generation bitserve_text
         bitserve_transport bitserve_nccl_transport
    LABELS gpu)
endif()
