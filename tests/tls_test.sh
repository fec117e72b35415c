#!/usr/bin/env bash
# TLS on the public APIs, end to end, with certificates made here by `openssl` (a test CA, a
# server certificate for localhost / 127.0.0.1, a client certificate, and a rogue CA's client):
#   1. serve --tls-cert/--tls-key: `bitserve client --tls-ca` works over gRPC, a plaintext client
#      does not get through; the HTTP API answers HTTPS (the official openai client, trusting the
#      CA through NODE_EXTRA_CA_CERTS).
#   2. serve --tls-client-ca (mutual TLS): a client without a certificate, or with one of another
#      CA, is refused (gRPC and HTTPS); with the CA's client certificate it works.
#   3. The worker link (--worker-tls-*, mutual): the CA's worker joins and serves; a plaintext
#      worker and a rogue CA's are refused.
#   4. Bad files: serve refuses a missing key, a non-PEM file or a key of another certificate,
#      naming the flag.
#   5. Renewal: the certificate files replaced under a running serve (another CA's) serve new gRPC
#      and HTTPS connections within seconds, while a stream opened before goes on to its end.
# Usage: tls_test.sh PATH/TO/bitserve
set -euo pipefail
bitserve=$(realpath "$1")
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pid=""
cleanup() {
  [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [[ -f $work/serve.log ]] && { echo "--- serve.log" >&2; tail -n 20 "$work/serve.log" >&2; }
  exit 1
}
command -v openssl >/dev/null || fail "openssl is missing (scripts/install-deps.sh installs it)"

# Certificates (EC keys: fast). ca -> server (localhost, 127.0.0.1) and client; rogue -> client.
cd "$work"
ca() {  # ca NAME
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -out "$1.pem" -subj "/CN=bitserve test $1" -days 2 2>/dev/null
}
leaf() {  # leaf NAME CA EXT
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
    -subj "/CN=$1" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" \
    -days 2 -extfile "$1.ext" 2>/dev/null
}
ca ca
ca rogue
leaf server ca "subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf renewed rogue "subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf client ca "extendedKeyUsage=clientAuth"
leaf intruder rogue "extendedKeyUsage=clientAuth"
cd - >/dev/null
"$bitserve" make-model --preset tiny --out "$work/tiny" 2>/dev/null

start() {  # start SERVE_FLAGS...: sets addr (gRPC, as localhost:PORT) and base (HTTPS)
  "$bitserve" serve --model "$work/tiny" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --served-model-name tiny --tls-cert "$work/server.pem" --tls-key "$work/server.key" "$@" \
    2> "$work/serve.log" &
  pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
  local a
  a=$(sed -n 's/^bitserve serve: listening on \([^ ]*\).*/\1/p' "$work/serve.log")
  [[ -n $a ]] || fail "serve did not start"
  addr=localhost:${a##*:}
  base=$(sed -n 's|^bitserve serve: OpenAI API on \(https://[^ ]*\) .*|\1|p' "$work/serve.log")
  [[ -n $base ]] || fail "no https address"
  base=${base/127.0.0.1/localhost}
}
stop() {
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
}
client() { timeout 60 "$bitserve" client "$@" --server "$addr" --connect-timeout 5 2> "$work/err"; }

# 1. TLS.
start
grep -q "listening on .* (TLS)" "$work/serve.log" || fail "no (TLS) on the listening line"
client info --tls-ca "$work/ca.pem" > /dev/null || fail "client --tls-ca: $(cat "$work/err")"
if client info > /dev/null; then fail "a plaintext client got through"; fi
if client info --tls-ca "$work/rogue.pem" > /dev/null; then fail "a client trusting another CA got through"; fi
NODE_EXTRA_CA_CERTS=$work/ca.pem timeout 60 node --input-type=module - "$base" <<'JS' || fail "openai client over HTTPS"
import assert from "node:assert/strict";
import OpenAI from "openai";
const client = new OpenAI({ baseURL: process.argv[2], apiKey: "unused", maxRetries: 0 });
const r = await client.completions.create({ model: "tiny", prompt: "Hi", max_tokens: 2 });
assert.equal(r.usage.completion_tokens, 2);
JS
stop

# 2. Mutual TLS.
start --tls-client-ca "$work/ca.pem"
grep -q "(mutual TLS)" "$work/serve.log" || fail "no (mutual TLS) on the listening line"
if client info --tls-ca "$work/ca.pem" > /dev/null; then fail "mTLS: a client without a certificate got through"; fi
if client info --tls-ca "$work/ca.pem" --tls-cert "$work/intruder.pem" --tls-key "$work/intruder.key" > /dev/null; then
  fail "mTLS: a rogue CA's client got through"
fi
client generate --prompt Hi --max-tokens 2 --tls-ca "$work/ca.pem" --tls-cert "$work/client.pem" \
  --tls-key "$work/client.key" > /dev/null || fail "mTLS client: $(cat "$work/err")"
https_status() {  # https_status CERT_NAME (or none)
  timeout 30 node - "$base/models" "$work" "$1" <<'JS'
const https = require("node:https"), fs = require("node:fs");
const [url, dir, name] = process.argv.slice(2);
const opts = { ca: fs.readFileSync(dir + "/ca.pem") };
if (name !== "none") { opts.cert = fs.readFileSync(`${dir}/${name}.pem`); opts.key = fs.readFileSync(`${dir}/${name}.key`); }
https.get(url, opts, (r) => { console.log(r.statusCode); r.resume(); }).on("error", () => console.log("refused"));
JS
}
[[ $(https_status client) == 200 ]] || fail "mTLS HTTPS with the client certificate"
[[ $(https_status none) == refused ]] || fail "mTLS HTTPS without a certificate was not refused"
[[ $(https_status intruder) == refused ]] || fail "mTLS HTTPS with a rogue certificate was not refused"
stop

# 3. The worker link with mutual TLS: a worker with the CA's client certificate joins and serves;
#    a plaintext worker and one with a rogue CA's certificate do not get through.
"$bitserve" serve --model "$work/tiny" --listen 127.0.0.1:0 --worker-listen 127.0.0.1:0 \
  --worker-tls-cert "$work/server.pem" --worker-tls-key "$work/server.key" \
  --worker-tls-client-ca "$work/ca.pem" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 300); do grep -q "workers join at" "$work/serve.log" && break; sleep 0.1; done
grep -q "workers join at .* (mutual TLS)" "$work/serve.log" || fail "no worker link with mutual TLS"
join=$(sed -n 's/^bitserve serve: workers join at \([^ ]*\).*/\1/p' "$work/serve.log")
join=localhost:${join##*:}
worker() { timeout 30 "$bitserve" worker --coordinator "$join" --connect-timeout 3 "$@"; }
if worker --worker-id plain 2> "$work/w1.log"; then fail "a plaintext worker joined"; fi
if worker --worker-id rogue --tls-ca "$work/ca.pem" --tls-cert "$work/intruder.pem" \
  --tls-key "$work/intruder.key" 2> "$work/w2.log"; then fail "a rogue CA's worker joined"; fi
grep -q "listening on" "$work/serve.log" && fail "serve became ready without a trusted worker"
timeout 120 "$bitserve" worker --coordinator "$join" --worker-id trusted --tls-ca "$work/ca.pem" \
  --tls-cert "$work/client.pem" --tls-key "$work/client.key" 2> "$work/w3.log" &
wpid=$!
for _ in $(seq 600); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
grep -q "listening on" "$work/serve.log" || fail "the trusted worker did not join: $(cat "$work/w3.log")"
a=$(sed -n 's/^bitserve serve: listening on \([^ ]*\).*/\1/p' "$work/serve.log")
timeout 60 "$bitserve" client generate --server "$a" --prompt Hi --max-tokens 2 > /dev/null 2> "$work/err" ||
  fail "generate through the TLS worker link: $(cat "$work/err")"
stop
wait "$wpid" || true

# 4. Bad files.
if timeout 30 "$bitserve" serve --model "$work/tiny" --listen 127.0.0.1:0 --tls-cert "$work/server.pem" \
  2> "$work/bad.log"; then fail "serve started with a certificate and no key"; fi
grep -q -- "--tls-key" "$work/bad.log" || fail "no --tls-key in: $(cat "$work/bad.log")"
if timeout 30 "$bitserve" serve --model "$work/tiny" --listen 127.0.0.1:0 --tls-cert "$work/server.csr.none" \
  --tls-key "$work/server.key" 2> "$work/bad.log"; then fail "serve started with a missing certificate"; fi
grep -q -- "--tls-cert" "$work/bad.log" || fail "no --tls-cert in: $(cat "$work/bad.log")"
if timeout 30 "$bitserve" serve --model "$work/tiny" --listen 127.0.0.1:0 --tls-cert "$work/server.pem" \
  --tls-key "$work/client.key" 2> "$work/bad.log"; then fail "serve started with another certificate's key"; fi
grep -q -- "is not the key of --tls-cert" "$work/bad.log" || fail "key mismatch: $(cat "$work/bad.log")"

# 5. Renewal without a restart: serve reads copies of the files; they are replaced by the rogue
#    CA's "renewed" pair while a long stream runs over a connection made with the old one.
cp "$work/server.pem" "$work/live.pem"
cp "$work/server.key" "$work/live.key"
"$bitserve" serve --model "$work/tiny" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --served-model-name tiny --tls-cert "$work/live.pem" --tls-key "$work/live.key" \
  2> "$work/serve.log" &
pid=$!
for _ in $(seq 600); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
a=$(sed -n 's/^bitserve serve: listening on \([^ ]*\).*/\1/p' "$work/serve.log")
addr=localhost:${a##*:}
base=$(sed -n 's|^bitserve serve: OpenAI API on \(https://[^ ]*\) .*|\1|p' "$work/serve.log")
base=${base/127.0.0.1/localhost}
timeout 120 "$bitserve" client generate --server "$addr" --tls-ca "$work/ca.pem" --prompt-ids 1,2,3 \
  --max-tokens 3000 --ignore-eos > "$work/stream.out" 2> "$work/stream.err" &
stream=$!
for _ in $(seq 100); do [[ -s $work/stream.out ]] && break; sleep 0.1; done
[[ -s $work/stream.out ]] || fail "the long stream did not start: $(cat "$work/stream.err")"
cp "$work/renewed.pem" "$work/live.pem.new" && mv "$work/live.pem.new" "$work/live.pem"
cp "$work/renewed.key" "$work/live.key.new" && mv "$work/live.key.new" "$work/live.key"
renewed=""
for _ in $(seq 50); do
  if client info --tls-ca "$work/rogue.pem" > /dev/null; then renewed=yes; break; fi
  sleep 0.2
done
[[ -n $renewed ]] || fail "the renewed certificate was not served within 10 s: $(cat "$work/err")"
if client info --tls-ca "$work/ca.pem" > /dev/null; then fail "the old certificate is still served"; fi
NODE_EXTRA_CA_CERTS=$work/rogue.pem timeout 60 node --input-type=module - "$base" <<'JS' || fail "HTTPS with the renewed certificate"
import OpenAI from "openai";
const client = new OpenAI({ baseURL: process.argv[2], apiKey: "unused", maxRetries: 0 });
for (let i = 0; ; i++) {  // the HTTP API looks at its files on handshakes, at most once a second
  try { await client.models.list(); break; } catch (e) { if (i > 20) throw e; }
  await new Promise((r) => setTimeout(r, 250));
}
JS
grep -q "certificate files changed" "$work/serve.log" || fail "no reload line in the log"
wait "$stream" || fail "the stream opened before the renewal failed: $(cat "$work/stream.err")"
grep -q '^\[length\]$' "$work/stream.out" ||
  fail "the stream opened before the renewal did not end at its length: $(tail -c 300 "$work/stream.out")"
stop
echo "tls_test: passed"
