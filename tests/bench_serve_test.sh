#!/usr/bin/env bash
# End to end: `bitserve bench-serve` against a running `bitserve serve` on a small generated model
# (every request completes, the numbers are sane, the JSON has vLLM's keys), the same over the
# OpenAI HTTP API with a shared-prefix workload (--base-url), a Poisson-rate run,
# rejected requests counted with their status code, the in-process --model path, and the server
# still draining and exiting 0 on SIGTERM afterwards.
# Usage: bench_serve_test.sh PATH/TO/bitserve
set -euo pipefail
bitserve=$1
python=/usr/bin/python3
work=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  if [[ -f $work/server.err ]]; then echo "--- server stderr (last lines):" >&2; tail -20 "$work/server.err" >&2; fi
  exit 1
}
bench() {  # bench NAME ARGS...: runs bench-serve (bounded), stdout to NAME.out, stderr to NAME.err
  local name=$1; shift
  timeout 180 "$bitserve" bench-serve "$@" > "$work/$name.out" 2> "$work/$name.err" \
    || fail "bench-serve $name exited $?: $(tail -5 "$work/$name.err")"
}

"$bitserve" make-model --preset test-gqa --out "$work/model" 2>/dev/null

: > "$work/server.err"  # exists before the server's own redirect does: the loop below reads it
"$bitserve" serve --model "$work/model" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  2>> "$work/server.err" &
server_pid=$!
addr=
for _ in $(seq 1 600); do  # up to 60 s for the model to load
  addr=$(sed -n 's/^bitserve serve: listening on //p' "$work/server.err" | head -1)
  [[ -n $addr ]] && break
  kill -0 "$server_pid" 2>/dev/null || fail "bitserve serve exited before listening"
  sleep 0.1
done
[[ -n $addr ]] || fail "bitserve serve did not print its address within 60 s"
http_url=$(sed -n 's/^bitserve serve: OpenAI API on \(http:[^ ]*\)\/v1 .*/\1/p' "$work/server.err" | head -1)
[[ -n $http_url ]] || fail "no OpenAI API line: $(cat "$work/server.err")"

# Fixed concurrency, random lengths: 16 measured requests after 2 warm-up ones.
bench fixed --server "$addr" --num-prompts 16 --input-len 32 --output-len 16 \
  --input-len-range 0.5 --output-len-range 0.5 --max-concurrency 4 --warmup 2 --seed 1 \
  --json "$work/fixed.json"
grep -q "============ Serving Benchmark Result ============" "$work/fixed.out" \
  || fail "no result block: $(cat "$work/fixed.out")"
grep -q "^Successful requests: *16 *$" "$work/fixed.out" || fail "not 16 successful: $(cat "$work/fixed.out")"
grep -q "^P99 TTFT (ms):" "$work/fixed.out" || fail "no P99 TTFT line"
$python - "$work/fixed.json" <<'PY' || fail "fixed.json: $(head -c 2000 "$work/fixed.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["completed"] == 16 and r["failed"] == 0, (r["completed"], r["failed"], r["errors"])
p = r["parameters"]
assert p["backend"] == "server" and p["max_concurrency"] == 4 and p["num_prompts"] == 16, p
assert p["request_rate"] == "inf" and p["seed"] == 1 and p["num_warmups"] == 2, p
assert len(r["ttfts"]) == len(r["latencies"]) == len(r["itls"]) == 16
for ttft, e2el, itl, n, inp in zip(r["ttfts"], r["latencies"], r["itls"], r["output_lens"],
                                   r["input_lens"]):
    assert 0 < ttft <= e2el, (ttft, e2el)
    assert 8 <= n <= 24 and 16 <= inp <= 48, (n, inp)   # [L(1-R), L(1+R)]
    assert len(itl) == n - 1, (len(itl), n)            # one token per chunk from bitserve
    assert all(g >= 0 for g in itl)
assert r["total_output_tokens"] == sum(r["output_lens"])
assert r["total_input_tokens"] == sum(r["input_lens"])
assert r["duration"] > 0 and r["output_throughput"] > 0 and r["request_throughput"] > 0
assert abs(r["output_throughput"] - r["total_output_tokens"] / r["duration"]) < 1e-6
assert r["total_token_throughput"] > r["output_throughput"]
assert 1 <= r["max_concurrent_requests"] <= 4, r["max_concurrent_requests"]
for m in ("ttft", "tpot", "itl", "e2el"):
    assert r[f"mean_{m}_ms"] > 0, m
    assert r[f"p50_{m}_ms"] <= r[f"p90_{m}_ms"] <= r[f"p99_{m}_ms"], m
    assert abs(r[f"p50_{m}_ms"] - r[f"median_{m}_ms"]) < 1e-9, m
assert r["mean_ttft_ms"] <= r["mean_e2el_ms"]
PY

# Poisson arrivals at 40 req/s.
bench poisson --server "$addr" --num-prompts 12 --input-len 16 --output-len 8 --request-rate 40 \
  --seed 2 --json "$work/poisson.json"
grep -q "^Request rate configured (RPS): *40.00" "$work/poisson.out" || fail "rate line: $(cat "$work/poisson.out")"
$python - "$work/poisson.json" <<'PY' || fail "poisson.json"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["completed"] == 12 and r["failed"] == 0, r["errors"]
assert r["parameters"]["request_rate"] == 40, r["parameters"]
assert r["output_lens"] == [8] * 12, r["output_lens"]
PY

# The same benchmark over the OpenAI HTTP API (streamed /v1/completions, one connection per
# request), with a shared-prefix workload: 24 requests, each a 48-token prefix every prompt shares
# and 16 own tokens, 12 output tokens each, counted per chunk from the streamed token ids.
bench http --base-url "$http_url" --num-prompts 24 --prefix-len 48 --input-len 16 --output-len 12 \
  --max-concurrency 6 --warmup 1 --seed 3 --json "$work/http.json"
grep -q "^Successful requests: *24 *$" "$work/http.out" || fail "http: $(cat "$work/http.out")"
$python - "$work/http.json" "$http_url" <<'PY' || fail "http.json: $(head -c 2000 "$work/http.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["completed"] == 24 and r["failed"] == 0, (r["completed"], r["errors"])
p = r["parameters"]
assert p["backend"] == "openai-http" and p["base_url"] == sys.argv[2], p
assert p["prefix_len"] == 48 and p["max_concurrency"] == 6, p
assert r["output_lens"] == [12] * 24, r["output_lens"]        # ignore_eos reached the server
assert r["input_lens"] == [64] * 24, r["input_lens"]          # prefix + own tokens, server's count
for ttft, e2el, itl in zip(r["ttfts"], r["latencies"], r["itls"]):
    assert 0 < ttft <= e2el and len(itl) == 11, (ttft, e2el, len(itl))  # one token per chunk
assert 1 <= r["max_concurrent_requests"] <= 6, r["max_concurrent_requests"]
PY
# The same seed over gRPC sends the same prompts: the same token counts.
bench grpc_same --server "$addr" --num-prompts 24 --prefix-len 48 --input-len 16 --output-len 12 \
  --max-concurrency 6 --warmup 1 --seed 3 --json "$work/grpc_same.json"
$python - "$work/http.json" "$work/grpc_same.json" <<'PY' || fail "http vs grpc"
import json, sys
h, g = (json.load(open(f)) for f in sys.argv[1:3])
assert h["input_lens"] == g["input_lens"] and h["output_lens"] == g["output_lens"], (h, g)
PY
# Over HTTP, a prompt beyond the model's positions is the server's 400, counted with its code.
bench http_toolong --base-url "$http_url" --num-prompts 2 --input-len 600 --output-len 4 \
  --json "$work/http_toolong.json"
grep -q "^Failed requests: *2" "$work/http_toolong.out" || fail "http failures: $(cat "$work/http_toolong.out")"
grep -q "INVALID_ARGUMENT 2" "$work/http_toolong.out" || fail "http code: $(cat "$work/http_toolong.out")"
# A run cut short over HTTP (--timeout): the requests in flight are cancelled on the server (the
# client closes their streams), the rest never sent; all counted DEADLINE_EXCEEDED (3 requests of
# 480 tokens take ~1.6 s here).
cancelled_before=$(grep -c "outcome=cancelled" "$work/server.err" || true)
bench http_timeout --base-url "$http_url" --num-prompts 12 --input-len 8 --output-len 480 \
  --max-concurrency 3 --timeout 0.3
grep -q "^Failed requests by status code: DEADLINE_EXCEEDED 12" "$work/http_timeout.out" \
  || fail "http timeout: $(cat "$work/http_timeout.out")"
for _ in $(seq 1 50); do  # the server notices the closed streams within its poll interval
  (( $(grep -c "outcome=cancelled" "$work/server.err" || true) >= cancelled_before + 3 )) && break
  sleep 0.1
done
(( $(grep -c "outcome=cancelled" "$work/server.err" || true) >= cancelled_before + 3 )) \
  || fail "the 3 streamed requests in flight were not cancelled on the server"
# An OpenAI server whose model card has no vocabulary size (not bitserve's): random prompts are
# refused with what to do instead.
$python - > "$work/fake.port" <<'PY' &
import http.server, json, sys
class Card(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Card)
print(server.server_address[1], flush=True)
server.timeout = 30
server.handle_request()
PY
fake_pid=$!
for _ in $(seq 1 50); do [[ -s $work/fake.port ]] && break; sleep 0.1; done
if out=$("$bitserve" bench-serve --base-url "http://127.0.0.1:$(cat "$work/fake.port")" 2>&1); then
  fail "random prompts without a vocabulary size were accepted"
fi
[[ $out == *"does not give it"*"--dataset"* ]] || fail "no-vocabulary error: $out"
wait "$fake_pid" || true
# A URL nobody serves: exit 1 naming it.
if out=$("$bitserve" bench-serve --base-url http://127.0.0.1:1 --num-prompts 1 2>&1); then
  fail "an unreachable --base-url was accepted"
fi
[[ $out == *"cannot reach http://127.0.0.1:1"* ]] || fail "unreachable error: $out"
if out=$("$bitserve" bench-serve --base-url 127.0.0.1:8000 --num-prompts 1 2>&1); then
  fail "a --base-url without its scheme was accepted"
fi
[[ $out == *"--base-url: expected http://HOST:PORT or https://HOST:PORT"* ]] || fail "scheme error: $out"

# Prompts longer than the model's 512 positions: each request fails, counted with its code.
bench toolong --server "$addr" --num-prompts 3 --input-len 600 --output-len 4 --json "$work/toolong.json"
grep -q "^Failed requests: *3" "$work/toolong.out" || fail "failures not counted: $(cat "$work/toolong.out")"
grep -q "RESOURCE_EXHAUSTED 3" "$work/toolong.out" || fail "no error code: $(cat "$work/toolong.out")"
$python - "$work/toolong.json" <<'PY' || fail "toolong.json"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["completed"] == 0 and r["failed"] == 3 and r["failures_by_code"] == {"RESOURCE_EXHAUSTED": 3}, r
assert all(e.startswith("RESOURCE_EXHAUSTED: ") for e in r["errors"]), r["errors"]
PY

# The same driver in-process.
bench inprocess --model "$work/model" --num-prompts 6 --input-len 8 --output-len 4 --max-concurrency 2 \
  --json "$work/inprocess.json"
$python - "$work/inprocess.json" <<'PY' || fail "inprocess.json"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["completed"] == 6 and r["failed"] == 0 and r["parameters"]["backend"] == "in-process", r
assert r["total_output_tokens"] == 24 and r["mean_ttft_ms"] > 0, r
PY

# Bad flags: exit status 1 with a message naming the flag.
if out=$("$bitserve" bench-serve --server "$addr" --input-len-range 1 2>&1); then fail "range 1 accepted"; fi
[[ $out == *"--input-len-range must be in [0, 1)"* ]] || fail "range error: $out"
if out=$("$bitserve" bench-serve --server "$addr" --request-rate zero 2>&1); then fail "rate accepted"; fi
[[ $out == *"--request-rate"* ]] || fail "rate error: $out"

# The server served all of that and still drains and exits 0.
kill -TERM "$server_pid"
for _ in $(seq 1 300); do  # up to 30 s
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$server_pid" 2>/dev/null && fail "bitserve serve still running 30 s after SIGTERM"
rc=0
wait "$server_pid" || rc=$?
server_pid=
[[ $rc == 0 ]] || fail "bitserve serve exited $rc after SIGTERM"
echo "bench_serve_test: all checks passed"
