"""What the Python integration tests share: their command line, the loop that runs their checks,
stubs generated from rpc/proto at test time (and the standard health and reflection protos, which
python3-grpcio does not ship), free ports, and bitserve processes whose stderr is collected and
watched for marker lines."""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request

# The standard health protocol (grpc/health/v1/health.proto). python3-grpcio ships no
# grpc_health package, so the test generates it. The file name differs from the upstream one so
# the generated module cannot shadow the grpc package; the proto package (the wire name) is the same.
HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"""

# The part of grpc/reflection/v1alpha/reflection.proto that lists services.
REFLECTION_PROTO = """
syntax = "proto3";
package grpc.reflection.v1alpha;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    string list_services = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ServiceResponse { string name = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
"""

RPC_TIMEOUT = 60  # seconds; every call has a deadline so that nothing hangs


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate_stubs(protoc, proto_dir, out_dir):
    plugin = shutil.which("grpc_python_plugin")
    if plugin is None:
        raise RuntimeError("grpc_python_plugin not found (Debian package protobuf-compiler-grpc)")
    extra = os.path.join(out_dir, "extra_protos")
    os.makedirs(extra)
    with open(os.path.join(extra, "bitserve_test_health.proto"), "w") as f:
        f.write(HEALTH_PROTO)
    with open(os.path.join(extra, "bitserve_test_reflection.proto"), "w") as f:
        f.write(REFLECTION_PROTO)
    common = [protoc, f"--python_out={out_dir}", f"--grpc_out={out_dir}",
              f"--plugin=protoc-gen-grpc={plugin}"]
    subprocess.run(common + [f"-I{proto_dir}", "bitserve/v1/bitserve.proto"], check=True)
    subprocess.run(common + [f"-I{extra}", "bitserve_test_health.proto",
                             "bitserve_test_reflection.proto"], check=True)
    sys.path.insert(0, out_dir)


class Process:
    """A bitserve child process; its stderr lines are collected with their arrival times
    (time.monotonic()) and can be waited for. `prefix` runs it under another command (a network
    namespace: multihost_netns_test.py); `where` goes into the "starting" line."""

    def __init__(self, cmd, name=None, prefix=(), where=""):
        print(f"starting{where}:", " ".join(cmd), flush=True)
        self.name = name or f"bitserve {cmd[1]}"
        self.proc = subprocess.Popen([*prefix, *cmd], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        self.lines = []
        self.times = []  # arrival time of each line
        self.ended = None  # arrival time of the end of stderr: when the process exited
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.times.append(time.monotonic())
                self.changed.notify_all()
        with self.changed:
            self.ended = time.monotonic()
            self.changed.notify_all()

    def mark(self):
        """The index of the next line, for wait_line(..., since=mark())."""
        with self.changed:
            return len(self.lines)

    def log(self, last=40):
        with self.changed:
            return "\n".join(self.lines[-last:])

    def wait_line(self, pattern, timeout=180, since=0):
        """The first match of regex `pattern` in a stderr line from index `since`; raises when the
        process exits or `timeout` passes first."""
        return self.wait_line_at(pattern, timeout, since)[0]

    def wait_line_at(self, pattern, timeout=180, since=0):
        """wait_line's match and the time.monotonic() its line arrived."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for i in range(since, len(self.lines)):
                    m = re.search(pattern, self.lines[i])
                    if m:
                        return m, self.times[i]
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                       f"printing {pattern!r}:\n{self.log()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name} did not print {pattern!r} within {timeout} s:"
                                       f"\n{self.log()}")
                self.changed.wait(min(left, 0.2))

    def wait_exit(self, timeout):
        """The exit code, once stderr is read to its end too."""
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Server(Process):
    """`bitserve serve` on loopback ports, with its metrics endpoint."""

    def __init__(self, bitserve, model_dir, extra=()):
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        super().__init__([bitserve, "serve", "--model", model_dir, "--listen", self.address,
                          "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *extra])

    def wait_listening(self, timeout=180):
        self.wait_line("bitserve serve: listening on", timeout)

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        if m is None:
            raise AssertionError(f"metric {name} not found in /metrics")
        return float(m.group(1))




def load_stubs():
    """The generated modules, after generate_stubs: (pb, pb_grpc, health_pb, health_grpc,
    refl_pb, refl_grpc)."""
    from bitserve.v1 import bitserve_pb2 as pb
    from bitserve.v1 import bitserve_pb2_grpc as pb_grpc
    import bitserve_test_health_pb2 as health_pb
    import bitserve_test_health_pb2_grpc as health_grpc
    import bitserve_test_reflection_pb2 as refl_pb
    import bitserve_test_reflection_pb2_grpc as refl_grpc
    return pb, pb_grpc, health_pb, health_grpc, refl_pb, refl_grpc


def argument_parser(doc):
    """The flags every test takes (CMake's bitserve_add_python_grpc_test passes them)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--bitserve", required=True)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--protoc", default="protoc")
    return parser


def run_checks(checks, ctx, on_failure=lambda check: False, after_each=None):
    """Runs each check(ctx), printing PASS with its time or FAIL with its traceback. on_failure(check)
    may print more and returns True to stop there; after_each(check) runs after every check. Returns
    the names of the checks that failed."""
    failed = []
    for check in checks:
        start = time.time()
        try:
            check(ctx)
            print(f"PASS {check.__name__} ({time.time() - start:.1f} s)", flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported
            failed.append(check.__name__)
            print(f"FAIL {check.__name__}\n{traceback.format_exc()}", flush=True)
            if on_failure(check):
                break
        finally:
            if after_each:
                after_each(check)
    return failed
