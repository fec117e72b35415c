#include "bench/serve_driver.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>

#include "absl/strings/str_cat.h"

namespace bitserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

// After the timeout, how long cancelled requests get to deliver their final chunk before the
// driver stops waiting for them (the backend promises one; this bounds a broken promise).
constexpr std::chrono::seconds kCancelGrace{30};

// One phase (warm-up or the measured run). Shared with the chunk callbacks, so that a callback
// arriving after the driver gave up on a request still writes into live memory. Everything below
// `mu` is guarded by it; callbacks take the clock before the lock so that waiting for it does not
// move a timestamp.
struct Phase {
  Clock::time_point t0;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<RequestRecord> records;
  std::vector<std::optional<uint64_t>> ids;  // backend ids of the requests submitted
  std::vector<bool> done;
  std::vector<bool> cancelled_at_timeout;
  int in_flight = 0;
  int finished = 0;
  double last_finish = 0;
  bool abandoned = false;  // the driver returned; late callbacks change nothing

  double Since(Clock::time_point t) const { return std::chrono::duration<double>(t - t0).count(); }

  // Under mu.
  void MarkDone(int i, double now) {
    done[i] = true;
    ++finished;
    last_finish = std::max(last_finish, now);
    cv.notify_all();
  }

  void OnChunk(int i, rpc::GenerationChunk chunk) {
    const double now = Since(Clock::now());
    std::lock_guard<std::mutex> lock(mu);
    if (abandoned || done[i]) return;
    RequestRecord& r = records[i];
    if (!chunk.token_ids.empty()) {
      r.token_chunk_times.push_back(now);
      r.token_chunk_sizes.push_back(static_cast<int>(chunk.token_ids.size()));
    }
    if (!chunk.final) return;
    r.finish_reason = chunk.finish_reason;
    if (chunk.usage.prompt_tokens > 0) r.prompt_tokens = chunk.usage.prompt_tokens;
    r.output_tokens = chunk.usage.completion_tokens;
    const bool normal =
        r.finish_reason == "length" || r.finish_reason == "eos" || r.finish_reason == "stop";
    if (normal && !r.token_chunk_times.empty()) {
      r.success = true;
    } else if (cancelled_at_timeout[i]) {
      r.status = absl::DeadlineExceededError("cancelled when the benchmark timed out");
    } else if (!chunk.status.ok()) {
      r.status = chunk.status;
    } else if (r.finish_reason == "cancelled") {
      r.status = absl::CancelledError("cancelled by the server");
    } else {
      r.status = absl::InternalError(
          absl::StrCat("finished (\"", r.finish_reason, "\") without any token"));
    }
    --in_flight;
    MarkDone(i, now);
  }
};

// Prints "k/n" at every tenth of the requests finished. Under the phase's lock.
class Progress {
 public:
  Progress(std::ostream* out, std::string label, int total)
      : out_(out), label_(std::move(label)), total_(total), step_(std::max(1, total / 10)) {}
  void Update(const Phase& phase) {
    if (out_ == nullptr || phase.finished < next_) return;
    int failed = 0;
    for (size_t i = 0; i < phase.records.size(); ++i) {
      failed += phase.done[i] && !phase.records[i].success;
    }
    *out_ << "bitserve bench-serve: " << label_ << " " << phase.finished << "/" << total_
          << " done (" << failed << " failed), " << phase.Since(Clock::now()) << " s" << std::endl;
    next_ = phase.finished >= total_ ? total_ + 1
                                     : std::min(total_, (phase.finished / step_ + 1) * step_);
  }

 private:
  std::ostream* out_;
  std::string label_;
  int total_, step_;
  int next_ = step_;
};

std::shared_ptr<Phase> RunPhase(rpc::GenerationBackend& backend,
                                const std::vector<BenchRequest>& requests,
                                const std::vector<double>& arrivals, const DriverOptions& options,
                                const std::string& label) {
  const int n = static_cast<int>(requests.size());
  auto phase = std::make_shared<Phase>();
  phase->records.resize(n);
  phase->ids.resize(n);
  phase->done.assign(n, false);
  phase->cancelled_at_timeout.assign(n, false);
  Progress progress(options.progress, label, n);
  phase->t0 = Clock::now();
  const Clock::time_point deadline =
      options.timeout_s > 0 ? phase->t0 + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(options.timeout_s))
                            : Clock::time_point::max();
  auto timed_out = [&] { return Clock::now() >= deadline; };

  std::unique_lock<std::mutex> lock(phase->mu);
  int next = 0;
  for (; next < n; ++next) {
    RequestRecord& r = phase->records[next];
    r.index = next;
    r.arrival_time = arrivals[next];
    r.prompt_tokens = requests[next].prompt_len;
    r.expected_output_tokens = requests[next].expected_output_len;
    const Clock::time_point due = phase->t0 + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(arrivals[next]));
    while (Clock::now() < std::min(due, deadline)) {
      phase->cv.wait_until(lock, std::min(due, deadline));
      progress.Update(*phase);
    }
    while (options.max_concurrency > 0 && phase->in_flight >= options.max_concurrency &&
           !timed_out()) {
      phase->cv.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::seconds(1)));
      progress.Update(*phase);
    }
    if (timed_out()) break;
    ++phase->in_flight;
    r.sent = true;
    r.start_time = phase->Since(Clock::now());
    rpc::GenerationParams params = requests[next].params;
    params.request_id = absl::StrCat("bench-serve-", label, "-", next);
    // Submit runs unlocked: the backend may deliver chunks (taking the lock) before it returns.
    lock.unlock();
    absl::StatusOr<uint64_t> id = backend.Submit(
        requests[next].input, std::move(params),
        [phase, i = next](rpc::GenerationChunk chunk) { phase->OnChunk(i, std::move(chunk)); });
    const double now = phase->Since(Clock::now());
    lock.lock();
    if (id.ok()) {
      phase->ids[next] = *id;
    } else {
      r.status = id.status();
      r.finish_reason = "rejected";
      --phase->in_flight;
      phase->MarkDone(next, now);
    }
    progress.Update(*phase);
  }
  for (int i = next; i < n; ++i) {  // never sent: the timeout passed first
    phase->records[i].index = i;
    phase->records[i].arrival_time = arrivals[i];
    phase->records[i].expected_output_tokens = requests[i].expected_output_len;
    phase->records[i].status = absl::DeadlineExceededError(
        absl::StrCat("not sent: the benchmark timed out after ", options.timeout_s, " s"));
    phase->MarkDone(i, phase->Since(Clock::now()));
  }
  while (phase->finished < n && !timed_out()) {
    phase->cv.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::seconds(1)));
    progress.Update(*phase);
  }
  if (phase->finished < n) {
    std::vector<uint64_t> to_cancel;
    for (int i = 0; i < n; ++i) {
      if (!phase->done[i] && phase->ids[i]) {
        phase->cancelled_at_timeout[i] = true;
        to_cancel.push_back(*phase->ids[i]);
      }
    }
    lock.unlock();
    for (uint64_t id : to_cancel)
      backend.Cancel(id, absl::CancelledError("the benchmark timed out"));
    lock.lock();
    phase->cv.wait_until(lock, Clock::now() + kCancelGrace, [&] { return phase->finished >= n; });
    for (int i = 0; i < n; ++i) {
      if (phase->done[i]) continue;
      phase->records[i].status =
          absl::DeadlineExceededError("no final chunk after cancelling at the timeout");
      phase->MarkDone(i, phase->Since(Clock::now()));
    }
  }
  progress.Update(*phase);
  phase->abandoned = true;
  return phase;
}

}  // namespace

absl::StatusOr<DriverResult> RunServeBenchmark(rpc::GenerationBackend& backend,
                                               const std::vector<BenchRequest>& requests,
                                               const DriverOptions& options) {
  if (requests.empty()) return absl::InvalidArgumentError("the workload has no requests");
  if (options.max_concurrency < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-concurrency must be >= 0, got ", options.max_concurrency));
  }
  if (options.num_warmups < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--warmup must be >= 0, got ", options.num_warmups));
  }
  if (!(options.timeout_s >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--timeout must be >= 0, got ", options.timeout_s));
  }
  absl::StatusOr<std::vector<double>> arrivals = ArrivalTimes(
      static_cast<int>(requests.size()), options.request_rate, options.burstiness, options.seed);
  if (!arrivals.ok()) return arrivals.status();

  DriverResult result;
  if (options.num_warmups > 0) {
    const std::vector<BenchRequest> warmup(options.num_warmups, requests.front());
    std::shared_ptr<Phase> phase =
        RunPhase(backend, warmup, std::vector<double>(warmup.size(), 0.0), options, "warmup");
    std::lock_guard<std::mutex> lock(phase->mu);
    for (const RequestRecord& r : phase->records) result.warmup_failed += !r.success;
  }
  std::shared_ptr<Phase> phase = RunPhase(backend, requests, *arrivals, options, "run");
  std::lock_guard<std::mutex> lock(phase->mu);
  result.records = phase->records;
  result.duration_s = phase->last_finish;
  return result;
}

}  // namespace bitserve::bench
