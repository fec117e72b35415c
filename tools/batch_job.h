// `bitserve batch`: runs every request of a JSONL file (tools/batch_records.h) through a
// GenerationBackend (the in-process coordinator or a remote server) and appends one result line
// per request to the output file, as each completes (completion order, keyed by id).
//
// Resumable, with one record per id: ids that already have a finished result or a permanent
// error (tools/batch_records.h) in the output are skipped; a torn last line left by a crash is
// cut away first, and the records a rerun replaces (retryable errors, cancelled results, and an
// edited line's permanent error) are removed before anything is run (CompactOutput). Since each
// record is appended with one write(2) once its request is complete, a crash loses at most the
// requests in flight.
//
// Flow control: up to max_in_flight requests are submitted at once. A request refused because the
// server's queue is full (RESOURCE_EXHAUSTED mentioning the queue) waits for a completion or a
// short backoff and is submitted again, never failed; so does one refused with UNAVAILABLE
// (server starting, draining, connection lost) until the backend has been unavailable for
// `unavailable_timeout`, when the job stops with that error (what is written stays; rerunning
// resumes). A refusal counts whether Submit returns it or (a remote backend) the final chunk
// brings it before any token. Every other error is an error record for its id, and the job goes
// on. A request that fails after it was accepted with a retryable error (UNAVAILABLE after tokens
// came: a worker lost mid-request; INTERNAL; cancelled by a draining server; ...) is submitted
// again, up to max_attempts tries; then its error record says "retryable" and the summary counts
// it in `retry_later`: the job is incomplete, and a rerun tries it again.
#pragma once

#include <chrono>
#include <filesystem>
#include <ostream>

#include "absl/status/statusor.h"
#include "rpc/generation_backend.h"
#include "tools/batch_progress.h"
#include "tools/batch_records.h"

namespace bitserve::cli {

struct BatchJobOptions {
  std::filesystem::path input;
  std::filesystem::path output;
  // 0: enough to fill the server, from its Info(): max_num_seqs + max_waiting (256 when unknown).
  int max_in_flight = 0;
  std::ostream* log = nullptr;  // progress, per-line messages, summary; nullptr: std::cerr
  bool progress_bar = false;    // a terminal: draw the bar (else only the final summary line)
  std::chrono::milliseconds retry_backoff_min{20};
  std::chrono::milliseconds retry_backoff_max{1000};
  std::chrono::milliseconds unavailable_timeout{30000};
  int max_attempts = 3;  // tries of a request that fails with a retryable error after acceptance
};

struct BatchSummary {
  BatchCounts counts;     // counts.retry_later > 0: some ids have no result yet (run again)
  int64_t retries = 0;    // submissions retried after "queue full" or UNAVAILABLE
  int max_in_flight = 0;  // the limit used
  double seconds = 0;
};

// Runs the job. Errors (the job did not run to the end): the input cannot be read, the output
// cannot be resumed or written, the backend cannot be reached (Info fails, or stays UNAVAILABLE).
// Per-line problems are not errors: they are reported on the log, written as error records, and
// counted in the summary.
absl::StatusOr<BatchSummary> RunBatchJob(rpc::GenerationBackend& backend,
                                         const BatchJobOptions& options);

// One line for the end of a job: "bitserve batch: 95 done, 3 errors, ... -> OUT".
std::string SummaryLine(const BatchSummary& summary, const std::filesystem::path& output);

// Worth submitting again later: queue full, or UNAVAILABLE (starting, draining, connection lost).
bool IsRetryable(const absl::Status& status);

}  // namespace bitserve::cli
