#include "kernels/kv_cache_format.h"

#include "absl/strings/str_cat.h"

namespace bitserve {

const char* KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF32:
      return "f32";
    case KvDtype::kBf16:
      return "bf16";
    case KvDtype::kInt8:
      return "int8";
    case KvDtype::kInt4:
      return "int4";
  }
  return "invalid";
}

absl::StatusOr<KvDtype> ParseKvDtype(absl::string_view name) {
  for (KvDtype d : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8, KvDtype::kInt4}) {
    if (name == KvDtypeName(d)) return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("KV cache dtype \"", name, "\" is not one of f32, bf16, int8, int4"));
}

const char* KvRotationName(KvRotation rotation) {
  switch (rotation) {
    case KvRotation::kNone:
      return "none";
    case KvRotation::kHadamard:
      return "hadamard";
  }
  return "invalid";
}

absl::StatusOr<KvRotation> ParseKvRotation(absl::string_view name) {
  for (KvRotation r : {KvRotation::kNone, KvRotation::kHadamard}) {
    if (name == KvRotationName(r)) return r;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("KV rotation \"", name, "\" is not one of none, hadamard"));
}

KvRotation DefaultKvRotation(KvDtype dtype) {
  return dtype == KvDtype::kInt8 || dtype == KvDtype::kInt4 ? KvRotation::kHadamard
                                                            : KvRotation::kNone;
}

}  // namespace bitserve
