#!/usr/bin/python3
"""`bitserve serve --worker-listen` with `bitserve worker` processes, driven by python3-grpcio:
the remote worker serves what the in-process engine computes; a worker killed (SIGKILL) or hung
(SIGSTOP: its stream stays open, its heartbeats stop) mid-stream ends its requests with UNAVAILABLE
within seconds, readiness goes NOT_SERVING while liveness stays SERVING and the coordinator stays
up; a replacement worker restores service; SIGTERM shuts the worker down with the server.

    worker_python_test.py --bitserve BUILD/tools/bitserve --proto-dir rpc/proto [--protoc protoc]
"""

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc  # python3-grpcio

from grpc_harness import Process, Server, argument_parser, generate_stubs, load_stubs, run_checks

SERVICE = "bitserve.v1.Generation"
HEARTBEAT_TIMEOUT_MS = 1500


class Context:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="bitserve_worker_test_")
        generate_stubs(args.protoc, args.proto_dir, os.path.join(self.tmp, "stubs"))
        global pb, pb_grpc, health_pb, health_grpc
        pb, pb_grpc, health_pb, health_grpc, _, _ = load_stubs()
        self.model = os.path.join(self.tmp, "model")
        subprocess.run([args.bitserve, "make-model", "--preset", "test-gqa", "--out", self.model],
                       check=True, stdout=subprocess.DEVNULL)
        self.server = Server(args.bitserve, self.model,
                             ["--worker-listen", "127.0.0.1:0",
                              "--worker-heartbeat-timeout", str(HEARTBEAT_TIMEOUT_MS),
                              "--block-size", "8", "--num-kv-blocks", "512"])
        self.worker_address = self.server.wait_line(r"workers join at (\S+)", 60).group(1)
        self.workers = []
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = pb_grpc.GenerationStub(self.channel)
        self.health = health_grpc.HealthStub(self.channel)

    def start_worker(self, name):
        w = Process([self.args.bitserve, "worker", "--coordinator", self.worker_address,
                     "--worker-id", name, "--connect-timeout", "20"], name=f"worker {name}")
        self.workers.append(w)
        return w

    def close(self):
        self.channel.close()
        for p in [self.server, *self.workers]:
            p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def health_status(self, service):
        return self.health.Check(health_pb.HealthCheckRequest(service=service), timeout=10).status

    def wait_readiness(self, want, timeout=30):
        deadline = time.time() + timeout
        while True:
            status = self.health_status(SERVICE)
            if status == want:
                return
            assert time.time() < deadline, f"readiness {status}, want {want} after {timeout} s"
            time.sleep(0.05)

    def cli_generate(self, ids, max_tokens):
        out = subprocess.run([self.args.bitserve, "generate", "--model", self.model, "--prompt-ids",
                              ",".join(map(str, ids)), "--max-tokens", str(max_tokens),
                              "--ignore-eos", "--json"],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)["token_ids"]

    def generate_ids(self, ids, max_tokens, timeout=60):
        out = []
        for r in self.stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=ids),
                                                       max_tokens=max_tokens, ignore_eos=True),
                                    timeout=timeout):
            out.extend(r.token_ids)
        return out


def expect_unavailable(fn):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, f"{e.code()}: {e.details()}"
        return e.details()
    raise AssertionError("expected UNAVAILABLE, the call succeeded")


def test_not_ready_until_a_worker_joins(ctx):
    assert ctx.health_status("") == health_pb.HealthCheckResponse.SERVING  # liveness
    assert ctx.health_status(SERVICE) == health_pb.HealthCheckResponse.NOT_SERVING
    details = expect_unavailable(lambda: ctx.generate_ids([1, 2], 2))
    assert "starting" in details, details


def test_worker_joins_and_serves_the_engines_tokens(ctx):
    ctx.start_worker("w1")
    ctx.server.wait_listening(60)
    ctx.wait_readiness(health_pb.HealthCheckResponse.SERVING)
    prompts = [[1, 7 + i, 30 + 2 * i, 5] for i in range(12)]
    expected = [ctx.cli_generate(p, 10) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        got = list(pool.map(lambda p: ctx.generate_ids(p, 10), prompts))
    for i, (e, g) in enumerate(zip(expected, got)):
        assert e == g, f"prompt {i}: engine {e}, remote worker {g}"


def lose_worker_mid_stream(ctx, worker, how):
    """Streams a long request, does `how` to the worker after the first tokens, and checks that
    the stream ends UNAVAILABLE within the detection bound and the server reflects it."""
    first = threading.Event()
    outcome = {}

    def stream():
        try:
            for r in ctx.stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2, 3]),
                                                          max_tokens=900, ignore_eos=True),
                                       timeout=120):
                if r.token_ids:
                    first.set()
            outcome["ok"] = True
        except grpc.RpcError as e:
            outcome["code"], outcome["details"] = e.code(), e.details()
        first.set()
    t = threading.Thread(target=stream)
    t.start()
    assert first.wait(60), "no token within 60 s"
    start = time.time()
    how()
    t.join(timeout=30)
    elapsed = time.time() - start
    assert not t.is_alive(), "the stream did not end 30 s after the worker was lost"
    assert outcome.get("code") == grpc.StatusCode.UNAVAILABLE, outcome
    assert "lost" in outcome["details"], outcome
    # Detection: at once for a dead process (its connection breaks), within the heartbeat
    # timeout (+ margin) for a hung one.
    assert elapsed < HEARTBEAT_TIMEOUT_MS / 1000 + 5, f"detected after {elapsed:.1f} s"
    print(f"  {worker.name}: stream ended UNAVAILABLE {elapsed:.2f} s after the loss: "
          f"{outcome['details']}", flush=True)
    ctx.wait_readiness(health_pb.HealthCheckResponse.NOT_SERVING, timeout=5)
    assert ctx.health_status("") == health_pb.HealthCheckResponse.SERVING
    details = expect_unavailable(lambda: ctx.generate_ids([1, 2], 2))
    assert "no worker" in details, details
    assert ctx.server.proc.poll() is None, "the coordinator died"


def test_killed_worker(ctx):
    worker = ctx.workers[-1]
    lose_worker_mid_stream(ctx, worker, lambda: worker.proc.send_signal(signal.SIGKILL))
    worker.proc.wait(timeout=10)


def test_replacement_worker_then_hung_worker(ctx):
    worker = ctx.start_worker("w2")
    ctx.wait_readiness(health_pb.HealthCheckResponse.SERVING)
    assert ctx.generate_ids([1, 9, 4], 8) == ctx.cli_generate([1, 9, 4], 8)
    lose_worker_mid_stream(ctx, worker, lambda: worker.proc.send_signal(signal.SIGSTOP))
    worker.kill()


def test_sigterm_stops_server_and_worker(ctx):
    worker = ctx.start_worker("w3")
    ctx.wait_readiness(health_pb.HealthCheckResponse.SERVING)
    assert ctx.generate_ids([1, 9, 4], 8) == ctx.cli_generate([1, 9, 4], 8)
    ctx.server.proc.send_signal(signal.SIGTERM)
    assert ctx.server.proc.wait(timeout=60) == 0, ctx.server.log()
    assert worker.proc.wait(timeout=30) == 0, worker.log()


TESTS = [
    test_not_ready_until_a_worker_joins,
    test_worker_joins_and_serves_the_engines_tokens,
    test_killed_worker,
    test_replacement_worker_then_hung_worker,
    test_sigterm_stops_server_and_worker,  # last: stops the server
]


def main():
    args = argument_parser(__doc__).parse_args()
    ctx = Context(args)
    try:
        # Later checks depend on earlier ones: stop at the first failure.
        failed = run_checks(TESTS, ctx, on_failure=lambda test: True)
    finally:
        ctx.close()
    if failed:
        print(f"failed: {', '.join(failed)}\nserver log tail:\n{ctx.server.log()}")
        for w in ctx.workers:
            print(f"{w.name} log tail:\n{w.log(10)}")
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
