// The official `openai` npm client against `bitserve serve --http-listen` (run by
// tests/openai_client_test.sh, which checks the server's side afterwards).
//   node tests/openai_client_test.mjs BASE_URL MODEL EXPECTED_CHAT_TEXT
// EXPECTED_CHAT_TEXT: `bitserve generate --chat "Hello" --max-tokens 12 --ignore-eos` (greedy).
import assert from "node:assert/strict";
import OpenAI, { BadRequestError, NotFoundError } from "openai";

const [baseURL, model, expectedChat] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 60000 });
const messages = [{ role: "user", content: "Hello" }];

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok: ${name}`);
  } catch (e) {
    console.error(`FAIL: ${name}: ${e.stack || e}`);
    process.exitCode = 1;
  }
}

await check("models.list", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [model]);
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
});

await check("chat, not streamed, greedy = bitserve generate", async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 12, temperature: 0, ignore_eos: true,
  });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(r.choices[0].message.content, expectedChat);
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, 12);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 12);
});

await check("chat, streamed with usage, = not streamed", async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_completion_tokens: 12, temperature: 0, ignore_eos: true,
    stream: true, stream_options: { include_usage: true },
  });
  let text = "", finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, "chat.completion.chunk");
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks >= 3, `only ${chunks} chunks`);
  assert.equal(text, expectedChat);
  assert.equal(finish, "length");
  assert.equal(usage?.completion_tokens, 12);
});

await check("chat logprobs", async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const t of content) {
    assert.equal(typeof t.token, "string");
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 2);
    assert.ok(Array.isArray(t.bytes));
  }
  // Greedy: the chosen token is the most likely one.
  assert.equal(content[0].logprob, content[0].top_logprobs[0].logprob);
});

await check("n = 2 with a seed: two choices, reproducible", async () => {
  const ask = () => client.chat.completions.create({
    model, messages, max_tokens: 8, temperature: 1, seed: 11, n: 2,
  });
  const [a, b] = [await ask(), await ask()];
  assert.equal(a.choices.length, 2);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1]);
  assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
});

await check("completions, streamed and not, with logprobs and stop", async () => {
  const args = { model, prompt: "The capital of France is", max_tokens: 10, temperature: 0 };
  const r = await client.completions.create({ ...args, logprobs: 1 });
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices[0].logprobs.tokens.length, r.usage.completion_tokens);
  let text = "";
  for await (const chunk of await client.completions.create({ ...args, stream: true })) {
    text += chunk.choices[0]?.text ?? "";
  }
  assert.equal(text, r.choices[0].text);
  // A stop string from the text: the output ends before it, finish_reason "stop".
  const stop = r.choices[0].text.slice(3, 6);
  if (stop.trim().length > 0 && !r.choices[0].text.slice(0, 3).includes(stop)) {
    const s = await client.completions.create({ ...args, stop: [stop] });
    assert.equal(s.choices[0].finish_reason, "stop");
    assert.ok(!s.choices[0].text.includes(stop), s.choices[0].text);
  }
});

await check("errors: 400 naming the parameter, 404 for another model", async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages, temperature: 5 }),
    (e) => e instanceof BadRequestError && e.status === 400 && e.param === "temperature");
  await assert.rejects(
    client.chat.completions.create({ model, messages, tools: [{ type: "function", function: { name: "f" } }] }),
    (e) => e instanceof BadRequestError && e.param === "tools");
  await assert.rejects(
    client.chat.completions.create({ model: "gpt-4o", messages }),
    (e) => e instanceof NotFoundError && e.code === "model_not_found");
});

await check("a stream aborted by the client (the server cancels it), then the server answers", async () => {
  const controller = new AbortController();
  const stream = await client.completions.create(
    { model, prompt: "abort me", max_tokens: 100000, ignore_eos: true, stream: true },
    { signal: controller.signal });
  // The client's stream ends quietly once aborted (openai's Stream swallows its AbortError).
  let chunks = 0;
  for await (const _ of stream) {
    if (++chunks === 3) controller.abort();
  }
  assert.ok(chunks >= 3 && chunks < 100, `${chunks} chunks`);
  const r = await client.completions.create({ model, prompt: "still here", max_tokens: 2 });
  assert.equal(r.usage.completion_tokens, 2);
});
