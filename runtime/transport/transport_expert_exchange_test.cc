// The expert exchange over the TCP transport between threads of one process (as between EP
// worker processes): rows reach their owners with their scales and expert ids, results come back
// in the order sent (fp32 exactly, bf16 rounded), uneven and empty loads, payloads larger than a
// socket buffer in both directions at once, a group inside a larger transport (PP x EP), and a
// peer that goes away.
#include "runtime/transport/transport_expert_exchange.h"

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

// Rank `from`'s rows for rank `to`: a load that differs per pair (zero for some), values that
// name their origin, destination and index.
ExpertRows RowsFor(int from, int to, int64_t hidden, int64_t scale) {
  ExpertRows rows;
  const int64_t n = ((from * 3 + to * 5) % 4) * scale;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < hidden; ++c) {
      rows.values.push_back(static_cast<int8_t>((from * 31 + to * 17 + i + c) % 251 - 125));
    }
    rows.scales.push_back(0.5f + from + to * 0.25f + i * 1e-3f);
    rows.experts.push_back(static_cast<int32_t>(to * 10 + i % 10));
  }
  return rows;
}

// One rank's dispatch and combine: checks what arrives, answers each row with values derived
// from it, and checks the answers to its own rows.
void RunRank(ExpertExchange& x, int64_t hidden, int64_t scale) {
  const int n = x.group_size(), me = x.rank();
  std::vector<ExpertRows> out(n), in;
  for (int p = 0; p < n; ++p) out[p] = RowsFor(me, p, hidden, scale);
  ASSERT_TRUE(x.Dispatch(hidden, out, &in).ok());
  ASSERT_EQ(static_cast<int>(in.size()), n);
  std::vector<std::vector<float>> results(n), back;
  for (int p = 0; p < n; ++p) {
    const ExpertRows want = RowsFor(p, me, hidden, scale);
    ASSERT_EQ(in[p].values, want.values) << "rows from rank " << p;
    ASSERT_EQ(in[p].scales, want.scales);
    ASSERT_EQ(in[p].experts, want.experts);
    for (int64_t i = 0; i < in[p].size(); ++i) {
      for (int64_t c = 0; c < hidden; ++c) {
        // Not representable in bf16: shows the rounding of the bf16 path.
        results[p].push_back(in[p].scales[i] * 1.001f + in[p].values[i * hidden + c] + me);
      }
    }
  }
  ASSERT_TRUE(x.Combine(hidden, results, &back).ok());
  for (int p = 0; p < n; ++p) {
    ASSERT_EQ(static_cast<int64_t>(back[p].size()), out[p].size() * hidden);
    for (int64_t i = 0; i < out[p].size(); ++i) {
      for (int64_t c = 0; c < hidden; ++c) {
        float want = out[p].scales[i] * 1.001f + out[p].values[i * hidden + c] + p;
        if (x.result_dtype() == ExpertResultDtype::kBf16) want = Bf16ToFloat(FloatToBf16(want));
        ASSERT_EQ(back[p][i * hidden + c], want) << "result from rank " << p << " row " << i;
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
      for (int i = 0; i < rounds; ++i) RunRank(**x, hidden, scale);
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
  std::vector<ExpertRows> out(2), in;
  out[1] = RowsFor(0, 1, 16, 1);
  absl::Status s = (*x)->Dispatch(16, out, &in);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("EP rank 1"), std::string::npos) << s;
  // Out of step from now on: later calls fail at once with the same error.
  EXPECT_EQ((*x)->Dispatch(16, out, &in), s);
}

}  // namespace
}  // namespace bitserve
