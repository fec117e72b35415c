"""What the tests of worker processes share (pipeline_python_test.py, expert_parallel_python_test.py):
gRPC stubs of a server, a request, a long stream in a thread, readiness, a local worker's pid, and
the main() that runs a test list with every process's log tail on failure. The generated stubs are
loaded on first use (grpc_harness.generate_stubs must have run: the tests' Context does it)."""

import subprocess
import threading
import time

import grpc  # python3-grpcio

from grpc_harness import argument_parser, load_stubs, run_checks

SERVICE = "bitserve.v1.Generation"


def _stubs():
    pb, pb_grpc, health_pb, health_grpc, _, _ = load_stubs()
    return pb, pb_grpc, health_pb, health_grpc


def stub_for(server):
    """(channel, Generation stub, Health stub) of a running Server."""
    _, pb_grpc, _, health_grpc = _stubs()
    channel = grpc.insecure_channel(server.address)
    return channel, pb_grpc.GenerationStub(channel), health_grpc.HealthStub(channel)


def generate(stub, prompt, max_tokens, timeout=120):
    """The token ids of one greedy Generate of token-id `prompt` (EOS ignored)."""
    pb = _stubs()[0]
    ids = []
    for r in stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=prompt),
                                              max_tokens=max_tokens, ignore_eos=True),
                           timeout=timeout):
        ids.extend(r.token_ids)
    return ids


def start_stream(stub, prompt, max_tokens):
    """A long Generate in a thread. Returns (thread, outcome): once outcome["first"] (an Event) is
    set, a token came (or the stream ended); outcome then gets "ok", or "code" and "details"."""
    pb = _stubs()[0]
    outcome = {"first": threading.Event()}

    def stream():
        try:
            for r in stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=prompt),
                                                      max_tokens=max_tokens, ignore_eos=True),
                                   timeout=60):
                if r.token_ids:
                    outcome["first"].set()
            outcome["ok"] = True
        except grpc.RpcError as e:
            outcome["code"], outcome["details"] = e.code(), e.details()
        outcome["first"].set()
    t = threading.Thread(target=stream)
    t.start()
    return t, outcome


def readiness(health):
    health_pb = _stubs()[2]
    return health.Check(health_pb.HealthCheckRequest(service=SERVICE), timeout=10).status


def wait_readiness(health, want, timeout=60):
    deadline = time.time() + timeout
    while readiness(health) != want:
        assert time.time() < deadline, f"readiness is not {want} after {timeout} s"
        time.sleep(0.05)


def local_worker_pid(server, worker_id):
    """The pid of the local worker process `worker_id` that `serve` started."""
    pids = subprocess.run(["pgrep", "-P", str(server.proc.pid), "-f", f"worker-id {worker_id}$"],
                          capture_output=True, text=True).stdout.split()
    assert len(pids) == 1, f"local worker {worker_id} not found among the server's children: {pids}"
    return int(pids[0])


def run_worker_tests(doc, tests, make_context):
    """main(): runs `tests` on make_context(args); after each, every process of ctx.processes is
    killed; a failure prints their log tails and the next test runs. Returns the exit status."""
    args = argument_parser(doc).parse_args()
    ctx = make_context(args)

    def show_logs(test):  # and go on with the next check
        for p in ctx.processes:
            print(f"--- {p.name} log tail:\n{p.log(15)}")
        return False

    def stop_processes(test):
        for p in ctx.processes:
            p.kill()
        ctx.processes.clear()
    try:
        failed = run_checks(tests, ctx, on_failure=show_logs, after_each=stop_processes)
    finally:
        ctx.close()
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    print("all passed")
    return 0
