#include "runtime/transport/transport_expert_exchange.h"

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/bf16.h"
#include "base/status_macros.h"

namespace bitserve {
namespace {

// One dispatch message: n rows of [hidden] int8, then n fp32 scales, then n int32 expert ids.
int64_t RowBytes(int64_t hidden) { return hidden + 4 + 4; }

std::vector<uint8_t> PackRows(const ExpertRows& rows, int64_t hidden) {
  const int64_t n = rows.size();
  std::vector<uint8_t> bytes(n * RowBytes(hidden));
  if (n == 0) return bytes;
  uint8_t* p = bytes.data();
  std::memcpy(p, rows.values.data(), n * hidden);
  std::memcpy(p + n * hidden, rows.scales.data(), n * 4);
  std::memcpy(p + n * (hidden + 4), rows.experts.data(), n * 4);
  return bytes;
}

void UnpackRows(const std::vector<uint8_t>& bytes, int64_t n, int64_t hidden, ExpertRows* rows) {
  rows->values.resize(n * hidden);
  rows->scales.resize(n);
  rows->experts.resize(n);
  if (n == 0) return;
  const uint8_t* p = bytes.data();
  std::memcpy(rows->values.data(), p, n * hidden);
  std::memcpy(rows->scales.data(), p + n * hidden, n * 4);
  std::memcpy(rows->experts.data(), p + n * (hidden + 4), n * 4);
}

int64_t ElementBytes(ExpertResultDtype dtype) { return dtype == ExpertResultDtype::kF32 ? 4 : 2; }

std::vector<uint8_t> PackResults(const std::vector<float>& rows, ExpertResultDtype dtype) {
  std::vector<uint8_t> bytes(rows.size() * ElementBytes(dtype));
  if (dtype == ExpertResultDtype::kF32) {
    if (!rows.empty()) std::memcpy(bytes.data(), rows.data(), bytes.size());
  } else {
    auto* out = reinterpret_cast<uint16_t*>(bytes.data());
    for (size_t i = 0; i < rows.size(); ++i) out[i] = FloatToBf16(rows[i]);
  }
  return bytes;
}

void UnpackResults(const std::vector<uint8_t>& bytes, ExpertResultDtype dtype,
                   std::vector<float>* rows) {
  rows->resize(bytes.size() / ElementBytes(dtype));
  if (dtype == ExpertResultDtype::kF32) {
    if (!bytes.empty()) std::memcpy(rows->data(), bytes.data(), bytes.size());
  } else {
    const auto* in = reinterpret_cast<const uint16_t*>(bytes.data());
    for (size_t i = 0; i < rows->size(); ++i) (*rows)[i] = Bf16ToFloat(in[i]);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<TransportExpertExchange>> TransportExpertExchange::Create(
    std::shared_ptr<Transport> transport, std::vector<int> group, int rank,
    ExpertResultDtype result_dtype) {
  if (transport == nullptr) return absl::InvalidArgumentError("expert exchange: no transport");
  if (rank < 0 || rank >= static_cast<int>(group.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert exchange: rank ", rank, " of a group of ", group.size()));
  }
  for (int t : group) {
    if (t < 0 || t >= transport->world_size()) {
      return absl::InvalidArgumentError(absl::StrCat("expert exchange: transport rank ", t,
                                                     " is not one of ", transport->world_size()));
    }
  }
  if (group[rank] != transport->rank()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert exchange: EP rank ", rank, " is transport rank ", group[rank],
                     ", but this transport is rank ", transport->rank()));
  }
  return std::unique_ptr<TransportExpertExchange>(
      new TransportExpertExchange(std::move(transport), std::move(group), rank, result_dtype));
}

template <typename Send, typename Recv>
absl::Status TransportExpertExchange::AllToAll(const char* what, Send send, Recv recv) {
  RETURN_IF_ERROR(broken_);
  const int n = group_size();
  absl::Status sent;
  std::thread sender([&] {
    for (int k = 1; k < n && sent.ok(); ++k) {
      const int p = (rank_ + k) % n;
      if (absl::Status s = send(p); !s.ok()) {
        sent = absl::Status(s.code(), absl::StrCat(what, " to EP rank ", p, ": ", s.message()));
        // The receives below would wait for a group that is out of step.
        transport_->Abort();
      }
    }
  });
  absl::Status received;
  for (int k = 1; k < n && received.ok(); ++k) {
    const int p = (rank_ + n - k) % n;
    if (absl::Status s = recv(p); !s.ok()) {
      received = absl::Status(s.code(), absl::StrCat(what, " from EP rank ", p, ": ", s.message()));
    }
  }
  if (!received.ok()) transport_->Abort();  // wakes a sender blocked on a full socket
  sender.join();
  broken_ = !received.ok() ? received : sent;
  return broken_;
}

absl::Status TransportExpertExchange::Dispatch(int64_t hidden, std::span<const ExpertRows> to_peers,
                                               std::vector<ExpertRows>* from_peers) {
  const int n = group_size();
  if (static_cast<int>(to_peers.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert dispatch: rows for ", to_peers.size(), " ranks in a group of ", n));
  }
  from_peers->resize(n);
  (*from_peers)[rank_] = to_peers[rank_];
  for (int p = 0; p < n; ++p) sent_[p] = to_peers[p].size();
  received_[rank_] = to_peers[rank_].size();
  auto send = [&](int p) -> absl::Status {
    const int64_t count = to_peers[p].size();
    RETURN_IF_ERROR(transport_->Send(group_[p], &count, sizeof(count)));
    const std::vector<uint8_t> bytes = PackRows(to_peers[p], hidden);
    return transport_->Send(group_[p], bytes.data(), static_cast<int64_t>(bytes.size()));
  };
  std::vector<uint8_t> bytes;
  auto recv = [&](int p) -> absl::Status {
    int64_t count = 0;
    RETURN_IF_ERROR(transport_->Recv(group_[p], &count, sizeof(count)));
    if (count < 0) return absl::InternalError(absl::StrCat("a row count of ", count));
    bytes.resize(count * RowBytes(hidden));
    RETURN_IF_ERROR(transport_->Recv(group_[p], bytes.data(), static_cast<int64_t>(bytes.size())));
    UnpackRows(bytes, count, hidden, &(*from_peers)[p]);
    received_[p] = count;
    return absl::OkStatus();
  };
  return AllToAll("expert dispatch", send, recv);
}

absl::Status TransportExpertExchange::Combine(int64_t hidden,
                                              std::span<const std::vector<float>> results,
                                              std::vector<std::vector<float>>* back) {
  const int n = group_size();
  if (static_cast<int>(results.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert combine: results for ", results.size(), " ranks in a group of ", n));
  }
  for (int p = 0; p < n; ++p) {
    if (static_cast<int64_t>(results[p].size()) != received_[p] * hidden) {
      return absl::InvalidArgumentError(absl::StrCat("expert combine: ", results[p].size(),
                                                     " values for EP rank ", p, ", which sent ",
                                                     received_[p], " rows of ", hidden));
    }
  }
  back->resize(n);
  (*back)[rank_] = results[rank_];
  if (result_dtype_ == ExpertResultDtype::kBf16) {
    // The local rows take the same rounding as those that cross, so results do not depend on
    // where an expert lives.
    for (float& v : (*back)[rank_]) v = Bf16ToFloat(FloatToBf16(v));
  }
  auto send = [&](int p) -> absl::Status {
    const std::vector<uint8_t> bytes = PackResults(results[p], result_dtype_);
    return transport_->Send(group_[p], bytes.data(), static_cast<int64_t>(bytes.size()));
  };
  std::vector<uint8_t> bytes;
  auto recv = [&](int p) -> absl::Status {
    bytes.resize(sent_[p] * hidden * ElementBytes(result_dtype_));
    RETURN_IF_ERROR(transport_->Recv(group_[p], bytes.data(), static_cast<int64_t>(bytes.size())));
    UnpackResults(bytes, result_dtype_, &(*back)[p]);
    return absl::OkStatus();
  };
  return AllToAll("expert combine", send, recv);
}

}  // namespace bitserve
