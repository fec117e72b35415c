# The CUDA engine (issue 4): included from runtime/CMakeLists.txt. Only with the CUDA toolkit;
# engine.cc's LoadEngine reaches it through LoadCudaEngine (runtime/cuda_engine.h) when
# BITSERVE_WITH_CUDA is 1.
if(BITSERVE_WITH_CUDA)
  add_library(bitserve_cuda_engine
    ${CMAKE_CURRENT_LIST_DIR}/cuda_model.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda_engine.cu)
  target_link_libraries(bitserve_cuda_engine PUBLIC bitserve_runtime bitserve_cuda_kernels
                        bitserve_options)

  bitserve_add_test(cuda_engine_test
    SRCS ${PROJECT_SOURCE_DIR}/tests/cuda_engine_test.cc
    DEPS bitserve_cuda_engine bitserve_engine_loader bitserve_runtime
    LABELS gpu)
endif()
