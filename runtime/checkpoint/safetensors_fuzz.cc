// libFuzzer target for the safetensors header parser: bad input must give an error, never a crash,
// and whatever it accepts must satisfy the guarantees that readers build on.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "runtime/checkpoint/safetensors_header.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "safetensors_fuzz: invariant violated: %s\n", what);
  std::abort();
}

void CheckInvariants(const bitserve::SafetensorsHeader& header, std::span<const uint8_t> file) {
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file[i];
  if (header.data_offset != 8 + header_len || header.data_offset > file.size()) {
    Fail("data_offset");
  }
  const uint64_t data_size = file.size() - header.data_offset;
  uint64_t covered = 0;
  for (const bitserve::TensorInfo& t : header.tensors) {
    if (t.name.empty()) Fail("empty name");
    if (t.begin > t.end || t.end > data_size) Fail("tensor outside the data section");
    if (t.begin != covered) Fail("tensors unsorted, overlapping or with a hole");
    covered = t.end;
    if (t.shape.size() > 8) Fail("rank");
    if (static_cast<uint64_t>(t.num_elements()) * bitserve::DTypeSize(t.dtype) != t.num_bytes()) {
      Fail("byte size");
    }
    if (header.Find(t.name) != &t) Fail("duplicate name");
  }
  if (covered != data_size) Fail("data section not covered");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> file(data, size);
  const auto header = bitserve::ParseSafetensorsHeader(file, size, "fuzz");
  if (header.ok()) CheckInvariants(*header, file);

  // A prefix holding the whole header parses the same; a shorter one is an error, not a crash.
  const auto partial = bitserve::ParseSafetensorsHeader(file.first(size / 2), size, "fuzz");
  if (partial.ok() && (!header.ok() || partial->tensors.size() != header->tensors.size())) {
    Fail("prefix and whole file disagree");
  }
  if (header.ok() && !partial.ok() && header->data_offset <= size / 2) {
    Fail("prefix holding the whole header rejected");
  }
  return 0;
}
