// LoadEngine: the one place that knows every backend. Its own target (bitserve_engine_loader),
// because the CUDA engine library depends on bitserve_runtime.
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/device_name.h"
#include "runtime/engine/cpu_engine.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/pipeline_engine.h"
#if BITSERVE_WITH_CUDA_ENGINE
#include "runtime/engine/cuda_engine.h"
#endif

namespace bitserve {

absl::StatusOr<std::unique_ptr<Engine>> LoadEngine(const std::filesystem::path& model_dir,
                                                   const EngineOptions& options) {
  if (options.local_pipeline_stages > 1) {
    EngineOptions stage_options = options;
    stage_options.local_pipeline_stages = 1;
    auto engine = PipelineEngine::Load(model_dir, stage_options, options.local_pipeline_stages);
    if (!engine.ok()) return engine.status();
    return std::unique_ptr<Engine>(std::move(*engine));
  }
  if (options.device == "cpu") {
    auto engine = CpuEngine::Load(model_dir, options);
    if (!engine.ok()) return engine.status();
    return std::unique_ptr<Engine>(std::move(*engine));
  }
  if (IsCudaDevice(options.device)) {
#if BITSERVE_WITH_CUDA_ENGINE
    return LoadCudaEngine(model_dir, options);
#else
    return absl::UnimplementedError(
        absl::StrCat("device \"", options.device, "\": this bitserve was built without CUDA"));
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device \"", options.device, "\" is not one of cpu, cuda, cuda:N"));
}

}  // namespace bitserve
