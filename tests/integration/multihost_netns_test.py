#!/usr/bin/python3
"""Several hosts on one machine: network namespaces, one per node, joined by veth pairs to a
bridge in a namespace of its own (a switch), made and removed here. The coordinator runs in one
node, CPU workers in the others; the worker link is mutual TLS plus a join secret, stages reach
each other on their node's address (--transport-host). No namespace has a route anywhere else:
the traffic never leaves the machine. Checks, in order, on one coordinator:

  * a pipeline of two worker nodes gives exactly the greedy tokens of the one-process pipeline
    (`bitserve generate --pipeline-stages 2`);
  * a node cut off (its switch port down) while a long request streams: the coordinator declares
    the worker lost within the heartbeat timeout (measured, printed), the request ends UNAVAILABLE
    naming it, readiness turns NOT_SERVING, the surviving stage registers again;
  * the link comes back: the cut-off worker learns it was fenced and exits 1 (docs/deployment.md
    "Failure"); started again on its node, as Kubernetes would, it rejoins and the group serves
    the same tokens;
  * the node is cut off again and a replacement joins from a third node: the same tokens; the
    fenced worker, still cut off, notices by itself (keepalive, rpc/worker.h) and exits 1;
  * the coordinator's node cut off: it declares its workers lost, they notice and exit 1 within
    the keepalive time + timeout (measured); started again once the link is back, they rebuild
    the group;
  * a worker with a certificate of another CA, and one with a wrong join secret, are refused with
    a log line on the coordinator (gRPC's "Handshake failed ... certificate verify failed";
    `refused a worker from ADDR: join secret missing or wrong`, ADDR the node's address) and exit
    1 naming the reason (the TLS handshake that refused it; the join secret); the group keeps
    serving;
  * SIGTERM stops the coordinator and its workers with exit 0.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN: `ip netns add`, veth, setns); where namespaces are not
permitted it prints SKIP with the reason and exits 77 (ctest's SKIP_RETURN_CODE).

    multihost_netns_test.py --bitserve BUILD/tools/bitserve --proto-dir rpc/proto [--protoc protoc]
"""

import atexit
import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# No grpc import here: the test enters the coordinator's namespace first (see main).
from grpc_harness import Process, argument_parser, generate_stubs, load_stubs, run_checks

SKIP = 77
HEARTBEAT_TIMEOUT_MS = 1500
KEEPALIVE_S = 5 + 5  # a worker's keepalive time + timeout (rpc/worker.h): it notices a lost link
DETECTION_MARGIN_S = 1.5  # scheduling slack on a loaded 2-core CI machine
PREFIX = f"bitserve-mh-{os.getpid()}-"  # namespace names; leftovers of dead runs are removed
NODES = {"coord": 1, "node1": 11, "node2": 12, "node3": 13}  # host part of each node's address
PROMPTS = [[1, 17, 300 + 7 * i, 45, 9 + i] for i in range(3)]
MAX_TOKENS = 16
LONG_TOKENS = 480  # about 3 s on 48 layers: still streaming when its node is cut off
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def setns(fd, what):
    """Moves the calling thread (threads it starts later follow) into network namespace `fd`."""
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns {what}: {os.strerror(err)}")


def remove_stale_namespaces():
    """Namespaces of earlier runs of this test whose process is gone (killed by a timeout)."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        m = re.match(r"(bitserve-mh-(\d+)-\S+)", line)
        if not m or m.group(1).startswith(PREFIX):
            continue
        try:
            os.kill(int(m.group(2)), 0)
        except ProcessLookupError:
            ip("netns", "delete", m.group(1), check=False)


def pick_subnet():
    """A 10.x.y.0/24 none of the host's routes covers (the namespaces have their own routing
    tables anyway: this only keeps addresses in logs unambiguous)."""
    taken = []
    for line in ip("-4", "route", check=False).stdout.splitlines():
        first = line.split()[0] if line.split() else "default"
        if first != "default":
            taken.append(ipaddress.ip_network(first, strict=False))
    for i in range(256):
        net = ipaddress.ip_network(f"10.{(213 + i) % 256}.{os.getpid() % 256}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError("no free 10.x.y.0/24")


class Network:
    """The namespaces: PREFIX+switch holds bridge br0; each node's eth0 is a veth whose peer is
    the switch port p-NODE."""

    def __init__(self):
        self.subnet = pick_subnet()
        self.made = []
        self.host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.entered = False

    def ns(self, node):
        return PREFIX + node

    def address(self, node):
        return str(self.subnet.network_address + NODES[node])

    def create_switch(self):
        """The first namespace and the bridge: where this fails, namespaces are not permitted."""
        self._add(self.ns("switch"))
        ip("-n", self.ns("switch"), "link", "add", "br0", "type", "bridge")
        ip("-n", self.ns("switch"), "link", "set", "br0", "up")

    def add_node(self, node):
        ns, sw, port = self.ns(node), self.ns("switch"), f"p-{node}"
        self._add(ns)
        ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", sw)
        ip("-n", sw, "link", "set", port, "master", "br0")
        ip("-n", sw, "link", "set", port, "up")
        ip("-n", ns, "addr", "add", f"{self.address(node)}/{self.subnet.prefixlen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")

    def set_link(self, node, up):
        """The node's switch port up or down: a cable pulled, the node's own stack untouched."""
        ip("-n", self.ns("switch"), "link", "set", f"p-{node}", "up" if up else "down")

    def enter(self, node):
        """Moves this thread, and the threads it starts from now on, into `node`'s namespace."""
        fd = os.open(f"/run/netns/{self.ns(node)}", os.O_RDONLY)
        try:
            setns(fd, self.ns(node))
        finally:
            os.close(fd)
        self.entered = True

    def _add(self, ns):
        ip("netns", "add", ns)
        self.made.append(ns)

    def remove(self):
        if self.entered:
            setns(self.host_ns, "back to the host's namespace")
            self.entered = False
        for ns in reversed(self.made):
            ip("netns", "delete", ns, check=False)
        self.made.clear()


class NodeProcess(Process):
    """A bitserve process run in a node's namespace (killed if this test dies: pdeathsig)."""

    def __init__(self, net, node, cmd, name):
        super().__init__(cmd, name, where=f" on {node}",
                         prefix=["ip", "netns", "exec", net.ns(node), "setpriv", "--pdeathsig",
                                 "KILL", "--"])


class Context:
    def __init__(self, args, net, tmp):
        self.bitserve = os.path.abspath(args.bitserve)
        self.net = net
        self.tmp = tmp
        self.model = os.path.join(tmp, "model")
        self.processes = []
        self.server = None
        self.join = None
        self.workers = {}  # name -> NodeProcess
        self.references = {}

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self, node, cmd, name):
        p = NodeProcess(self.net, node, [self.bitserve, *cmd], name)
        self.processes.append(p)
        return p

    def worker(self, node, worker_id, cert="worker", secret="secret"):
        """`bitserve worker` on `node`: the CA's client certificate `cert` and the join secret
        file `secret` unless told otherwise."""
        cmd = ["worker", "--coordinator", self.join, "--worker-id", worker_id,
               "--transport-host", self.net.address(node), "--connect-timeout", "3",
               "--tls-ca", self.path("ca.pem"), "--tls-cert", self.path(f"{cert}.pem"),
               "--tls-key", self.path(f"{cert}.key"), "--secret-file", self.path(secret)]
        p = self.start(node, cmd, f"worker {worker_id} on {node}")
        self.workers[worker_id] = p
        return p

    def reference(self, prompt, max_tokens=MAX_TOKENS):
        key = (tuple(prompt), max_tokens)
        if key not in self.references:
            out = subprocess.run([self.bitserve, "generate", "--model", self.model, "--prompt-ids",
                                  ",".join(map(str, prompt)), "--max-tokens", str(max_tokens),
                                  "--ignore-eos", "--json", "--pipeline-stages", "2"],
                                 check=True, capture_output=True, text=True).stdout
            self.references[key] = json.loads(out)["token_ids"]
        return self.references[key]

    def check_tokens(self, what):
        """Every prompt gives the reference tokens; the first step after a pipeline is rebuilt
        fails once UNAVAILABLE (the KV cache of the old one is gone), so that is retried."""
        deadline = time.monotonic() + 60
        for i, prompt in enumerate(PROMPTS):
            while True:
                try:
                    got = helpers.generate(self.stub, prompt, MAX_TOKENS, timeout=60)
                    break
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                    assert time.monotonic() < deadline, f"{what}: still UNAVAILABLE: {e.details()}"
                    time.sleep(0.2)
            want = self.reference(prompt)
            assert got == want, f"{what}: prompt {i}: {got}, want {want}"

    def registered(self, worker_id, node, stage, since=0):
        """Waits for the coordinator's line: `worker_id` registered from `node`'s address."""
        self.server.wait_line(rf"worker {worker_id} \(cpu, ipv4:{re.escape(self.net.address(node))}"
                              rf":\d+\) registered for stage {stage}", 30, since)

    def readiness(self):
        return helpers.readiness(self.health)

    def wait_readiness(self, want, timeout):
        helpers.wait_readiness(self.health, want, timeout)


def make_certificates(tmp, coordinator_ip):
    """In `tmp`: a CA; the coordinator's certificate (SAN: its node's address and a name); a
    worker client certificate; a client certificate of another (rogue) CA. EC keys: fast."""

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    def ca(name):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj",
                f"/CN=bitserve test {name}", "-days", "2")

    def leaf(name, issuer, ext):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        with open(os.path.join(tmp, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey",
                f"{issuer}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext")
    ca("ca")
    ca("rogue")
    leaf("coordinator", "ca", f"subjectAltName=IP:{coordinator_ip},DNS:coordinator.bitserve.test")
    leaf("worker", "ca", "extendedKeyUsage=clientAuth")
    leaf("intruder", "rogue", "extendedKeyUsage=clientAuth")


def test_pipeline_across_nodes(ctx):
    net = ctx.net
    ctx.server = ctx.start("coord", [
        "serve", "--model", ctx.model, "--listen", "127.0.0.1:0",
        "--worker-listen", f"{net.address('coord')}:0", "--pipeline-stages", "2",
        "--worker-heartbeat-timeout", str(HEARTBEAT_TIMEOUT_MS),
        "--worker-tls-cert", ctx.path("coordinator.pem"),
        "--worker-tls-key", ctx.path("coordinator.key"),
        "--worker-tls-client-ca", ctx.path("ca.pem"),
        "--worker-secret-file", ctx.path("secret")], "serve on coord")
    m = ctx.server.wait_line(r"workers join at (\S+) \(join secret required\) \(mutual TLS\)",
                                30)
    ctx.join = m.group(1)
    # Stages go by registration order; the coordinator sees each worker at its node's address.
    ctx.worker("node1", "w1")
    ctx.registered("w1", "node1", 0)
    ctx.worker("node2", "w2")
    ctx.registered("w2", "node2", 1)
    m = ctx.server.wait_line(r"bitserve serve: listening on (\S+)", 60)
    ctx.channel = grpc.insecure_channel(m.group(1))  # loopback of the coordinator's node
    _, pb_grpc, health_pb, health_grpc, _, _ = load_stubs()
    ctx.stub = pb_grpc.GenerationStub(ctx.channel)
    ctx.health = health_grpc.HealthStub(ctx.channel)
    ctx.SERVING = health_pb.HealthCheckResponse.SERVING
    ctx.NOT_SERVING = health_pb.HealthCheckResponse.NOT_SERVING
    ctx.wait_readiness(ctx.SERVING, 30)
    ctx.check_tokens("pipeline across two nodes")
    print(f"  PP2 across {net.address('node1')} and {net.address('node2')} (coordinator "
          f"{net.address('coord')}): {len(PROMPTS)} requests equal the one-process pipeline",
          flush=True)


def cut_off(ctx, node, worker_id, stage):
    """Pulls `node`'s cable and checks that the coordinator declares `worker_id` lost within the
    heartbeat timeout; returns when the cable was pulled (time.monotonic())."""
    since = ctx.server.mark()
    start = time.monotonic()
    ctx.net.set_link(node, up=False)
    m, seen = ctx.server.wait_line_at(rf"worker {worker_id} \(stage {stage}\) lost: no heartbeat "
                                      r"for (\d+) ms", HEARTBEAT_TIMEOUT_MS / 1000 + 10, since)
    detected = seen - start
    assert detected < HEARTBEAT_TIMEOUT_MS / 1000 + DETECTION_MARGIN_S, (
        f"{worker_id} cut off: lost after {detected:.2f} s, the heartbeat timeout is "
        f"{HEARTBEAT_TIMEOUT_MS} ms")
    print(f"  {node} cut off: {worker_id} declared lost {detected:.2f} s after the link went down "
          f"(no heartbeat for {m.group(1)} ms; timeout {HEARTBEAT_TIMEOUT_MS} ms)", flush=True)
    return start


def wait_worker_left(ctx, worker_id, since):
    """A cut-off worker notices by itself (its heartbeats go unacknowledged: keepalive) and exits
    1 as for any coordinator gone; returns the seconds from `since`."""
    w = ctx.workers[worker_id]
    code = w.wait_exit(KEEPALIVE_S + 10)
    left = w.ended - since
    assert code == 1, f"{worker_id} exited {code}:\n{w.log()}"
    assert "went away" in w.log(2), w.log()
    assert left < KEEPALIVE_S + DETECTION_MARGIN_S, f"{worker_id} left {left:.2f} s after the cut"
    return left


def test_node_cut_off(ctx):
    t, outcome = helpers.start_stream(ctx.stub, PROMPTS[0], LONG_TOKENS)
    assert outcome["first"].wait(30), "the long request produced no token"
    assert "code" not in outcome and "ok" not in outcome, f"the long request ended: {outcome}"
    since = ctx.workers["w1"].mark()
    start = time.monotonic()
    cut_off(ctx, "node2", "w2", 1)
    t.join(timeout=30)
    assert not t.is_alive(), "the long request did not end"
    assert outcome.get("code") == grpc.StatusCode.UNAVAILABLE, outcome
    assert "worker w2 (stage 1) lost" in outcome["details"], outcome["details"]
    ctx.wait_readiness(ctx.NOT_SERVING, 5)
    print(f"  the long request ended UNAVAILABLE {time.monotonic() - start:.2f} s after the cut: "
          f"{outcome['details']}", flush=True)
    ctx.workers["w1"].wait_line("registering again", 10, since)
    try:
        helpers.generate(ctx.stub, PROMPTS[1], MAX_TOKENS, timeout=30)
        raise AssertionError("a request succeeded while a stage was cut off")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e


def test_link_restored(ctx):
    """The cut-off worker cannot hear that it was fenced (until its keepalive gives up). When the
    link comes back first, its stream's cancellation arrives and it exits 1; started again on its
    node it rejoins as stage 1."""
    w2 = ctx.workers["w2"]
    start = time.monotonic()
    ctx.net.set_link("node2", up=True)
    code = w2.wait_exit(30)
    assert code == 1, f"the fenced worker exited {code}:\n{w2.log()}"
    assert "went away" in w2.log(3), w2.log()
    print(f"  link up: the fenced w2 exited {code} after {time.monotonic() - start:.2f} s "
          f"({w2.lines[-1]})", flush=True)
    assert ctx.readiness() == ctx.NOT_SERVING
    since = ctx.server.mark()
    ctx.worker("node2", "w2")  # restarted, as Kubernetes would
    ctx.registered("w2", "node2", 1, since)
    ctx.wait_readiness(ctx.SERVING, 30)
    ctx.check_tokens("after w2 restarted")
    print(f"  w2 restarted on node2: serving the same tokens {time.monotonic() - start:.2f} s "
          f"after the link came back", flush=True)


def test_replacement_node(ctx):
    """Cut off again; a replacement from node3 completes the pipeline. The fenced worker, still
    cut off, leaves by itself; its link back changes nothing."""
    since = ctx.workers["w1"].mark()
    cut = cut_off(ctx, "node2", "w2", 1)
    ctx.wait_readiness(ctx.NOT_SERVING, 5)
    ctx.workers["w1"].wait_line("registering again", 10, since)
    start = time.monotonic()
    mark = ctx.server.mark()
    ctx.worker("node3", "w3")
    ctx.registered("w3", "node3", 1, mark)
    ctx.wait_readiness(ctx.SERVING, 30)
    ctx.check_tokens("with the replacement on node3")
    print(f"  w3 joined from node3: serving the same tokens after {time.monotonic() - start:.2f} s",
          flush=True)
    left = wait_worker_left(ctx, "w2", cut)
    print(f"  w2, still cut off, left by itself {left:.2f} s after the cut: "
          f"{ctx.workers['w2'].lines[-1]}", flush=True)
    ctx.net.set_link("node2", up=True)
    assert ctx.readiness() == ctx.SERVING
    ctx.check_tokens("after node2's link came back")


def test_coordinator_cut_off(ctx):
    """The coordinator's node cut off: it declares its workers lost (this test reaches it on its
    node's loopback), and they notice the silent coordinator and exit 1 instead of waiting on a
    dead connection. With the link back, the workers started again (as Kubernetes restarts them)
    rebuild the group."""
    since = ctx.server.mark()
    start = time.monotonic()
    ctx.net.set_link("coord", up=False)
    ctx.server.wait_line(r"worker w\d \(stage \d\) lost: no heartbeat", 10, since)
    ctx.wait_readiness(ctx.NOT_SERVING, 5)
    left = [wait_worker_left(ctx, name, start) for name in ("w1", "w3")]
    print(f"  coord cut off: its workers lost; they left by themselves after {left[0]:.2f} and "
          f"{left[1]:.2f} s", flush=True)
    ctx.net.set_link("coord", up=True)
    mark = ctx.server.mark()
    ctx.worker("node1", "w1")
    ctx.registered("w1", "node1", 0, mark)
    ctx.worker("node3", "w3")
    ctx.registered("w3", "node3", 1, mark)
    ctx.wait_readiness(ctx.SERVING, 30)
    ctx.check_tokens("after the coordinator's link came back")


def test_rogue_certificate_refused(ctx):
    since = ctx.server.mark()
    rogue = ctx.worker("node2", "rogue", cert="intruder")
    code = rogue.wait_exit(30)
    assert code == 1, f"the rogue CA's worker exited {code}:\n{rogue.log()}"
    # The handshake ends before bitserve sees the worker: the coordinator's line is gRPC's; the
    # worker only sees the connection closed, and says what that means.
    ctx.server.wait_line(r"Handshake failed .*certificate verify failed", 10, since)
    assert "its TLS handshake refuses this worker" in rogue.log(), rogue.log()
    print(f"  rogue CA: {rogue.lines[-1]}", flush=True)
    assert ctx.readiness() == ctx.SERVING
    ctx.check_tokens("after a rogue worker was refused")


def test_wrong_secret_refused(ctx):
    since = ctx.server.mark()
    wrong = ctx.worker("node2", "wrong", secret="wrong_secret")
    code = wrong.wait_exit(30)
    assert code == 1, f"the worker with a wrong secret exited {code}:\n{wrong.log()}"
    assert "asks for a join secret" in wrong.log(), wrong.log()
    m = ctx.server.wait_line(r"refused a worker from (\S+): join secret missing or wrong", 10,
                                since)
    assert re.fullmatch(rf"ipv4:{re.escape(ctx.net.address('node2'))}:\d+", m.group(1)), m.group(0)
    assert "registered" not in "\n".join(ctx.server.lines[since:])
    assert ctx.readiness() == ctx.SERVING
    ctx.check_tokens("after a wrong secret was refused")


def test_shutdown(ctx):
    ctx.channel.close()
    ctx.server.proc.send_signal(signal.SIGTERM)
    assert ctx.server.wait_exit(60) == 0, ctx.server.log()
    for name in ("w1", "w3"):
        assert ctx.workers[name].wait_exit(30) == 0, ctx.workers[name].log()


TESTS = [test_pipeline_across_nodes, test_node_cut_off, test_link_restored, test_replacement_node,
         test_coordinator_cut_off, test_rogue_certificate_refused, test_wrong_secret_refused,
         test_shutdown]


def main():
    args = argument_parser(__doc__).parse_args()
    if shutil.which("ip") is None or shutil.which("setpriv") is None:
        print("SKIP: multihost_netns_test needs `ip` (iproute2) and `setpriv` (util-linux)")
        return SKIP
    if shutil.which("openssl") is None:
        print("FAIL: openssl is missing (scripts/install-deps.sh installs it)")
        return 1
    remove_stale_namespaces()
    net = Network()
    tmp = tempfile.mkdtemp(prefix="bitserve_multihost_test_")
    ctx = None

    def cleanup():
        if ctx is not None:
            for p in ctx.processes:
                p.kill()
        net.remove()
        shutil.rmtree(tmp, ignore_errors=True)
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # ctest's timeout: clean up first
    try:
        try:
            net.create_switch()
        except RuntimeError as e:
            print(f"SKIP: network namespaces are not permitted here ({e})")
            return SKIP
        for node in NODES:
            net.add_node(node)
        print(f"nodes: {', '.join(f'{n} {net.address(n)}' for n in NODES)} "
              f"(namespaces {PREFIX}*)", flush=True)
        make_certificates(tmp, net.address("coord"))
        with open(os.path.join(tmp, "secret"), "w") as f:
            f.write(os.urandom(16).hex() + "\n")
        with open(os.path.join(tmp, "wrong_secret"), "w") as f:
            f.write("wrong-secret-0123456789\n")
        # 48 layers of the test model: a decode step takes a few ms, so a long request still
        # streams when its node is cut off.
        subprocess.run([os.path.abspath(args.bitserve), "make-model", "--preset", "test-gqa",
                        "--layers", "48", "--seed", "3", "--out", os.path.join(tmp, "model")],
                       check=True, capture_output=True)
        generate_stubs(args.protoc, args.proto_dir, os.path.join(tmp, "stubs"))
        # From here this process lives in the coordinator's node: the public API listens on its
        # loopback. Before grpc is imported, so that every thread it starts is there too.
        net.enter("coord")
        global grpc, helpers
        import grpc  # python3-grpcio
        import worker_test_helpers as helpers

        ctx = Context(args, net, tmp)

        def show_logs(test):
            for p in ctx.processes:
                print(f"--- {p.name} log tail:\n{p.log(15)}")
            return True  # the checks build on each other
        failed = run_checks(TESTS, ctx, on_failure=show_logs)
    finally:
        cleanup()
        atexit.unregister(cleanup)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
