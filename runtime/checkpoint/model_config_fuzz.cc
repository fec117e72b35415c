// libFuzzer target for config.json (runtime/checkpoint/model_config.h): any text gives an error
// naming what is wrong, or a configuration whose shapes the loaders can rely on, never a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/checkpoint/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = bitserve::ParseModelConfig(text, "fuzz/config.json");
  if (!config.ok()) {
    if (config.status().message().empty()) std::abort();
    return 0;
  }
  if (config->hidden_size <= 0 || config->num_hidden_layers <= 0 ||
      config->num_attention_heads <= 0 || config->vocab_size <= 0) {
    std::fprintf(stderr, "model_config_fuzz: accepted a configuration without its shapes\n");
    std::abort();
  }
  return 0;
}
