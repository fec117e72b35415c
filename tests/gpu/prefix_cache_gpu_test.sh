#!/usr/bin/env bash
# Prefix caching on a GPU (label gpu; run by run_gpu_suite.sh `prefix`), through the HTTP API
# (tests/gpu/prefix_cache_client.py):
#   1. models/shakespeare-dense, KV bf16 / int8 / int4: twelve greedy requests sharing a
#      150-token document (two after each other, ten at once) give the same tokens with the cache
#      and with --no-prefix-caching, and the cache was used (bitserve_prefix_cache_hits_total).
#   2. Time to first token of a long document (bitnet-2b4t shape, dummy weights), first and again
#      with 8 more tokens: PREFIX_TTFT_TOKENS (default "32768 131072"), KV int8, with the cache
#      and without.
#
#   prefix_cache_gpu_test.sh BITSERVE [OUT_DIR]
set -euo pipefail
bitserve=$1
out=${2:-$(mktemp -d)}
here=$(dirname "$0")
nvidia-smi -L >/dev/null 2>&1 || { echo "no GPU: skipped"; exit 0; }
tmp=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }

start() {  # start NAME SERVE_ARGS...: sets base (the HTTP API) and metrics
  local name=$1
  shift
  "$bitserve" serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --device cuda "$@" 2>"$tmp/$name.log" &
  pid=$!
  for _ in $(seq 1200); do grep -q "listening on" "$tmp/$name.log" && break; sleep 0.1; done
  grep -q "listening on" "$tmp/$name.log" || fail "$name did not start"
  base=$(sed -n 's|^bitserve serve: OpenAI API on \(http://[^ ]*\) .*|\1|p' "$tmp/$name.log")
  metrics=$(sed -n 's|^bitserve serve: metrics on \(http://[^ ]*\)$|\1|p' "$tmp/$name.log")
}
stop() {
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
}
hits() { python3 -c "import urllib.request,sys; t=urllib.request.urlopen(sys.argv[1]).read().decode(); print([l.split()[1] for l in t.splitlines() if l.startswith('bitserve_prefix_cache_hits_total')][0])" "$metrics"; }

for kv in bf16 int8 int4; do
  for mode in cache nocache; do
    flags=()
    [[ $mode == nocache ]] && flags=(--no-prefix-caching)
    start "dense_${kv}_$mode" --model models/shakespeare-dense --kv-dtype "$kv" "${flags[@]}"
    python3 "$here/prefix_cache_client.py" same "$base" "$tmp/${kv}_$mode.json" || fail "client"
    h=$(hits)
    echo "$kv $mode: prefix cache hits $h tokens"
    if [[ $mode == cache ]]; then [[ $h != 0 ]] || fail "$kv: the cache was not used"; fi
    stop
  done
  cmp -s "$tmp/${kv}_cache.json" "$tmp/${kv}_nocache.json" ||
    fail "$kv: tokens differ with and without the cache"
  echo "$kv: same tokens with and without the prefix cache (12 requests)"
done

m=$tmp/bitnet-2b4t
"$bitserve" make-model --preset bitnet-2b4t --out "$m" --config-only --no-tokenizer >/dev/null 2>&1 ||
  fail "make-model"
for mode in cache nocache; do
  flags=()
  [[ $mode == nocache ]] && flags=(--no-prefix-caching)
  start "ttft_$mode" --model "$m" --load-format dummy --kv-dtype int8 --max-model-len 140000 \
    --max-num-seqs 16 "${flags[@]}"
  for n in ${PREFIX_TTFT_TOKENS:-32768 131072}; do
    echo -n "$mode: "
    python3 "$here/prefix_cache_client.py" ttft "$base" "$n" | tee -a "$out/prefix_ttft.log"
  done
  stop
done
echo "prefix_cache_gpu_test: passed"
