// Tests of expert parallelism (CPU and CUDA engines): a TCP expert-exchange group of `ranks`
// ranks on loopback in this process, EP rank r on transport rank r.
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/transport/tcp_transport.h"
#include "runtime/transport/transport_expert_exchange.h"

namespace bitserve {

inline std::vector<std::shared_ptr<ExpertExchange>> TcpExpertGroup(
    int ranks, ExpertResultDtype dtype = ExpertResultDtype::kF32) {
  std::vector<std::unique_ptr<TcpListener>> listeners;
  std::vector<std::string> addresses;
  for (int r = 0; r < ranks; ++r) {
    auto l = TcpListener::Listen("127.0.0.1");
    EXPECT_TRUE(l.ok()) << l.status();
    addresses.push_back((*l)->address());
    listeners.push_back(*std::move(l));
  }
  std::vector<std::future<absl::StatusOr<std::unique_ptr<TcpTransport>>>> pending;
  for (int r = 0; r < ranks; ++r) {
    pending.push_back(std::async(std::launch::async, [&, r, l = std::move(listeners[r])]() mutable {
      return TcpTransport::Connect(std::move(l), r, addresses, std::chrono::milliseconds(5000),
                                   std::chrono::milliseconds(20000));
    }));
  }
  std::vector<int> group(ranks);
  for (int r = 0; r < ranks; ++r) group[r] = r;
  std::vector<std::shared_ptr<ExpertExchange>> out;
  for (int r = 0; r < ranks; ++r) {
    auto t = pending[r].get();
    EXPECT_TRUE(t.ok()) << t.status();
    auto x =
        TransportExpertExchange::Create(std::shared_ptr<Transport>(*std::move(t)), group, r, dtype);
    EXPECT_TRUE(x.ok()) << x.status();
    out.push_back(*std::move(x));
  }
  return out;
}

}  // namespace bitserve
