// BITSERVE_CHECK: for broken invariants only (bugs), never for bad input. Aborts with context:
//   BITSERVE_CHECK(n % 4 == 0) << "n=" << n;
#pragma once

#include <cstdlib>
#include <iostream>
#include <sstream>

namespace bitserve {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition) {
    stream_ << file << ":" << line << ": BITSERVE_CHECK(" << condition << ") failed: ";
  }
  [[noreturn]] ~CheckFailure() {
    std::cerr << stream_.str() << std::endl;
    std::abort();
  }
  template <typename T>
  CheckFailure& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  std::ostringstream stream_;
};

}  // namespace bitserve

#define BITSERVE_CHECK(condition) \
  if (condition) {                \
  } else                          \
    ::bitserve::CheckFailure(__FILE__, __LINE__, #condition)
