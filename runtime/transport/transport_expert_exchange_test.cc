// The expert exchange over the TCP transport between threads of one process (as between EP
// worker processes): rows reach their owners with their scales and expert ids, results come back
// in the order sent (fp32 exactly, bf16 rounded), uneven and empty loads, payloads larger than a
// socket buffer in both directions at once, a group inside a larger transport (PP x EP), and a
// peer that goes away.
#include "runtime/transport/transport_expert_exchange.h"

#include <cmath>
#include <future>
#include <thread>

#include "base/bf16.h"
#include "gtest/gtest.h"
#include "runtime/transport/tcp_transport.h"

namespace bitserve {
namespace {

using std::chrono::milliseconds;

std::vector<std::shared_ptr<Transport>> ConnectAll(int world) {
  std::vector<std::unique_ptr<TcpListener>> listeners;
  std::vector<std::string> addresses;
  for (int r = 0; r < world; ++r) {
    auto l = TcpListener::Listen("127.0.0.1");
    EXPECT_TRUE(l.ok()) << l.status();
    addresses.push_back((*l)->address());
    listeners.push_back(*std::move(l));
  }
  std::vector<std::future<absl::StatusOr<std::unique_ptr<TcpTransport>>>> pending;
  for (int r = 0; r < world; ++r) {
    pending.push_back(std::async(std::launch::async, [&, r, l = std::move(listeners[r])]() mutable {
      return TcpTransport::Connect(std::move(l), r, addresses, milliseconds(5000),
                                   milliseconds(3000));
    }));
  }
  std::vector<std::shared_ptr<Transport>> out;
  for (auto& p : pending) {
    auto t = p.get();
    EXPECT_TRUE(t.ok()) << t.status();
    out.push_back(t.ok() ? std::shared_ptr<Transport>(*std::move(t)) : nullptr);
  }
  return out;
}

// Rank `from`'s rows for rank `to`: a count that differs per pair (zero for some), values that
// name their origin, destination and index.
int64_t Count(int from, int to, int64_t scale) { return ((from * 3 + to * 5) % 4) * scale; }
int8_t Value(int from, int to, int64_t i, int64_t c) {
  return static_cast<int8_t>((from * 31 + to * 17 + i + c) % 251 - 125);
}
float Scale(int from, int to, int64_t i) { return 0.5f + from + to * 0.25f + i * 1e-3f; }
// The owner's answer to a row: not representable in bf16, so the bf16 path shows its rounding.
float Answer(int owner, float scale, int8_t value) { return scale * 1.001f + value + owner; }

// One rank's exchange: counts, rows grouped by destination, checks of what arrives, one answer
// per row received, and the answers to its own rows checked.
void RunRank(ExpertExchange& x, int64_t hidden, int64_t scale) {
  const int n = x.group_size(), me = x.rank();
  const bool bf16 = x.result_dtype() == ExpertResultDtype::kBf16;
  std::vector<int64_t> send_counts(n), recv_counts(n, -1);
  std::vector<int8_t> values;
  std::vector<float> scales;
  std::vector<int32_t> experts;
  for (int p = 0; p < n; ++p) {
    send_counts[p] = Count(me, p, scale);
    for (int64_t i = 0; i < send_counts[p]; ++i) {
      for (int64_t c = 0; c < hidden; ++c) values.push_back(Value(me, p, i, c));
      scales.push_back(Scale(me, p, i));
      experts.push_back(static_cast<int32_t>(p * 10 + i % 10));
    }
  }
  ASSERT_TRUE(x.ExchangeCounts(send_counts, recv_counts).ok());
  int64_t received = 0;
  for (int p = 0; p < n; ++p) {
    ASSERT_EQ(recv_counts[p], Count(p, me, scale)) << "count from rank " << p;
    received += recv_counts[p];
  }
  std::vector<int8_t> in_values(received * hidden);
  std::vector<float> in_scales(received);
  std::vector<int32_t> in_experts(received);
  ASSERT_TRUE(x.Dispatch(hidden, values.data(), scales.data(), experts.data(), in_values.data(),
                         in_scales.data(), in_experts.data())
                  .ok());
  std::vector<float> results;
  std::vector<uint16_t> results_bf16;
  int64_t row = 0;
  for (int p = 0; p < n; ++p) {
    for (int64_t i = 0; i < recv_counts[p]; ++i, ++row) {
      ASSERT_EQ(in_scales[row], Scale(p, me, i)) << "row " << i << " from rank " << p;
      ASSERT_EQ(in_experts[row], me * 10 + i % 10);
      for (int64_t c = 0; c < hidden; ++c) {
        ASSERT_EQ(in_values[row * hidden + c], Value(p, me, i, c));
        const float a = Answer(me, in_scales[row], in_values[row * hidden + c]);
        results.push_back(a);
        results_bf16.push_back(FloatToBf16(a));
      }
    }
  }
  const int64_t sent = static_cast<int64_t>(scales.size());
  std::vector<float> back(sent * hidden, std::nanf(""));
  std::vector<uint16_t> back_bf16(sent * hidden, 0xFFFF);
  ASSERT_TRUE(
      x.Combine(hidden,
                bf16 ? static_cast<const void*>(results_bf16.data())
                     : static_cast<const void*>(results.data()),
                bf16 ? static_cast<void*>(back_bf16.data()) : static_cast<void*>(back.data()))
          .ok());
  row = 0;
  for (int p = 0; p < n; ++p) {
    for (int64_t i = 0; i < send_counts[p]; ++i, ++row) {
      for (int64_t c = 0; c < hidden; ++c) {
        const float want = Answer(p, scales[row], values[row * hidden + c]);
        if (bf16) {
          ASSERT_EQ(back_bf16[row * hidden + c], FloatToBf16(want)) << "rank " << p << " row " << i;
        } else {
          ASSERT_EQ(back[row * hidden + c], want) << "result from rank " << p << " row " << i;
        }
      }
    }
  }
}

void RunGroup(const std::vector<std::shared_ptr<Transport>>& transports, std::vector<int> group,
              ExpertResultDtype dtype, int64_t hidden, int64_t scale, int rounds) {
  std::vector<std::thread> threads;
  for (int r = 0; r < static_cast<int>(group.size()); ++r) {
    threads.emplace_back([&, r] {
      auto x = TransportExpertExchange::Create(transports[group[r]], group, r, dtype);
      ASSERT_TRUE(x.ok()) << x.status();
      EXPECT_EQ((*x)->TakeSeconds(), 0.0);
      for (int i = 0; i < rounds; ++i) RunRank(**x, hidden, scale);
      // The calls' time was counted (the worker reports it per step), then taken.
      EXPECT_GT((*x)->TakeSeconds(), 0.0);
      EXPECT_EQ((*x)->TakeSeconds(), 0.0);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(TransportExpertExchangeTest, ThreeRanksUnevenLoadsFp32AndBf16) {
  auto transports = ConnectAll(3);
  RunGroup(transports, {0, 1, 2}, ExpertResultDtype::kF32, 48, 1, 3);
  RunGroup(transports, {0, 1, 2}, ExpertResultDtype::kBf16, 48, 1, 2);
}

TEST(TransportExpertExchangeTest, PayloadsBeyondSocketBuffersDoNotDeadlock) {
  auto transports = ConnectAll(2);
  // Up to 3 * 2000 rows of 2048 values each way (~12 MB), sent by both ranks at once.
  RunGroup(transports, {0, 1}, ExpertResultDtype::kF32, 2048, 2000, 1);
}

TEST(TransportExpertExchangeTest, GroupsInsideALargerTransport) {
  // PP2 x EP2: stage s holds transport ranks {2s, 2s + 1}; each stage's group exchanges alone.
  auto transports = ConnectAll(4);
  std::thread stage0([&] { RunGroup(transports, {0, 1}, ExpertResultDtype::kF32, 32, 1, 2); });
  RunGroup(transports, {2, 3}, ExpertResultDtype::kF32, 32, 1, 2);
  stage0.join();
  EXPECT_FALSE(TransportExpertExchange::Create(transports[1], {0, 1}, 0).ok())
      << "EP rank 0 is transport rank 0, not 1";
  EXPECT_FALSE(TransportExpertExchange::Create(transports[0], {0, 7}, 0).ok());
}

TEST(TransportExpertExchangeTest, APeerThatIsGoneBreaksTheExchange) {
  auto transports = ConnectAll(2);
  auto x = TransportExpertExchange::Create(transports[0], {0, 1}, 0);
  ASSERT_TRUE(x.ok());
  transports[1].reset();  // rank 1's process is gone: its sockets close
  const std::vector<int64_t> send = {0, 3};
  std::vector<int64_t> recv(2);
  absl::Status s = (*x)->ExchangeCounts(send, recv);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("EP rank 1"), std::string::npos) << s;
  // Out of step from now on: later calls fail at once with the same error.
  EXPECT_EQ((*x)->ExchangeCounts(send, recv), s);
  EXPECT_EQ((*x)->Combine(16, nullptr, nullptr), s);
}

}  // namespace
}  // namespace bitserve
