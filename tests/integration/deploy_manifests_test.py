#!/usr/bin/python3
"""deploy/kubernetes/*.yaml against the real binaries: the manifests parse, their ports, probes
and grace period agree with each other and with the flags they pass, and the exact command lines
they give the coordinator and the worker run: with the cluster-only parts swapped for loopback
ones (free ports, a generated model, cpu instead of cuda:0, 127.0.0.1 as the pod IP) the worker
joins, readiness turns SERVING, a request is served, and SIGTERM ends both with exit 0.

    deploy_manifests_test.py --bitserve BUILD/tools/bitserve --proto-dir rpc/proto [--protoc P]
"""

import json
import os
import shutil
import urllib.request
import signal
import subprocess
import sys
import tempfile

import grpc  # python3-grpcio
import yaml  # python3-yaml

from grpc_harness import Process, argument_parser, free_port, generate_stubs, load_stubs

DEPLOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "kubernetes")


def load(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def container(docs, kind="Deployment"):
    (deployment,) = [d for d in docs if d["kind"] == kind]
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, c


def flags(args):
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--"))


def main():
    args = argument_parser(__doc__).parse_args()

    coordinator_docs, worker_docs = load("coordinator.yaml"), load("worker.yaml")
    deployment, coord = container(coordinator_docs)
    _, work = container(worker_docs)
    cf, wf = flags(coord["args"]), flags(work["args"])
    assert coord["args"][0] == "serve" and work["args"][0] == "worker"

    # Consistency of the manifests among themselves.
    ports = {p["name"]: p["containerPort"] for p in coord["ports"]}
    assert cf["listen"].endswith(f":{ports['grpc']}"), (cf["listen"], ports)
    assert cf["worker-listen"].endswith(f":{ports['workers']}"), (cf["worker-listen"], ports)
    assert cf["metrics-listen"].endswith(f":{ports['metrics']}"), (cf["metrics-listen"], ports)
    assert cf["http-listen"].endswith(f":{ports['http']}"), (cf["http-listen"], ports)
    # The join secret: both read the same file of the same Secret.
    assert cf["worker-secret-file"] == wf["secret-file"], (cf, wf)
    for docs, c in ((coordinator_docs, coord), (worker_docs, work)):
        d = [d for d in docs if d["kind"] == "Deployment"][0]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert cf["worker-secret-file"].startswith(mounts["worker-secret"] + "/"), mounts
        assert volumes["worker-secret"]["secret"]["secretName"] == "bitserve-worker-secret"
    (service,) = [d for d in coordinator_docs if d["kind"] == "Service"]
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for name, p in service_ports.items():
        assert p["targetPort"] in ports, f"service port {name} targets {p['targetPort']}"
    host, port = wf["coordinator"].rsplit(":", 1)
    assert host == service["metadata"]["name"], host
    assert int(port) == service_ports["workers"]["port"], port
    assert coord["readinessProbe"]["grpc"]["service"] == "bitserve.v1.Generation"
    assert "service" not in coord["livenessProbe"]["grpc"], "liveness is the empty service name"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(cf["drain-timeout"]), f"grace {grace} s <= drain timeout"
    assert any(e["name"] == "POD_IP" for e in work["env"]) and "$(POD_IP)" in wf["transport-host"]
    print("PASS manifests agree with each other")

    # The same command lines, run on loopback.
    tmp = tempfile.mkdtemp(prefix="bitserve_deploy_test_")
    procs = []
    try:
        generate_stubs(args.protoc, args.proto_dir, os.path.join(tmp, "stubs"))
        pb, pb_grpc, health_pb, health_grpc, _, _ = load_stubs()
        model = os.path.join(tmp, "model")
        subprocess.run([args.bitserve, "make-model", "--preset", "test-gqa", "--out", model],
                       check=True, stdout=subprocess.DEVNULL)
        api, join, metrics, http = free_port(), free_port(), free_port(), free_port()
        secret = os.path.join(tmp, "worker-secret")
        with open(secret, "w") as f:
            f.write(os.urandom(16).hex() + "\n")
        local = {cf["listen"]: f"127.0.0.1:{api}", cf["worker-listen"]: f"127.0.0.1:{join}",
                 cf["metrics-listen"]: f"127.0.0.1:{metrics}", wf["coordinator"]: f"127.0.0.1:{join}",
                 cf["http-listen"]: f"127.0.0.1:{http}", cf["worker-secret-file"]: secret,
                 cf["model"]: model, "cuda:0": "cpu", "$(POD_IP)": "127.0.0.1"}

        def localize(argv):
            out = []
            for a in argv:
                for cluster, here in local.items():
                    a = a.replace(cluster, here)
                out.append(a)
            return out
        server = Process([args.bitserve] + localize(coord["args"]), name="coordinator")
        procs.append(server)
        server.wait_line(r"workers join at", 60)
        worker = Process([args.bitserve] + localize(work["args"]), name="worker")
        procs.append(worker)
        server.wait_line(r"listening on", 60)
        channel = grpc.insecure_channel(f"127.0.0.1:{api}")
        health = health_grpc.HealthStub(channel)
        status = health.Check(health_pb.HealthCheckRequest(service="bitserve.v1.Generation"), timeout=10)
        assert status.status == health_pb.HealthCheckResponse.SERVING, status
        stub = pb_grpc.GenerationStub(channel)
        tokens = []
        for r in stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2, 3]), max_tokens=4,
                                                  ignore_eos=True), timeout=60):
            tokens.extend(r.token_ids)
        assert len(tokens) == 4, tokens
        channel.close()
        # The HTTP API of the same coordinator.
        body = json.dumps({"prompt": [1, 2, 3], "max_tokens": 3, "ignore_eos": True}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{http}/v1/completions", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert json.load(r)["usage"]["completion_tokens"] == 3
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0, server.log()
        assert worker.proc.wait(timeout=30) == 0, worker.log()
        print("PASS the manifests' command lines serve on loopback")
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
