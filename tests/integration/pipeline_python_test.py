#!/usr/bin/python3
"""Pipelines of CPU worker processes over the TCP transport, driven by python3-grpcio:

  * `bitserve serve --pipeline-stages S` (S = 2, 3; local worker processes) gives exactly the
    greedy tokens of the single-process reference of the same pipeline (`bitserve generate
    --pipeline-stages S`: the same stage engines chained in one process), for int8 and bf16
    transfer, with many requests batched together; how often it agrees with the unsplit model is
    printed (the transfer format is lossy by design: runtime/engine/pipeline_stage_test.cc bounds it).
    With `--pipeline-split 1,5` (not the decode-bytes balance) on both sides, the same; serve logs
    the split it serves.
  * remote stage workers (`serve --worker-listen --pipeline-stages 2` + `bitserve worker`): a stage
    killed mid-stream ends the request UNAVAILABLE within seconds, readiness drops, the surviving
    stage registers again, a replacement joins, the rebuilt pipeline serves the same tokens, and
    SIGTERM stops everything with exit 0.
  * a local stage worker of `serve --pipeline-stages 2` killed: serve starts it again and the
    rebuilt pipeline serves the same tokens.
  * a local stage worker that hangs (SIGSTOP) is killed and replaced by serve; the stream it broke
    ends UNAVAILABLE naming it; a hung remote worker is fenced while a replacement joins.

    pipeline_python_test.py --bitserve BUILD/tools/bitserve --proto-dir rpc/proto [--protoc protoc]
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

from worker_test_helpers import (local_worker_pid, readiness, run_worker_tests, start_stream,
                                 stub_for, wait_readiness)
import worker_test_helpers
from grpc_harness import Process, Server, generate_stubs, load_stubs

MODEL = "models/shakespeare-dense"  # trained: real activations, 6 layers
PROMPTS = [[2043] + [(37 * i + 11 * j) % 1900 + 40 for j in range(6 + i)] for i in range(8)]
MAX_TOKENS = 20


def generate(stub, prompt, max_tokens=MAX_TOKENS, timeout=120):
    return worker_test_helpers.generate(stub, prompt, max_tokens, timeout)


class Context:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="bitserve_pipeline_test_")
        generate_stubs(args.protoc, args.proto_dir, os.path.join(self.tmp, "stubs"))
        global pb, pb_grpc, health_pb, health_grpc
        pb, pb_grpc, health_pb, health_grpc, _, _ = load_stubs()
        self.processes = []

    def close(self):
        for p in self.processes:
            p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def reference(self, prompt, stages, transfer, split=None):
        out = subprocess.run([self.args.bitserve, "generate", "--model", MODEL, "--prompt-ids",
                              ",".join(map(str, prompt)), "--max-tokens", str(MAX_TOKENS),
                              "--ignore-eos", "--json", "--pipeline-stages", str(stages),
                              "--pp-transfer", transfer] + (["--pipeline-split", split] if split else []),
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)["token_ids"]

    def serve(self, extra):
        server = Server(self.args.bitserve, MODEL, extra)
        self.processes.append(server)
        return server


def check_local_pipeline(ctx, stages, transfer, split=None):
    server = ctx.serve(["--pipeline-stages", str(stages), "--pp-transfer", transfer] +
                       (["--pipeline-split", split] if split else []))
    server.wait_listening(120)
    channel, stub, _ = stub_for(server)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(PROMPTS)) as pool:
            served = list(pool.map(lambda p: generate(stub, p), PROMPTS))
        same_as_whole = 0
        for i, prompt in enumerate(PROMPTS):
            want = ctx.reference(prompt, stages, transfer, split)
            assert served[i] == want, f"prompt {i}: served {served[i]}, reference {want}"
            whole = ctx.reference(prompt, 1, transfer)
            same_as_whole += sum(a == b for a, b in zip(whole, served[i]))
        # Per-stage metrics: every stage reported its compute time for the steps it ran.
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        for stage in range(stages):
            m = re.search(rf'^bitserve_pipeline_stage_compute_seconds_count{{stage="{stage}"}} (\S+)$',
                          text, re.M)
            assert m and float(m.group(1)) > 0, f"no compute time for stage {stage}"
        assert re.search(r"^bitserve_steps_in_flight ", text, re.M), "no steps-in-flight gauge"
        print(f"  {stages} stages, {transfer}: all {len(PROMPTS)} requests equal the one-process "
              f"pipeline; {same_as_whole}/{len(PROMPTS) * MAX_TOKENS} tokens equal the unsplit "
              f"model's", flush=True)
    finally:
        channel.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()
    assert "local-" in "\n".join(server.lines), "no local workers were started"
    if split:
        assert f"layers per stage {split} (--pipeline-split)" in "\n".join(server.lines), server.log()


def test_two_stages_int8(ctx):
    check_local_pipeline(ctx, 2, "int8")


def test_three_stages_int8(ctx):
    check_local_pipeline(ctx, 3, "int8")


def test_two_stages_bf16(ctx):
    check_local_pipeline(ctx, 2, "bf16")


def test_two_stages_given_split(ctx):
    # The decode-bytes balance gives the LM head's stage the fewest layers; this split does the
    # opposite, so a side that ignored it would compute at another boundary and differ.
    check_local_pipeline(ctx, 2, "int8", "1,5")


def serve_remote_pipeline(ctx):
    """`serve --worker-listen --pipeline-stages 2` (heartbeat timeout 1.5 s), and a function that
    starts a `bitserve worker` named `name` that joins it."""
    server = ctx.serve(["--worker-listen", "127.0.0.1:0", "--pipeline-stages", "2",
                        "--worker-heartbeat-timeout", "1500"])
    join = server.wait_line(r"workers join at (\S+)", 60).group(1)

    def worker(name):
        w = Process([ctx.args.bitserve, "worker", "--coordinator", join, "--worker-id", name,
                     "--connect-timeout", "20"], name=f"worker {name}")
        ctx.processes.append(w)
        return w
    return server, worker


def test_remote_stage_lost_and_replaced(ctx):
    server, worker = serve_remote_pipeline(ctx)
    w0 = worker("a")
    server.wait_line(r"worker a .*registered for stage 0", 30)
    w1 = worker("b")
    server.wait_listening(60)
    channel, stub, health = stub_for(server)
    try:
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING)
        want = ctx.reference(PROMPTS[0], 2, "int8")
        assert generate(stub, PROMPTS[0]) == want

        t, outcome = start_stream(stub, PROMPTS[1], 200)
        assert outcome["first"].wait(60)
        start = time.time()
        w1.proc.send_signal(signal.SIGKILL)  # the last stage dies mid-stream
        t.join(timeout=30)
        assert not t.is_alive(), "the stream did not end"
        assert outcome.get("code") == grpc.StatusCode.UNAVAILABLE, outcome
        print(f"  stage 1 killed: stream ended UNAVAILABLE after {time.time() - start:.2f} s: "
              f"{outcome['details']}", flush=True)
        wait_readiness(health, health_pb.HealthCheckResponse.NOT_SERVING, 10)
        # The surviving stage registers again; a replacement completes the pipeline.
        w0.wait_line("registering again", 20)
        worker("c")
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING, 60)
        assert generate(stub, PROMPTS[0]) == want, "the rebuilt pipeline differs"
        assert server.proc.poll() is None
    finally:
        channel.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()
    assert w0.proc.wait(timeout=30) == 0, w0.log()


def test_local_stage_restarted(ctx):
    """A local stage worker that dies is started again by serve; the pipeline is rebuilt."""
    server = ctx.serve(["--pipeline-stages", "2", "--worker-heartbeat-timeout", "1500"])
    server.wait_listening(120)
    channel, stub, health = stub_for(server)
    try:
        want = ctx.reference(PROMPTS[2], 2, "int8")
        assert generate(stub, PROMPTS[2]) == want
        pids = subprocess.run(["pgrep", "-P", str(server.proc.pid), "-f", "worker-id local-1"],
                              capture_output=True, text=True).stdout.split()
        assert len(pids) == 1, f"local worker local-1 not found among the server's children: {pids}"
        os.kill(int(pids[0]), signal.SIGKILL)
        start = time.time()
        server.wait_line(r"local worker local-1 ended \(signal 9\); starting it again", 30)
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING, 60)
        got = None
        while time.time() - start < 60:  # the first step after a rebuild fails once (KV state lost)
            try:
                got = generate(stub, PROMPTS[2])
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                time.sleep(0.2)
        assert got == want, f"after the restart: {got}, reference {want}"
        print(f"  local stage 1 killed: restarted and serving the same tokens after "
              f"{time.time() - start:.1f} s", flush=True)
    finally:
        channel.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()


def test_hung_local_stage_replaced(ctx):
    """A local stage worker that hangs (SIGSTOP: alive, silent) is declared lost after the
    heartbeat timeout; serve kills it and starts another, and the rebuilt pipeline serves the same
    tokens. The stream it was serving ends UNAVAILABLE naming the hung worker, not its peer."""
    server = ctx.serve(["--pipeline-stages", "2", "--worker-heartbeat-timeout", "1500"])
    server.wait_listening(120)
    channel, stub, health = stub_for(server)
    hung = None
    try:
        want = ctx.reference(PROMPTS[3], 2, "int8")
        assert generate(stub, PROMPTS[3]) == want
        t, outcome = start_stream(stub, PROMPTS[4], 400)
        assert outcome["first"].wait(60)
        # Stages go by registration order: local-1 may hold either.
        stage = int(server.wait_line(r"worker local-1 \(.*\) registered for stage (\d)", 5).group(1))
        hung = local_worker_pid(server, "local-1")
        os.kill(hung, signal.SIGSTOP)
        start = time.time()
        t.join(timeout=30)
        assert not t.is_alive(), "the stream did not end"
        assert outcome.get("code") == grpc.StatusCode.UNAVAILABLE, outcome
        # The worker that hung is named as lost, not the healthy stage that was told to rejoin.
        assert f"worker local-1 (stage {stage}) lost" in outcome["details"], outcome["details"]
        assert f"worker local-0 (stage {1 - stage}) lost" not in outcome["details"], outcome["details"]
        server.wait_line(r"local worker local-1 \(pid \d+\) is hung \(no heartbeat", 30)
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING, 60)
        assert subprocess.run(["ps", "-o", "stat=", "-p", str(hung)], capture_output=True,
                              text=True).stdout.strip() in ("", "Z"), "the hung worker still runs"
        assert local_worker_pid(server, "local-1") != hung
        got = None
        while time.time() - start < 60:  # the first step after a rebuild fails once (KV state lost)
            try:
                got = generate(stub, PROMPTS[3])
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                time.sleep(0.2)
        assert got == want, f"after the replacement: {got}, reference {want}"
        print(f"  local stage {stage} hung (SIGSTOP): killed, replaced and serving the same tokens after "
              f"{time.time() - start:.1f} s", flush=True)
    finally:
        channel.close()
        if hung is not None:
            try:
                os.kill(hung, signal.SIGCONT)
            except ProcessLookupError:
                pass
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()


def test_hung_remote_stage_fenced(ctx):
    """A remote stage worker that hangs is fenced: a replacement joins and the pipeline serves;
    when the hung one wakes up, its late messages change nothing and it leaves."""
    server, worker = serve_remote_pipeline(ctx)
    w0 = worker("a")
    server.wait_line(r"worker a .*registered for stage 0", 30)
    w1 = worker("b")
    server.wait_listening(60)
    channel, stub, health = stub_for(server)
    try:
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING)
        want = ctx.reference(PROMPTS[5], 2, "int8")
        assert generate(stub, PROMPTS[5]) == want
        w1.proc.send_signal(signal.SIGSTOP)
        server.wait_line(r"worker b \(stage 1\) lost: no heartbeat", 20)
        wait_readiness(health, health_pb.HealthCheckResponse.NOT_SERVING, 10)
        w0.wait_line("registering again", 20)
        worker("c")
        wait_readiness(health, health_pb.HealthCheckResponse.SERVING, 60)
        got = None
        deadline = time.time() + 60
        while got is None and time.time() < deadline:
            try:
                got = generate(stub, PROMPTS[5])
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                time.sleep(0.2)
        assert got == want, f"after the replacement: {got}, reference {want}"
        w1.proc.send_signal(signal.SIGCONT)  # wakes up fenced: it leaves, nothing changes
        assert w1.proc.wait(timeout=30) != 0, "the fenced worker did not leave"
        assert readiness(health) == health_pb.HealthCheckResponse.SERVING
        assert generate(stub, PROMPTS[5]) == want
    finally:
        channel.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()


TESTS = [test_two_stages_int8, test_three_stages_int8, test_two_stages_bf16, test_two_stages_given_split,
         test_remote_stage_lost_and_replaced, test_local_stage_restarted,
         test_hung_local_stage_replaced, test_hung_remote_stage_fenced]


if __name__ == "__main__":
    sys.exit(run_worker_tests(__doc__, TESTS, Context))
