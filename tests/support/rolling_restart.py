#!/usr/bin/env python3
"""A rolling restart through haproxy under steady traffic: two kefu nodes sharing one
redis-server, each in turn stopped with SIGTERM and started again, while conversations go
on through the balancer. A lost request is any that did not get a 2xx.

Usage: tests/support/with-redis.sh tests/support/rolling_restart.py [target/debug/kefu]

Two rounds, the same traffic and the same haproxy configuration (the one
docs/operations.md recommends: `option httpchk GET /readyz`, checks every 500 ms, down
after 2 failures, `retry-on conn-failure` with `option redispatch`):
- `before`: `--drain-seconds 0`, kefu stops at once on SIGTERM (as it did before it had a
  drain); its figures are printed, not judged;
- `after`: `--drain-seconds DRAIN_S`: `/readyz` turns 503 at once, kefu goes on answering
  until haproxy has moved the traffic away, then stops. Any lost request fails the script.

In each round each node in turn gets SIGTERM; once haproxy sees it down and the process
has exited it is started again, and the next node goes once haproxy sees it back up.
Meanwhile WORKERS threads hold keep-alive connections to haproxy and carry
conversations of five turns (a rule answer, the return flow over three turns, another
rule), so that each conversation's turns land on both nodes; a flow turn whose reply is
not the flow's next step counts as a wrong answer (a session lost between nodes) and
fails the script too.

Prints one line per round and a summary line:
    rolling restart: before (drain 0 s): N requests, K lost; after (drain 3 s): N requests, 0 lost
Env knobs: WORKERS (16), DRAIN_S (3). Everything listens on 127.0.0.1; every wait has a
deadline, and a round takes about 30 s with a debug build.
"""

import csv
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from harness import failer, free_port, start_kefu, stop_within, wait_for

KEFU = sys.argv[1] if len(sys.argv) > 1 else "target/debug/kefu"
REDIS = os.environ.get("KEFU_TEST_REDIS")
WORKERS = int(os.environ.get("WORKERS", "16"))
DRAIN_S = int(os.environ.get("DRAIN_S", "3"))
# haproxy's checks: every CHECK_MS, down after FALL failures, up after RISE successes. The
# drain must outlast FALL checks and the one in flight: DRAIN_S > (FALL + 1) * CHECK_MS.
CHECK_MS, FALL, RISE = 500, 2, 2
# (message, what the reply must contain): the return flow carried across nodes.
CONVERSATION = [
    ("包邮吗", "包邮"),
    ("我要退货", "订单号"),
    ("202611020001", "确认为您提交"),
    ("是的", "已为您提交"),
    ("能开发票吗", "发票"),
]


fail = failer("rolling restart")


class Node:
    def __init__(self, name, port, work):
        self.name, self.port, self.work = name, port, work
        self.runs = 0
        self.proc = None
        self.log = None

    def start(self, drain_s):
        self.runs += 1
        self.log = os.path.join(self.work, f"{self.name}-{self.runs}.log")
        args = [
            KEFU, "serve", "--rules", "rules", "--addr", f"127.0.0.1:{self.port}", "--no-watch",
            "--redis", REDIS, "--model", "none", "--rate-limit", "0",
            "--max-connections-per-client", "0", "--drain-seconds", str(drain_s),
            "--state-dir", os.path.join(self.work, f"state-{self.name}"),
        ]
        self.proc = start_kefu(args, self.log)

    def stop(self, deadline_s):
        if not stop_within(self.proc, deadline_s):
            fail(f"node {self.name} did not stop within {deadline_s} s of SIGTERM; see {self.log}")


class Haproxy:
    def __init__(self, work, nodes):
        self.port = free_port()
        self.socket = os.path.join(work, "haproxy.sock")
        config = os.path.join(work, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(f"""global
  maxconn 4096
  stats socket {self.socket} level admin
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch 1
  retry-on conn-failure
frontend fleet
  bind 127.0.0.1:{self.port}
  default_backend kefu
backend kefu
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server check inter {CHECK_MS} fall {FALL} rise {RISE}
""")
            for node in nodes:
                f.write(f"  server {node.name} 127.0.0.1:{node.port}\n")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", config], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(work, "haproxy.log"), "w"))

    def status(self, server):
        """haproxy's view of a server: UP, DOWN, `UP 1/2` (going down)... or None."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(self.socket)
                s.sendall(b"show stat\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return None
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        for row in rows:
            if row.get("pxname") == "kefu" and row.get("svname") == server:
                return row.get("status")
        return None


class Traffic:
    """WORKERS threads carrying conversations through haproxy until stopped."""

    def __init__(self, port, round_name):
        self.port, self.round = port, round_name
        self.lock = threading.Lock()
        self.sent = self.ok = self.failed = self.wrong = 0
        self.failures = {}  # what went wrong -> count
        self.running = True
        self.threads = [threading.Thread(target=self.work, args=(w,)) for w in range(WORKERS)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join(60)

    def count(self, ok, failure=None, wrong=False):
        with self.lock:
            self.sent += 1
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                self.failures[failure] = self.failures.get(failure, 0) + 1
            if wrong:
                self.wrong += 1

    def work(self, worker):
        conn = None
        n = 0
        while self.running:
            session = f"rr-{os.getpid()}-{self.round}-{worker}-{n}"
            n += 1
            for message, expected in CONVERSATION:
                if not self.running:
                    break
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                body = json.dumps({"session_id": session, "message": message})
                try:
                    conn.request("POST", "/v1/chat", body, {"content-type": "application/json"})
                    response = conn.getresponse()
                    data = response.read()
                    status = response.status
                    if response.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as e:
                    self.count(False, type(e).__name__)
                    if conn is not None:
                        conn.close()
                    conn = None
                    break  # the conversation cannot go on as the customer meant it
                if not 200 <= status < 300:
                    self.count(False, f"HTTP {status}")
                    break
                try:
                    reply = json.loads(data).get("reply", "")
                except ValueError:
                    reply = ""
                self.count(True, wrong=expected not in reply)
        if conn is not None:
            conn.close()


def run_round(name, drain_s, nodes, haproxy):
    for node in nodes:
        node.start(drain_s)
    if not wait_for(lambda: all(haproxy.status(n.name) == "UP" for n in nodes), 90):
        fail(f"{name}: haproxy did not see both nodes up within 90 s; see {nodes[0].work}")
    traffic = Traffic(haproxy.port, name)
    started = time.monotonic()
    traffic.start()
    time.sleep(2)
    for node in nodes:
        node.proc.send_signal(signal.SIGTERM)
        if not wait_for(lambda: (haproxy.status(node.name) or "").startswith("DOWN"), 30):
            fail(f"{name}: haproxy did not see node {node.name} down within 30 s")
        node.stop(60)
        node.start(drain_s)
        if not wait_for(lambda: haproxy.status(node.name) == "UP", 90):
            fail(f"{name}: haproxy did not see node {node.name} back up within 90 s; see {node.log}")
    time.sleep(2)
    traffic.stop()
    elapsed = time.monotonic() - started
    for node in nodes:
        node.stop(60)
    # The next round must not take haproxy's view of these processes for its own.
    if not wait_for(lambda: all((haproxy.status(n.name) or "").startswith("DOWN") for n in nodes), 30):
        fail(f"{name}: haproxy did not see the stopped nodes down within 30 s")
    failures = ", ".join(f"{k} x{v}" for k, v in sorted(traffic.failures.items())) or "none"
    print(
        f"{name} (drain {drain_s} s): {traffic.sent} requests in {elapsed:.1f} s, {traffic.ok} ok, "
        f"{traffic.failed} lost ({failures}), {traffic.wrong} wrong flow steps",
        flush=True,
    )
    return traffic


def main():
    if not REDIS:
        fail("KEFU_TEST_REDIS is not set; run under tests/support/with-redis.sh")
    for tool in ["haproxy", KEFU]:
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            fail(f"{tool} not found (make deps installs haproxy; build kefu first)")
    if DRAIN_S * 1000 <= (FALL + 1) * CHECK_MS:
        fail(f"DRAIN_S={DRAIN_S} is shorter than haproxy needs to see a node down")
    work = tempfile.mkdtemp(prefix="kefu-rolling-")
    nodes = [Node(name, free_port(), work) for name in ["a", "b"]]
    haproxy = Haproxy(work, nodes)
    passed = False
    try:
        before = run_round("before", 0, nodes, haproxy)
        after = run_round("after", DRAIN_S, nodes, haproxy)
        print(
            f"rolling restart: before (drain 0 s): {before.sent} requests, {before.failed} lost; "
            f"after (drain {DRAIN_S} s): {after.sent} requests, {after.failed} lost, "
            f"{after.wrong} wrong flow steps",
            flush=True,
        )
        if after.failed or after.wrong or before.wrong:
            fail(f"requests lost or answered out of their conversation; see the logs in {work}")
        passed = True
    finally:
        for node in nodes:
            if node.proc and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait()
        haproxy.proc.kill()
        haproxy.proc.wait()
        if passed:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
