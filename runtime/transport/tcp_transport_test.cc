// The TCP transport between threads of one process (as between worker processes): bootstrap from
// listener addresses, ordered messages both ways, and the errors a pipeline meets: a size
// mismatch, a peer that goes away, a peer that never connects.
#include "runtime/transport/tcp_transport.h"

#include <future>
#include <numeric>
#include <thread>

#include "gtest/gtest.h"

namespace bitserve {
namespace {

using std::chrono::milliseconds;

std::vector<std::unique_ptr<TcpTransport>> ConnectAll(int world) {
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
                                   milliseconds(2000));
    }));
  }
  std::vector<std::unique_ptr<TcpTransport>> out;
  for (auto& p : pending) {
    auto t = p.get();
    EXPECT_TRUE(t.ok()) << t.status();
    out.push_back(t.ok() ? *std::move(t) : nullptr);
  }
  return out;
}

TEST(TcpTransportTest, ThreeRanksExchangeOrderedMessages) {
  auto ranks = ConnectAll(3);
  ASSERT_EQ(ranks.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    ASSERT_NE(ranks[r], nullptr);
    EXPECT_EQ(ranks[r]->rank(), r);
    EXPECT_EQ(ranks[r]->world_size(), 3);
  }
  // A pipeline's pattern: 0 -> 1 -> 2, several messages in flight, large and small.
  std::vector<uint8_t> big(3 << 20);
  std::iota(big.begin(), big.end(), 0);
  auto sender = std::async(std::launch::async, [&] {
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(ranks[0]->Send(1, big.data(), big.size() - i).ok());
    }
  });
  auto relay = std::async(std::launch::async, [&] {
    std::vector<uint8_t> got(big.size());
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(ranks[1]->Recv(0, got.data(), big.size() - i).ok());
      EXPECT_TRUE(std::equal(got.begin(), got.end() - i, big.begin()));
      const int32_t tag = i;
      EXPECT_TRUE(ranks[1]->Send(2, &tag, 4).ok());
    }
  });
  for (int i = 0; i < 4; ++i) {
    int32_t tag = -1;
    ASSERT_TRUE(ranks[2]->Recv(1, &tag, 4).ok());
    EXPECT_EQ(tag, i);
  }
  sender.get();
  relay.get();
  // Backwards too (the last stage's answers would go this way).
  const int64_t word = 42;
  ASSERT_TRUE(ranks[2]->Send(0, &word, 8).ok());
  int64_t back = 0;
  ASSERT_TRUE(ranks[0]->Recv(2, &back, 8).ok());
  EXPECT_EQ(back, 42);
}

TEST(TcpTransportTest, SizeMismatchPeerGoneAndBadPeerAreErrors) {
  auto ranks = ConnectAll(2);
  ASSERT_TRUE(ranks[0] && ranks[1]);
  const int32_t v = 7;
  ASSERT_TRUE(ranks[0]->Send(1, &v, 4).ok());
  int64_t wrong = 0;
  absl::Status s = ranks[1]->Recv(0, &wrong, 8);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_NE(s.message().find("4 bytes, expected 8"), std::string::npos) << s;
  EXPECT_EQ(ranks[0]->Send(0, &v, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ranks[0]->Send(5, &v, 4).code(), absl::StatusCode::kInvalidArgument);
  // Rank 0 goes away: rank 1 learns at its next receive, at once.
  ranks[0].reset();
  int32_t x = 0;
  s = ranks[1]->Recv(0, &x, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST(TcpTransportTest, SilentPeerTimesOut) {
  auto ranks = ConnectAll(2);
  ASSERT_TRUE(ranks[0] && ranks[1]);
  int32_t x = 0;
  absl::Status s = ranks[1]->Recv(0, &x, 4);  // rank 0 sends nothing: 2 s receive timeout
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
}

TEST(TcpTransportTest, AbortWakesABlockedReceive) {
  auto ranks = ConnectAll(2);
  ASSERT_TRUE(ranks[0] && ranks[1]);
  auto blocked = std::async(std::launch::async, [&] {
    int32_t x = 0;
    return ranks[1]->Recv(0, &x, 4);
  });
  std::this_thread::sleep_for(milliseconds(100));
  ranks[1]->Abort();
  ASSERT_EQ(blocked.wait_for(std::chrono::seconds(1)), std::future_status::ready);
  EXPECT_EQ(blocked.get().code(), absl::StatusCode::kUnavailable);
}

TEST(TcpTransportTest, PeerThatNeverConnects) {
  auto l0 = TcpListener::Listen("127.0.0.1");
  auto l1 = TcpListener::Listen("127.0.0.1");
  ASSERT_TRUE(l0.ok() && l1.ok());
  const std::vector<std::string> addresses = {(*l0)->address(), (*l1)->address()};
  // Rank 0 waits for rank 1, which never dials.
  auto t = TcpTransport::Connect(*std::move(l0), 0, addresses, milliseconds(300));
  EXPECT_EQ(t.status().code(), absl::StatusCode::kDeadlineExceeded) << t.status();
  EXPECT_FALSE(TcpListener::Listen("no.such.host.invalid").ok());
}

}  // namespace
}  // namespace bitserve
