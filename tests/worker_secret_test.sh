#!/usr/bin/env bash
# The worker join secret: `serve --worker-listen --worker-secret-file F` assigns nothing to a
# worker without the secret or with a wrong one (the worker exits with the reason, serve logs the
# refusal and stays up, not ready); a worker with the secret (--secret-file or
# $BITSERVE_WORKER_SECRET) joins and serves. Local workers (`serve --pipeline-stages 2`) get a
# random secret through their environment, never their command line.
# Usage: worker_secret_test.sh PATH/TO/bitserve
set -euo pipefail
bitserve=$(realpath "$1")
work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  local log
  for log in "$work"/*.log; do [[ -f $log ]] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }; done
  exit 1
}
wait_for() {  # FILE PATTERN SECONDS
  for _ in $(seq $(($3 * 10))); do grep -q -- "$2" "$1" 2>/dev/null && return; sleep 0.1; done
  fail "no '$2' in $1 within $3 s"
}
"$bitserve" make-model --preset test-gqa --out "$work/model" --seed 3 2>/dev/null
secret=join-secret-$RANDOM$RANDOM$RANDOM
echo "$secret" > "$work/secret"
echo "wrong-secret-0123456789" > "$work/wrong"

"$bitserve" serve --model "$work/model" --listen 127.0.0.1:0 --worker-listen 127.0.0.1:0 \
  --worker-secret-file "$work/secret" 2> "$work/serve.log" &
pids+=($!)
wait_for "$work/serve.log" "workers join at .* (join secret required)" 30
join=$(sed -n 's/^bitserve serve: workers join at \([^ ]*\).*/\1/p' "$work/serve.log")
worker() { timeout 60 env -u BITSERVE_WORKER_SECRET "$bitserve" worker --coordinator "$join" --connect-timeout 10 "$@"; }

if worker --worker-id nosecret 2> "$work/w1.log"; then fail "a worker without the secret joined"; fi
grep -q "asks for a join secret" "$work/w1.log" ||
  fail "worker without the secret: $(cat "$work/w1.log")"
if worker --worker-id wrong --secret-file "$work/wrong" 2> "$work/w2.log"; then fail "a wrong secret joined"; fi
grep -q "asks for a join secret" "$work/w2.log" || fail "wrong secret: $(cat "$work/w2.log")"
# A secret too short to be one: the worker stops before dialing, naming the flag.
echo "short" > "$work/short"
if worker --worker-id short --secret-file "$work/short" 2> "$work/w4.log"; then fail "a short secret was used"; fi
grep -q -- "--secret-file .*at least 16 characters" "$work/w4.log" || fail "short secret: $(cat "$work/w4.log")"
[[ $(grep -c "refused a worker from .*: join secret missing or wrong" "$work/serve.log") == 2 ]] ||
  fail "serve did not log both refusals"
if grep -q -e "$secret" -e wrong-secret "$work/serve.log"; then fail "a secret is in serve's log"; fi
grep -q "listening on" "$work/serve.log" && fail "serve became ready without a worker"

BITSERVE_WORKER_SECRET=$secret timeout 120 "$bitserve" worker --coordinator "$join" \
  --worker-id good 2> "$work/w3.log" &
pids+=($!)
wait_for "$work/serve.log" "listening on" 60
addr=$(sed -n 's/^bitserve serve: listening on //p' "$work/serve.log")
want=$(timeout 60 "$bitserve" generate --model "$work/model" --prompt-ids 5,6,7 --max-tokens 6 --ignore-eos --json 2>/dev/null)
got=$(timeout 60 "$bitserve" client generate --server "$addr" --prompt-ids 5,6,7 --max-tokens 6 --ignore-eos --json 2>/dev/null)
[[ $got == "$want" ]] || fail "the worker with the secret: $got, want $want"
kill -TERM "${pids[0]}"; wait "${pids[0]}" || true

# Local workers: a random secret in their environment.
"$bitserve" serve --model "$work/model" --listen 127.0.0.1:0 --pipeline-stages 2 \
  2> "$work/local.log" &
pids+=($!)
wait_for "$work/local.log" "listening on" 60
grep -q "(join secret required)" "$work/local.log" || fail "local workers without a secret"
for p in $(pgrep -P "${pids[-1]}"); do
  tr '\0' ' ' < "/proc/$p/cmdline" | grep -q -i secret && fail "a secret on a worker's command line"
  tr '\0' '\n' < "/proc/$p/environ" | grep -q "^BITSERVE_WORKER_SECRET=[0-9a-f]\{32\}$" ||
    fail "local worker $p has no random secret in its environment"
done
addr=$(sed -n 's/^bitserve serve: listening on //p' "$work/local.log")
got=$(timeout 60 "$bitserve" client generate --server "$addr" --prompt-ids 5,6,7 --max-tokens 6 --ignore-eos --json 2>/dev/null)
[[ $got == "$want" ]] || fail "local pipeline: $got, want $want"
kill -TERM "${pids[-1]}"; wait "${pids[-1]}" || true
echo "worker_secret_test: passed"
