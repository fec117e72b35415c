#include "tools/batch_job.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/batch_records.h"

namespace bitserve::cli {

bool IsRetryable(const absl::Status& status) {
  return IsQueueFull(status) || status.code() == absl::StatusCode::kUnavailable;
}

std::string SummaryLine(const BatchSummary& s, const std::filesystem::path& output) {
  const BatchCounts& c = s.counts;
  std::string line = absl::StrCat("bitserve batch: ", c.total, " lines: ", c.completed, " done");
  if (c.skipped > 0) absl::StrAppend(&line, ", ", c.skipped, " already done earlier");
  absl::StrAppend(&line, ", ", c.failed, c.failed == 1 ? " error" : " errors");
  if (c.retry_later > 0)
    absl::StrAppend(&line, " (", c.retry_later, " retryable: run again to retry)");
  if (c.malformed > 0) {
    absl::StrAppend(&line, ", ", c.malformed,
                    c.malformed == 1 ? " malformed line" : " malformed lines");
  }
  if (c.duplicates > 0) absl::StrAppend(&line, ", ", c.duplicates, " duplicate ids not run");
  absl::StrAppend(&line, absl::StrFormat("; %d prompt + %d generated tokens in %.1f s (%.1f "
                                         "generated tokens/s)",
                                         c.prompt_tokens, c.generated_tokens, s.seconds,
                                         s.seconds > 0 ? c.generated_tokens / s.seconds : 0.0));
  if (s.retries > 0) absl::StrAppend(&line, "; ", s.retries, " submissions retried");
  absl::StrAppend(&line, " -> ", output.string());
  return line;
}

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Non-blank lines of a file with their 1-based line numbers ("\r\n" endings accepted).
class LineReader {
 public:
  absl::Status Open(const std::filesystem::path& path) {
    path_ = path;
    in_.open(path, std::ios::binary);
    if (!in_) {
      return absl::NotFoundError(
          absl::StrCat(path.string(), ": cannot read the input (", std::strerror(errno), ")"));
    }
    return absl::OkStatus();
  }
  bool Next(std::string* line, int64_t* number) {
    while (std::getline(in_, *line)) {
      ++number_;
      if (!line->empty() && line->back() == '\r') line->pop_back();
      if (line->find_first_not_of(" \t") == std::string::npos) continue;
      *number = number_;
      return true;
    }
    return false;
  }
  absl::Status Finish() {
    if (in_.bad()) return absl::DataLossError(absl::StrCat(path_.string(), ": read error"));
    return absl::OkStatus();
  }

 private:
  std::filesystem::path path_;
  std::ifstream in_;
  int64_t number_ = 0;
};

struct InputSurvey {
  int64_t lines = 0;  // non-blank
  // Ids whose permanent error record came from another version of their line (edited since).
  absl::flat_hash_set<std::string> edited;
};

// One pass over the input before the run: its lines, and which permanent errors of an earlier run
// no longer match their line (`permanent`: key -> input_hash; the first line of an id counts).
absl::StatusOr<InputSurvey> SurveyInput(
    const std::filesystem::path& path,
    const absl::flat_hash_map<std::string, std::string>& permanent) {
  LineReader reader;
  if (absl::Status s = reader.Open(path); !s.ok()) return s;
  InputSurvey survey;
  absl::flat_hash_set<std::string> seen;
  std::string line;
  int64_t number = 0;
  while (reader.Next(&line, &number)) {
    ++survey.lines;
    if (permanent.empty()) continue;
    std::optional<nlohmann::json> id;
    (void)rpc::ParseRequestLine(line, &id);
    if (!id.has_value()) continue;
    const std::string key = id->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (!seen.insert(key).second) continue;
    auto it = permanent.find(key);
    // A record of an older version has no hash: it is taken to match.
    if (it != permanent.end() && !it->second.empty() && it->second != InputHash(line)) {
      survey.edited.insert(key);
    }
  }
  if (absl::Status s = reader.Finish(); !s.ok()) return s;
  return survey;
}

// A request on its way: filled by the backend's callback thread, read by the job's thread once
// it is final (handed over under the job's mutex).
struct InFlight {
  BatchRequest request;
  int64_t line = 0;
  std::string input_hash;  // of its line (tools/batch_records.h)
  int attempts = 0;        // tries that failed with a retryable error after acceptance
  uint64_t backend_id = 0;
  BatchResult result;
  // Chunked prefill of a long prompt, from progress chunks; under the job's mutex.
  int64_t prefill_done = 0, prefill_total = 0;
};

class BatchJob {
 public:
  BatchJob(rpc::GenerationBackend& backend, const BatchJobOptions& options)
      : backend_(backend),
        options_(options),
        log_(options.log ? *options.log : std::cerr),
        progress_(log_, options.progress_bar) {}

  absl::StatusOr<BatchSummary> Run();

 private:
  absl::Status Prepare();
  // Reads lines until one is a request to run (returned) or the input ends (nullptr). Malformed
  // lines, duplicates and ids already done are handled on the way.
  absl::StatusOr<std::shared_ptr<InFlight>> NextRequest();
  // Submits `held_`. Returns false when it must wait (queue full / unavailable: held_ stays).
  bool SubmitHeld(Clock::time_point now);
  // A refusal that a later try may overcome (IsRetryable): schedules the retry with backoff.
  // Sets stop_ when the backend has been unavailable for too long.
  void NoteRetryableRefusal(const absl::Status& status, Clock::time_point now);
  void OnChunk(const std::shared_ptr<InFlight>& state, rpc::GenerationChunk chunk);
  void Complete(const std::shared_ptr<InFlight>& done);
  // A request that failed with `status`: tried again later when the error is retryable and tries
  // are left, else its error record is written.
  void Failed(const std::shared_ptr<InFlight>& state, const absl::Status& status);
  absl::Status Write(const nlohmann::ordered_json& record);
  void LineMessage(int64_t line, const std::string& text) {
    progress_.Message(absl::StrCat(options_.input.string(), ":", line, ": ", text));
  }

  rpc::GenerationBackend& backend_;
  const BatchJobOptions& options_;
  std::ostream& log_;
  BatchProgress progress_;
  const Clock::time_point start_ = Clock::now();

  // Job thread only.
  LineReader reader_;
  int fd_ = -1;
  BatchSummary summary_;
  absl::flat_hash_set<std::string> done_keys_;  // ids with a final record from earlier runs
  absl::flat_hash_map<std::string, int64_t> seen_keys_;  // id key -> first line
  absl::flat_hash_set<uint64_t> in_flight_;              // backend ids
  std::shared_ptr<InFlight> held_;  // next to submit (refused for now, or not yet tried)
  // Accepted, then refused in their final chunk before any token (a remote server's queue full,
  // UNAVAILABLE): submitted again before new lines.
  std::deque<std::shared_ptr<InFlight>> refused_;
  Clock::time_point retry_at_{};
  std::chrono::milliseconds backoff_{0};
  std::optional<Clock::time_point> unavailable_since_;
  bool input_done_ = false;
  bool output_broken_ = false;
  absl::Status stop_;  // non-OK: submit nothing more, finish what is in flight, return this

  // Shared with the callbacks.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<InFlight>> finished_;
  absl::flat_hash_set<const InFlight*> prefilling_;  // long prompts in chunked prefill
  std::atomic<int64_t> generated_tokens_{0};
};

absl::Status BatchJob::Prepare() {
  std::error_code ec;
  if (std::filesystem::exists(options_.output, ec) &&
      std::filesystem::equivalent(options_.input, options_.output, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--output ", options_.output.string(), " is the input file"));
  }
  absl::StatusOr<ExistingOutput> existing = ScanAndRepairOutput(options_.output);
  if (!existing.ok()) return existing.status();
  if (existing->torn_bytes > 0) {
    progress_.Message(absl::StrCat(options_.output.string(), ": cut away a torn last line (",
                                   existing->torn_bytes, " bytes) left by an interrupted run"));
  }
  absl::StatusOr<InputSurvey> survey = SurveyInput(options_.input, existing->permanent);
  if (!survey.ok()) return survey.status();
  summary_.counts.total = survey->lines;
  if (absl::Status s = reader_.Open(options_.input); !s.ok()) return s;
  // One record per id: what this run replaces goes first.
  if (existing->superseded > 0 || !survey->edited.empty()) {
    absl::StatusOr<int64_t> dropped = CompactOutput(options_.output, survey->edited);
    if (!dropped.ok()) return dropped.status();
    progress_.Message(
        absl::StrCat(options_.output.string(), ": removed ", *dropped,
                     " records of earlier runs to run their ids again (retryable errors, "
                     "cancelled results, errors of lines edited since)"));
  }
  done_keys_ = std::move(existing->done_keys);
  for (const auto& [key, hash] : existing->permanent) {
    if (!survey->edited.contains(key)) done_keys_.insert(key);
  }

  absl::StatusOr<rpc::ModelSummary> info = backend_.Info();
  if (!info.ok()) {
    return absl::Status(info.status().code(),
                        absl::StrCat("cannot reach the backend: ", info.status().message()));
  }
  summary_.max_in_flight = options_.max_in_flight;
  if (summary_.max_in_flight <= 0) {
    summary_.max_in_flight = info->max_num_seqs > 0 && info->max_waiting > 0
                                 ? info->max_num_seqs + info->max_waiting
                                 : 256;
  }

  fd_ = ::open(options_.output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        options_.output.string(), ": cannot open for writing (", std::strerror(errno), ")"));
  }
  backoff_ = options_.retry_backoff_min;
  return absl::OkStatus();
}

absl::Status BatchJob::Write(const nlohmann::ordered_json& record) {
  const std::string line = RecordLine(record);
  // One write per record (O_APPEND): a crash leaves whole records and at most one torn last line.
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::DataLossError(
          absl::StrCat(options_.output.string(), ": write failed (", std::strerror(errno), ")"));
    }
    written += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<InFlight>> BatchJob::NextRequest() {
  std::string line;
  int64_t number = 0;
  while (reader_.Next(&line, &number)) {
    std::optional<json> id;
    absl::StatusOr<BatchRequest> request = rpc::ParseRequestLine(line, &id);
    if (id.has_value()) {
      const std::string key = id->dump(-1, ' ', false, json::error_handler_t::replace);
      auto [it, first] = seen_keys_.try_emplace(key, number);
      if (!first) {
        ++summary_.counts.duplicates;
        LineMessage(number, absl::StrCat("duplicate id ", key, " (first on line ", it->second,
                                         "); this line is not run"));
        continue;
      }
      if (done_keys_.contains(key)) {
        // A malformed line is reported on every run; its error record is written once (a line
        // fixed since has another input_hash, and its record was removed in Prepare).
        if (!request.ok()) {
          ++summary_.counts.malformed;
          LineMessage(number, std::string(request.status().message()));
        } else {
          ++summary_.counts.skipped;
        }
        continue;
      }
    }
    if (!request.ok()) {
      ++summary_.counts.malformed;
      LineMessage(number, std::string(request.status().message()));
      if (id.has_value()) {
        if (absl::Status s = Write(ErrorRecord(*id, request.status(), InputHash(line))); !s.ok()) {
          output_broken_ = true;
          return s;
        }
      }
      continue;
    }
    auto state = std::make_shared<InFlight>();
    state->request = *std::move(request);
    state->line = number;
    state->input_hash = InputHash(line);
    return state;
  }
  if (absl::Status s = reader_.Finish(); !s.ok()) return s;
  return std::shared_ptr<InFlight>();
}

void BatchJob::OnChunk(const std::shared_ptr<InFlight>& state, rpc::GenerationChunk chunk) {
  if (chunk.prompt_tokens_processed > 0 || (!chunk.token_ids.empty() && state->prefill_total > 0)) {
    std::lock_guard<std::mutex> lock(mu_);
    if (chunk.prompt_tokens_processed > 0) {
      if (state->prefill_total == 0) prefilling_.insert(state.get());
      state->prefill_done = chunk.prompt_tokens_processed;
      state->prefill_total = chunk.usage.prompt_tokens;
    } else {
      prefilling_.erase(state.get());  // the first token: its prefill is over
      state->prefill_total = 0;
    }
  }
  if (chunk.prompt_tokens_processed > 0) return;
  BatchResult& r = state->result;
  generated_tokens_.fetch_add(static_cast<int64_t>(chunk.token_ids.size()));
  r.token_ids.insert(r.token_ids.end(), chunk.token_ids.begin(), chunk.token_ids.end());
  r.text += chunk.text;
  for (SampleResult& s : chunk.logprobs) r.logprobs.push_back(std::move(s));
  if (!chunk.final) return;
  r.finish_reason = std::move(chunk.finish_reason);
  r.status = std::move(chunk.status);
  r.usage = chunk.usage;
  r.seed = chunk.seed;
  // Notify under the lock: once the job thread sees the last result it may return and destroy
  // cv_, so this thread must be done with it before the job thread can get the lock.
  std::lock_guard<std::mutex> lock(mu_);
  prefilling_.erase(state.get());
  finished_.push_back(state);
  cv_.notify_one();
}

bool BatchJob::SubmitHeld(Clock::time_point now) {
  std::shared_ptr<InFlight> state = held_;
  // Submit consumes its arguments; a refused request keeps its own copy for the next try.
  rpc::GenerationParams params = state->request.params;
  params.prefill_progress = options_.progress_bar;  // only a terminal shows it
  absl::StatusOr<uint64_t> id = backend_.Submit(
      state->request.input, std::move(params),
      [this, state](rpc::GenerationChunk chunk) { OnChunk(state, std::move(chunk)); });
  if (id.ok()) {
    state->backend_id = *id;
    in_flight_.insert(*id);
    held_.reset();
    return true;
  }
  const absl::Status& status = id.status();
  if (IsRetryable(status)) {
    NoteRetryableRefusal(status, now);
    return false;
  }
  held_.reset();
  Failed(state, status);
  return true;
}

void BatchJob::Failed(const std::shared_ptr<InFlight>& state, const absl::Status& status) {
  const std::string what =
      absl::StrCat("id ", state->request.key, ": ", absl::StatusCodeToString(status.code()), ": ",
                   status.message());
  const bool permanent = IsPermanentError(status);
  if (!permanent && ++state->attempts < options_.max_attempts && stop_.ok()) {
    LineMessage(state->line, absl::StrCat(what, "; trying again (", state->attempts + 1, " of ",
                                          options_.max_attempts, ")"));
    ++summary_.retries;
    state->result = BatchResult();
    refused_.push_back(state);
    retry_at_ = Clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, options_.retry_backoff_max);
    return;
  }
  LineMessage(state->line, what);
  ++summary_.counts.failed;
  if (!permanent) ++summary_.counts.retry_later;
  if (output_broken_) return;
  if (absl::Status s = Write(ErrorRecord(state->request.id, status, state->input_hash)); !s.ok()) {
    stop_ = s;
    output_broken_ = true;
    for (uint64_t id : in_flight_)
      backend_.Cancel(id, absl::CancelledError("the output cannot be written"));
  }
}

void BatchJob::NoteRetryableRefusal(const absl::Status& status, Clock::time_point now) {
  ++summary_.retries;
  if (status.code() == absl::StatusCode::kUnavailable) {
    // Only a request that succeeds ends an outage (a remote backend accepts every Submit and
    // refuses in the final chunk).
    if (!unavailable_since_) unavailable_since_ = now;
    if (now - *unavailable_since_ >= options_.unavailable_timeout) {
      stop_ = absl::UnavailableError(absl::StrCat(
          "the backend stayed unavailable for ",
          std::chrono::duration_cast<std::chrono::seconds>(now - *unavailable_since_).count(),
          " s: ", status.message()));
    }
  }
  retry_at_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, options_.retry_backoff_max);
}

void BatchJob::Complete(const std::shared_ptr<InFlight>& state) {
  InFlight& done = *state;
  in_flight_.erase(done.backend_id);
  BatchResult& r = done.result;
  if (!r.status.ok() && IsRetryable(r.status) && r.token_ids.empty()) {
    NoteRetryableRefusal(r.status, Clock::now());
    r = BatchResult();
    refused_.push_back(state);
    return;
  }
  // Something came back: the backend is up, and this request freed a place in its queue, so a
  // refused one may go now.
  unavailable_since_.reset();
  backoff_ = options_.retry_backoff_min;
  retry_at_ = Clock::now();
  if (r.finish_reason == "error" || !r.status.ok() || !IsFinishedReason(r.finish_reason)) {
    // An error, or cancelled (by a draining server): tried again or recorded as an error.
    absl::Status status = r.status;
    if (status.ok()) {
      status = r.finish_reason == "cancelled" ? absl::CancelledError("cancelled by the server")
                                              : absl::UnknownError("the request failed");
    }
    Failed(state, status);
    return;
  }
  summary_.counts.prompt_tokens += r.usage.prompt_tokens;
  ++summary_.counts.completed;
  const nlohmann::ordered_json record = ResultRecord(done.request.id, r, done.request.params);
  if (output_broken_) return;
  if (absl::Status s = Write(record); !s.ok()) {
    // Nothing more can be recorded: stop the rest early.
    stop_ = s;
    output_broken_ = true;
    for (uint64_t id : in_flight_)
      backend_.Cancel(id, absl::CancelledError("the output cannot be written"));
  }
}

absl::StatusOr<BatchSummary> BatchJob::Run() {
  if (absl::Status s = Prepare(); !s.ok()) return s;
  const int max_in_flight = summary_.max_in_flight;
  while (true) {
    Clock::time_point now = Clock::now();
    while (stop_.ok() && static_cast<int>(in_flight_.size()) < max_in_flight) {
      if (!held_ && !refused_.empty()) {
        held_ = std::move(refused_.front());
        refused_.pop_front();
      }
      if (!held_ && !input_done_) {
        absl::StatusOr<std::shared_ptr<InFlight>> next = NextRequest();
        if (!next.ok()) {
          stop_ = next.status();
          break;
        }
        held_ = *std::move(next);
        if (!held_) input_done_ = true;
      }
      if (!held_ || now < retry_at_) break;
      if (!SubmitHeld(now)) break;
      now = Clock::now();
    }
    if (in_flight_.empty() && (!stop_.ok() || (input_done_ && !held_ && refused_.empty()))) {
      break;
    }

    std::vector<std::shared_ptr<InFlight>> finished;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Wake for a completion, for a retry that is due, or to redraw the progress bar.
      // (A refused request waits for its retry time only while there is room to submit it.)
      Clock::time_point until = now + std::chrono::milliseconds(100);
      if ((held_ || !refused_.empty()) && stop_.ok() &&
          static_cast<int>(in_flight_.size()) < max_in_flight) {
        until = std::min(until, retry_at_);
      }
      cv_.wait_until(lock, until, [&] { return !finished_.empty(); });
      finished.assign(finished_.begin(), finished_.end());
      finished_.clear();
      summary_.counts.prefill_done = summary_.counts.prefill_total = 0;
      for (const InFlight* p : prefilling_) {
        summary_.counts.prefill_done += p->prefill_done;
        summary_.counts.prefill_total += p->prefill_total;
      }
    }
    for (const std::shared_ptr<InFlight>& done : finished) Complete(done);
    summary_.counts.generated_tokens = generated_tokens_.load();
    progress_.Update(summary_.counts);
  }
  if (fd_ >= 0) ::close(fd_);
  summary_.counts.generated_tokens = generated_tokens_.load();
  summary_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  progress_.Update(summary_.counts, Clock::now(), /*force=*/true);
  progress_.Finish(SummaryLine(summary_, options_.output));
  if (!stop_.ok()) return stop_;
  return summary_;
}

}  // namespace

absl::StatusOr<BatchSummary> RunBatchJob(rpc::GenerationBackend& backend,
                                         const BatchJobOptions& options) {
  BatchJob job(backend, options);
  return job.Run();
}

}  // namespace bitserve::cli
