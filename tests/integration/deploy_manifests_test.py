#!/usr/bin/python3
"""deploy/kubernetes against a validator and the real binaries. Every overlay (single-node,
pipeline, expert-parallel) is rendered with `kubectl kustomize`, linted (yamllint) and validated
offline (deploy/kubernetes/validate.mjs: Kubernetes schemas, the LeaderWorkerSet schema, unknown
fields); its parts must agree (ports, probes, flags, Secrets and mounts, the group size and the
parallelism, the Service and the disruption budget select the right pods); and the exact command
lines of the leader and its workers run on loopback, with the cluster-only parts swapped for local
ones (free ports, a generated model, cpu instead of cuda:0, 127.0.0.1 as the pod IP and leader
address, the Secrets' files made here: certificates by openssl, an API key, a join secret): the
workers join over mutual TLS with the secret, readiness turns SERVING on the health port, a request
is served over TLS with the key on gRPC and HTTPS, one without the key is refused, and SIGTERM ends
every process with exit 0.

    deploy_manifests_test.py --bitserve BUILD/tools/bitserve --proto-dir rpc/proto [--protoc P]
"""

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import grpc  # python3-grpcio
import yaml  # python3-yaml

from grpc_harness import Process, argument_parser, free_port, generate_stubs, load_stubs

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DEPLOY = os.path.join(ROOT, "deploy", "kubernetes")
OVERLAYS = ("single-node", "pipeline", "expert-parallel")
# The Secrets the manifests mount, as docs/deployment.md tells to create them: name -> files.
SECRETS = {
    "bitserve-api-keys": {"keys"},
    "bitserve-api-tls": {"tls.crt", "tls.key"},
    "bitserve-worker-secret": {"secret"},
    "bitserve-worker-tls": {"ca.crt", "tls.crt", "tls.key"},
}
LWS_ENV = {"LWS_LEADER_ADDRESS", "LWS_GROUP_SIZE", "LWS_WORKER_INDEX"}  # injected by LWS


def kustomize_supports_patches():
    """kubectl >= 1.21 (kustomize >= v4) renders the overlays' `patches`; Debian's kubectl 1.20
    (package kubernetes-client) does not."""
    out = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True,
                         text=True)
    if out.returncode != 0:
        return False
    version = json.loads(out.stdout)["clientVersion"]
    return (int(version["major"]), int(re.match(r"\d+", version["minor"]).group())) >= (1, 21)


def render(directory):
    out = subprocess.run(["kubectl", "kustomize", directory], capture_output=True, text=True)
    assert out.returncode == 0, f"kubectl kustomize {directory}:\n{out.stderr}"
    return out.stdout


def validate(text, what):
    out = subprocess.run(["node", os.path.join(DEPLOY, "validate.mjs")], input=text,
                         capture_output=True, text=True)
    assert out.returncode == 0, f"{what} is not valid:\n{out.stdout}{out.stderr}"


def validator_refuses_bad_manifests(text):
    """The validator is not a rubber stamp: each mistake in a rendered overlay is named."""
    mistakes = {
        "periodSeconds: 2": ("periodSecond: 2", "periodSecond: unknown field"),
        "restartPolicy: None": ("restartPolicy: Never", "restartPolicy: must be equal to one"),
        "containerPort: 8000": ('containerPort: "8000"', "containerPort must be integer"),
        "maxUnavailable: 1\n  selector": ("maxUnavailabl: 1\n  selector",
                                           "maxUnavailabl: unknown field"),
    }
    for right, (wrong, expected) in mistakes.items():
        assert right in text, f"the rendered overlay no longer has {right!r}"
        out = subprocess.run(["node", os.path.join(DEPLOY, "validate.mjs")],
                             input=text.replace(right, wrong, 1), capture_output=True, text=True)
        assert out.returncode == 1 and expected in out.stdout, \
            f"{wrong!r} was not refused with {expected!r}:\n{out.stdout}{out.stderr}"


def flags(args):
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def file_secret(path, container, pod):
    """The Secret (name, file) that provides `path` through the container's mounts."""
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    directory, name = os.path.split(path)
    assert directory in mounts, f"{path}: no volume mounted at {directory}"
    volume = volumes[mounts[directory]]
    assert "secret" in volume, f"{path}: volume {volume['name']} is not a Secret"
    secret = volume["secret"]["secretName"]
    assert secret in SECRETS and name in SECRETS[secret], f"{path}: {secret} has no file {name}"
    return secret, name


def check_overlay(docs, overlay):
    """The rendered overlay's parts agree with each other; returns what running it needs."""
    (lws,) = [d for d in docs if d["kind"] == "LeaderWorkerSet"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    (budget,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    template = lws["spec"]["leaderWorkerTemplate"]
    leader_pod, worker_pod = template["leaderTemplate"]["spec"], template["workerTemplate"]["spec"]
    (leader,) = leader_pod["containers"]
    (worker,) = worker_pod["containers"]
    lf, wf = flags(leader["args"]), flags(worker["args"])
    assert leader["args"][0] == "serve" and worker["args"][0] == "worker"

    # Ports, probes and draining.
    ports = {p["name"]: p["containerPort"] for p in leader["ports"]}
    for flag, name in (("listen", "grpc"), ("http-listen", "http"), ("health-listen", "health"),
                       ("metrics-listen", "metrics"), ("worker-listen", "workers")):
        if flag in lf:
            assert port_of(lf[flag]) == ports[name], (flag, lf[flag], ports)
        else:
            assert name not in ports, f"port {name} declared but --{flag} not set"
    for probe in ("livenessProbe", "readinessProbe"):
        assert leader[probe]["grpc"]["port"] == ports["health"], "probes use the health port"
    assert leader["readinessProbe"]["grpc"]["service"] == "bitserve.v1.Generation"
    assert "service" not in leader["livenessProbe"]["grpc"], "liveness is the empty service name"
    grace = leader_pod["terminationGracePeriodSeconds"]
    assert grace > float(lf["drain-timeout"]), f"grace {grace} s <= drain timeout"

    # The public API is protected.
    for flag in ("api-key-file", "tls-cert", "tls-key"):
        file_secret(lf[flag], leader, leader_pod)

    # The group's shape.
    size = template["size"]
    stages, ranks = int(lf.get("pipeline-stages", 1)), int(lf.get("expert-parallel", 1))
    if "worker-listen" in lf:
        assert size == 1 + stages * ranks, f"size {size} != 1 + {stages} stages x {ranks} ranks"
        # The worker link: the join secret and mutual TLS, the same files on both sides.
        assert file_secret(lf["worker-secret-file"], leader, leader_pod) == \
            file_secret(wf["secret-file"], worker, worker_pod)
        for ours, theirs in (("worker-tls-cert", "tls-cert"), ("worker-tls-key", "tls-key"),
                             ("worker-tls-client-ca", "tls-ca")):
            assert file_secret(lf[ours], leader, leader_pod) == \
                file_secret(wf[theirs], worker, worker_pod), (ours, theirs)
        assert wf["coordinator"] == f"$(LWS_LEADER_ADDRESS):{ports['workers']}", wf["coordinator"]
        assert "nvidia.com/gpu" in worker["resources"]["limits"]
    else:
        assert size == 1 and stages == ranks == 1, f"{overlay}: no workers, size {size}"
        assert "nvidia.com/gpu" in leader["resources"]["limits"]
    # Every $(VAR) of the args is defined in the container or injected by LeaderWorkerSet.
    for c in (leader, worker):
        defined = {e["name"] for e in c.get("env", [])} | LWS_ENV
        for var in re.findall(r"\$\((\w+)\)", " ".join(c["args"])):
            assert var in defined, f"{c['name']}: $({var}) is not defined"

    # The Service reaches the leaders only; the budget covers every pod.
    leader_labels = template["leaderTemplate"]["metadata"]["labels"]
    worker_labels = template["workerTemplate"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= leader_labels.items() and not selector.items() <= \
        worker_labels.items(), "the Service must select the leaders, not the workers"
    for p in service["spec"]["ports"]:
        assert p["targetPort"] in ports, f"Service port {p['name']} targets {p['targetPort']}"
    budget_selector = budget["spec"]["selector"]["matchLabels"]
    assert budget_selector.items() <= leader_labels.items()
    assert budget_selector.items() <= worker_labels.items()
    return {"leader": leader["args"], "worker": worker["args"], "size": size,
            "moe": ranks > 1}


def make_secrets(tmp):
    """The four Secrets' files, as docs/deployment.md makes them, for 127.0.0.1."""
    def run(*cmd):
        subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=bitserve test CA")

    def leaf(name, extensions):
        run("openssl", "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        with open(os.path.join(tmp, f"{name}.ext"), "w") as f:
            f.write(extensions + "\n")
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    leaf("api", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    # One certificate for both ends of the worker link (server and client), as the docs make it.
    leaf("link", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                 "extendedKeyUsage=serverAuth,clientAuth")
    files = {}
    for secret, names in SECRETS.items():
        os.makedirs(os.path.join(tmp, secret))
        for name in names:
            files[(secret, name)] = os.path.join(tmp, secret, name)
    for name, source in (("tls.crt", "api.crt"), ("tls.key", "api.key")):
        shutil.copy(os.path.join(tmp, source), files[("bitserve-api-tls", name)])
    for name, source in (("ca.crt", "ca.crt"), ("tls.crt", "link.crt"), ("tls.key", "link.key")):
        shutil.copy(os.path.join(tmp, source), files[("bitserve-worker-tls", name)])
    with open(files[("bitserve-api-keys", "keys")], "w") as f:
        f.write("test-key-" + os.urandom(8).hex() + "\n")
    with open(files[("bitserve-worker-secret", "secret")], "w") as f:
        f.write(os.urandom(16).hex() + "\n")
    return files


def run_on_loopback(plan, args, tmp, secrets, models, stubs):
    """The overlay's leader and workers, run here as the manifests start them."""
    pb, pb_grpc, health_pb, health_grpc, _, _ = stubs
    lf = flags(plan["leader"])
    local = {}
    for flag in ("listen", "http-listen", "health-listen", "metrics-listen", "worker-listen"):
        if flag in lf:
            local[f"--{flag}={lf[flag]}"] = f"--{flag}=127.0.0.1:{free_port()}"
    model = models["test-moe" if plan["moe"] else "test-gqa"]

    def localize(argv, pod):
        out = []
        for a in argv:
            a = local.get(a, a)
            if a.startswith("--") and "=" in a:
                flag, value = a.split("=", 1)
                if value.startswith("/etc/bitserve/"):
                    # /etc/bitserve/<mount>/<file>: the mount is named after its Secret's role.
                    secret = "bitserve-" + value.split("/")[3]
                    value = secrets[(secret, os.path.basename(value))]
                elif flag == "--model":
                    value = model
                a = f"{flag}={value}"
            a = a.replace("cuda:0", "cpu").replace("$(POD_IP)", "127.0.0.1")
            a = a.replace("$(POD_NAME)", pod).replace("$(LWS_LEADER_ADDRESS)", "127.0.0.1")
            if a.startswith("--coordinator="):
                a = "--coordinator=" + local_address(local, "worker-listen")
            out.append(a)
        return out

    procs = []
    try:
        leader = Process([args.bitserve] + localize(plan["leader"], "bitserve-0"),
                         name="leader")
        procs.append(leader)
        for i in range(1, plan["size"]):
            leader.wait_line(r"workers join at", 60)
            procs.append(Process([args.bitserve] + localize(plan["worker"], f"bitserve-0-{i}"),
                                 name=f"worker {i}"))
        leader.wait_line(r"listening on .*\(TLS\)", 60)

        health = health_grpc.HealthStub(
            grpc.insecure_channel(local_address(local, "health-listen")))
        status = health.Check(health_pb.HealthCheckRequest(service="bitserve.v1.Generation"),
                              timeout=10)
        assert status.status == health_pb.HealthCheckResponse.SERVING, status

        with open(secrets[("bitserve-worker-tls", "ca.crt")], "rb") as f:
            ca = f.read()
        with open(secrets[("bitserve-api-keys", "keys")]) as f:
            key = f.read().strip()
        channel = grpc.secure_channel(local_address(local, "listen"),
                                      grpc.ssl_channel_credentials(root_certificates=ca))
        stub = pb_grpc.GenerationStub(channel)
        request = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2, 3]), max_tokens=4,
                                     ignore_eos=True)
        tokens = []
        for r in stub.Generate(request, timeout=60,
                               metadata=(("authorization", f"Bearer {key}"),)):
            tokens.extend(r.token_ids)
        assert len(tokens) == 4, tokens
        try:
            list(stub.Generate(request, timeout=60))
            raise AssertionError("a request without the API key was served")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
        channel.close()

        context = ssl.create_default_context(cafile=secrets[("bitserve-worker-tls", "ca.crt")])
        body = json.dumps({"prompt": [1, 2, 3], "max_tokens": 3, "ignore_eos": True}).encode()
        url = f"https://{local_address(local, 'http-listen')}/v1/completions"
        req = urllib.request.Request(url, body, {"Content-Type": "application/json",
                                                "Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=60, context=context) as r:
            assert json.load(r)["usage"]["completion_tokens"] == 3
        try:
            urllib.request.urlopen(urllib.request.Request(url, body), timeout=60,
                                   context=context)
            raise AssertionError("an HTTP request without the API key was served")
        except urllib.error.HTTPError as e:
            assert e.code == 401, e

        leader.proc.send_signal(signal.SIGTERM)
        assert leader.proc.wait(timeout=60) == 0, leader.log()
        for p in procs[1:]:
            assert p.proc.wait(timeout=30) == 0, p.log()
    except Exception:
        for p in procs:
            print(f"--- {p.name} (exit {p.proc.poll()}):\n{p.log()}", flush=True)
        raise
    finally:
        for p in procs:
            p.kill()


def local_address(local, flag):
    (value,) = [v for k, v in local.items() if k.startswith(f"--{flag}=")]
    return value.split("=", 1)[1]


def main():
    args = argument_parser(__doc__).parse_args()
    for tool in ("kubectl", "node", "yamllint", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (scripts/install-deps.sh installs it)")

    lint = subprocess.run(["yamllint", "-s", "-c", os.path.join(DEPLOY, ".yamllint"),
                           os.path.join(DEPLOY, "base"), os.path.join(DEPLOY, "overlays")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, f"yamllint:\n{lint.stdout}{lint.stderr}"
    print("PASS yamllint")

    plans = {}
    if kustomize_supports_patches():
        directories = [("base", os.path.join(DEPLOY, "base"))] + \
            [(o, os.path.join(DEPLOY, "overlays", o)) for o in OVERLAYS]
        for name, directory in directories:
            text = render(directory)
            validate(text, name)
            plans[name] = check_overlay([d for d in yaml.safe_load_all(text) if d], name)
            print(f"PASS {name}: renders, validates, its parts agree")
            if name == "pipeline":
                validator_refuses_bad_manifests(text)
                print("PASS the validator names a misspelt field, a bad enum, a string port")
    else:
        # The base has no patches: it renders with any kustomize.
        print("SKIP the overlays: this kubectl's kustomize is older than v4 and cannot render "
              "`patches` (Debian's kubernetes-client is 1.20; use kubectl >= 1.21)")
        text = render(os.path.join(DEPLOY, "base"))
        validate(text, "base")
        plans["base"] = check_overlay([d for d in yaml.safe_load_all(text) if d], "base")
        print("PASS base: renders, validates, its parts agree")

    tmp = tempfile.mkdtemp(prefix="bitserve_deploy_test_")
    try:
        generate_stubs(args.protoc, args.proto_dir, os.path.join(tmp, "stubs"))
        stubs = load_stubs()
        secrets = make_secrets(tmp)
        models = {}
        for preset in ("test-gqa", "test-moe"):
            models[preset] = os.path.join(tmp, preset)
            subprocess.run([args.bitserve, "make-model", "--preset", preset, "--out",
                            models[preset]], check=True, stdout=subprocess.DEVNULL)
        for name, plan in plans.items():
            run_on_loopback(plan, args, tmp, secrets, models, stubs)
            print(f"PASS {name}: the leader and its {plan['size'] - 1} worker(s) serve on "
                  "loopback over TLS with the API key", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
