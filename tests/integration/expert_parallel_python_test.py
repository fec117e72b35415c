#!/usr/bin/python3
"""Expert parallelism of CPU worker processes over the TCP transport, driven by python3-grpcio,
on the trained models/shakespeare-moe (8 experts, top-2):

  * `bitserve serve --expert-parallel 2` (two local workers, 4 experts each, attention
    data-parallel) gives exactly the greedy tokens of the single-process engine (`bitserve
    generate`) for concurrent requests, which the coordinator spreads over both ranks; the expert
    load metrics account for every routed token (also those of the engine in serve's process).
  * `--pipeline-stages 2 --expert-parallel 2` (four workers) gives exactly the tokens of the
    one-process two-stage pipeline (`generate --pipeline-stages 2`: EP changes no number, the int8
    hidden-state transfer between stages is the pipeline's own).
  * bad input is a clear error: --expert-parallel that does not divide the experts, EP on a dense
    model, EP on a GPU device.
  * an EP rank killed mid-stream: the request ends UNAVAILABLE naming the rank, the coordinator
    stays up, serve restarts the worker, and the rebuilt group serves the same tokens.
  * an EP rank that hangs (SIGSTOP) while its peer waits for it in an exchange: it is declared
    lost after the heartbeat timeout, the peer is released, serve kills and replaces the hung one.
  * remote EP workers (`serve --worker-listen --expert-parallel 2` + `bitserve worker`): one
    killed, the survivor registers again, a replacement joins, the same tokens again.

    expert_parallel_python_test.py --bitserve BUILD/tools/bitserve --proto-dir rpc/proto
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
import time
import urllib.request

import grpc  # python3-grpcio

from worker_test_helpers import (local_worker_pid, run_worker_tests, start_stream, stub_for,
                                 wait_readiness)
import worker_test_helpers
from grpc_harness import Process, Server, generate_stubs, load_stubs

MODEL = "models/shakespeare-moe"  # trained: real routing, 6 MoE layers of 8 experts, top-2
PROMPTS = [[2043] + [(37 * i + 11 * j) % 1900 + 40 for j in range(6 + i)] for i in range(6)]
MAX_TOKENS = 16


def generate(stub, prompt, max_tokens=MAX_TOKENS, timeout=120):
    return worker_test_helpers.generate(stub, prompt, max_tokens, timeout)


class Context:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="bitserve_ep_test_")
        generate_stubs(args.protoc, args.proto_dir, os.path.join(self.tmp, "stubs"))
        global pb, pb_grpc, health_pb, health_grpc
        pb, pb_grpc, health_pb, health_grpc, _, _ = load_stubs()
        self.processes = []
        self.references = {}

    def close(self):
        for p in self.processes:
            p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def reference(self, prompt, stages=1):
        key = (tuple(prompt), stages)
        if key not in self.references:
            out = subprocess.run([self.args.bitserve, "generate", "--model", MODEL, "--prompt-ids",
                                  ",".join(map(str, prompt)), "--max-tokens", str(MAX_TOKENS),
                                  "--ignore-eos", "--json", "--pipeline-stages", str(stages)],
                                 check=True, capture_output=True, text=True).stdout
            self.references[key] = json.loads(out)["token_ids"]
        return self.references[key]

    def serve(self, extra, model=MODEL):
        server = Server(self.args.bitserve, model, extra)
        self.processes.append(server)
        return server


def metrics(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def samples(text, name):
    """{labels string: value} of every sample of metric `name`."""
    return {m.group(1): float(m.group(2))
            for m in re.finditer(rf"^{name}{{(.*)}} (\S+)$", text, re.M)}


def stop(server):
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()


def serve_and_compare(ctx, stages, ep):
    server = ctx.serve(["--pipeline-stages", str(stages), "--expert-parallel", str(ep)])
    server.wait_listening(120)
    channel, stub, _ = stub_for(server)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(PROMPTS)) as pool:
            served = list(pool.map(lambda p: generate(stub, p), PROMPTS))
        for i, prompt in enumerate(PROMPTS):
            want = ctx.reference(prompt, stages)
            assert served[i] == want, f"prompt {i}: served {served[i]}, reference {want}"
        text = metrics(server)
        # Both ranks ran sequences of their own (attention data-parallel).
        ranks = samples(text, "bitserve_expert_parallel_rank_tokens_total")
        for r in range(ep):
            assert ranks.get(f'rank="{r}"', 0) > 0, f"rank {r} ran no tokens: {ranks}"
        # Every token passed every MoE layer with 2 experts; the per-expert and per-rank counts
        # agree, and each rank ran only its own experts (4 each, contiguous).
        experts = samples(text, "bitserve_expert_tokens_total")
        per_rank = samples(text, "bitserve_expert_rank_tokens_total")
        assert experts, "no expert load metrics"
        for layer in range(6):
            by_expert = sum(v for k, v in experts.items() if k.startswith(f'layer="{layer}",'))
            by_rank = sum(v for k, v in per_rank.items() if k.startswith(f'layer="{layer}",'))
            assert by_expert == by_rank > 0, f"layer {layer}: {by_expert} by expert, {by_rank} by rank"
            assert by_expert == 2 * sum(ranks.values()), \
                f"layer {layer}: {by_expert} expert rows for {sum(ranks.values())} tokens"
        # Every rank of every stage reported its time in the expert exchange, each step.
        exchange = samples(text, "bitserve_expert_exchange_seconds_count")
        spent = samples(text, "bitserve_expert_exchange_seconds_sum")
        for stage in range(stages):
            for r in range(ep):
                key = f'stage="{stage}",rank="{r}"'
                assert exchange.get(key, 0) > 0, f"no exchange time from {key}: {exchange}"
                assert spent.get(key, -1) >= 0, spent
        assert sum(spent.values()) > 0, spent
        print(f"  {stages} stage(s) x EP{ep}: {len(PROMPTS)} concurrent requests equal the "
              f"reference; tokens per rank {ranks}", flush=True)
    finally:
        channel.close()
    stop(server)
    assert sum("local-" in line and "EP rank" in line for line in server.lines) >= stages * ep


def test_ep2_equals_single_process(ctx):
    serve_and_compare(ctx, 1, 2)


def test_pp2_ep2_equals_one_process_pipeline(ctx):
    serve_and_compare(ctx, 2, 2)


def test_bf16_results_serve(ctx):
    """--ep-results bf16: results cross as bf16 (not bit-equal to f32: only served and counted)."""
    server = ctx.serve(["--expert-parallel", "2", "--ep-results", "bf16"])
    server.wait_listening(120)
    assert any("bf16 results" in line for line in server.lines), server.log()
    channel, stub, _ = stub_for(server)
    try:
        tokens = generate(stub, PROMPTS[0])
        assert len(tokens) == MAX_TOKENS, tokens
    finally:
        channel.close()
    stop(server)


def test_in_process_expert_load(ctx):
    """Without EP the engine in serve's process reports the same expert load metrics (rank 0)."""
    server = ctx.serve([])
    server.wait_listening(120)
    channel, stub, _ = stub_for(server)
    try:
        assert generate(stub, PROMPTS[0]) == ctx.reference(PROMPTS[0])
        text = metrics(server)
        experts = samples(text, "bitserve_expert_tokens_total")
        per_rank = samples(text, "bitserve_expert_rank_tokens_total")
        fed = len(PROMPTS[0]) + MAX_TOKENS - 1  # the last token is sampled, never fed back
        for layer in range(6):
            by_expert = sum(v for k, v in experts.items() if k.startswith(f'layer="{layer}",'))
            assert by_expert == 2 * fed, f"layer {layer}: {by_expert} rows for {fed} tokens"
            assert per_rank.get(f'layer="{layer}",rank="0"') == by_expert, per_rank
    finally:
        channel.close()
    stop(server)


def refused(ctx, extra, model, want):
    p = subprocess.run([ctx.args.bitserve, "serve", "--model", model, "--listen", "127.0.0.1:0"]
                       + extra, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0, f"serve {extra} on {model} was accepted"
    assert want in p.stderr, f"serve {extra}: {p.stderr[-2000:]}"
    print(f"  {' '.join(extra)} on {os.path.basename(model)}: "
          f"{[l for l in p.stderr.splitlines() if want in l][0]}", flush=True)


def test_bad_input_is_refused_clearly(ctx):
    refused(ctx, ["--expert-parallel", "3"], MODEL, "does not divide the model's 8 experts")
    refused(ctx, ["--expert-parallel", "2"], "models/shakespeare-dense", "this one is dense")
    refused(ctx, ["--expert-parallel", "0"], MODEL, "must be >= 1")
    refused(ctx, ["--expert-parallel", "2", "--ep-results", "fp16"], MODEL,
            "--ep-results must be f32 or bf16")


def test_killed_ep_rank(ctx):
    server = ctx.serve(["--expert-parallel", "2", "--worker-heartbeat-timeout", "1500"])
    server.wait_listening(120)
    channel, stub, health = stub_for(server)
    try:
        want = ctx.reference(PROMPTS[1])
        assert generate(stub, PROMPTS[1]) == want
        t, outcome = start_stream(stub, PROMPTS[2], 230)
        assert outcome["first"].wait(60)
        os.kill(local_worker_pid(server, "local-1"), signal.SIGKILL)  # dies mid-step
        start = time.time()
        t.join(timeout=30)
        assert not t.is_alive(), "the stream did not end"
        assert outcome.get("code") == grpc.StatusCode.UNAVAILABLE, outcome
        assert re.search(r"worker local-1 \(EP rank \d\)", outcome["details"]), outcome["details"]
        print(f"  EP rank killed: stream ended UNAVAILABLE after {time.time() - start:.2f} s: "
              f"{outcome['details']}", flush=True)
        assert server.proc.poll() is None, "the coordinator went down"
        server.wait_line(r"local worker local-1 ended \(signal 9\); starting it again", 30)
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING, 60)
        got = None
        while time.time() - start < 60:  # the first step after a rebuild fails once (KV state lost)
            try:
                got = generate(stub, PROMPTS[1])
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                time.sleep(0.2)
        assert got == want, f"after the restart: {got}, reference {want}"
    finally:
        channel.close()
    stop(server)


def generate_after_rebuild(stub, prompt, deadline):
    """The first step after a rebuild fails once (the KV state is gone): retried."""
    while True:
        try:
            return generate(stub, prompt)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE and time.time() < deadline, e
            time.sleep(0.2)


def test_hung_ep_rank_replaced(ctx):
    server = ctx.serve(["--expert-parallel", "2", "--worker-heartbeat-timeout", "1500"])
    server.wait_listening(120)
    channel, stub, health = stub_for(server)
    hung = None
    try:
        want = ctx.reference(PROMPTS[3])
        assert generate(stub, PROMPTS[3]) == want
        t, outcome = start_stream(stub, PROMPTS[4], 230)
        assert outcome["first"].wait(60)
        hung = local_worker_pid(server, "local-0")
        os.kill(hung, signal.SIGSTOP)  # alive and silent: its peer waits in an exchange
        start = time.time()
        t.join(timeout=30)
        assert not t.is_alive(), "the stream did not end"
        assert outcome.get("code") == grpc.StatusCode.UNAVAILABLE, outcome
        assert re.search(r"worker local-0 \(EP rank \d\) lost", outcome["details"]), outcome
        server.wait_line(r"local worker local-0 \(pid \d+\) is hung \(no heartbeat", 60)
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING, 60)
        assert local_worker_pid(server, "local-0") != hung
        assert generate_after_rebuild(stub, PROMPTS[3], time.time() + 60) == want
        print(f"  EP rank hung (SIGSTOP): replaced and serving the same tokens after "
              f"{time.time() - start:.1f} s", flush=True)
    finally:
        channel.close()
        if hung is not None:
            try:
                os.kill(hung, signal.SIGCONT)
            except ProcessLookupError:
                pass
    stop(server)


def test_remote_ep_rank_lost_and_replaced(ctx):
    server = ctx.serve(["--worker-listen", "127.0.0.1:0", "--expert-parallel", "2",
                        "--worker-heartbeat-timeout", "1500"])
    join = server.wait_line(r"workers join at (\S+)", 60).group(1)

    def worker(name):
        w = Process([ctx.args.bitserve, "worker", "--coordinator", join, "--worker-id", name,
                     "--connect-timeout", "20"], name=f"worker {name}")
        ctx.processes.append(w)
        return w
    w0 = worker("a")
    server.wait_line(r"worker a .*registered as a \(EP rank 0\)", 30)
    w1 = worker("b")
    server.wait_listening(60)
    channel, stub, health = stub_for(server)
    try:
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING)
        want = ctx.reference(PROMPTS[5])
        assert generate(stub, PROMPTS[5]) == want
        t, outcome = start_stream(stub, PROMPTS[0], 230)
        assert outcome["first"].wait(60)
        w1.proc.send_signal(signal.SIGKILL)
        t.join(timeout=30)
        assert not t.is_alive(), "the stream did not end"
        assert outcome.get("code") == grpc.StatusCode.UNAVAILABLE, outcome
        assert "worker b (EP rank 1)" in outcome["details"], outcome["details"]
        wait_readiness(health, health_pb.HealthCheckResponse.NOT_SERVING, 10)
        w0.wait_line("registering again", 20)
        worker("c")
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING, 60)
        assert generate_after_rebuild(stub, PROMPTS[5], time.time() + 60) == want
        assert server.proc.poll() is None
    finally:
        channel.close()
    stop(server)
    assert w0.proc.wait(timeout=30) == 0, w0.log()


TESTS = [test_ep2_equals_single_process, test_pp2_ep2_equals_one_process_pipeline,
         test_bf16_results_serve, test_in_process_expert_load,
         test_bad_input_is_refused_clearly, test_killed_ep_rank, test_hung_ep_rank_replaced,
         test_remote_ep_rank_lost_and_replaced]


if __name__ == "__main__":
    sys.exit(run_worker_tests(__doc__, TESTS, Context))
