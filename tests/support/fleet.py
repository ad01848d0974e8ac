#!/usr/bin/env python3
"""The fleet test: two kefu nodes sharing one redis-server behind haproxy, a back office
that records tickets, and a node killed with `kill -9` under load.

Usage: tests/support/with-redis.sh tests/support/fleet.py [target/debug/kefu]

What it checks (and prints as one summary line at the end):
- every ticket a customer was promised ("已为您提交…工单号 T…") reaches the back office,
  once as the back office sees it (de-duplicated by `Idempotency-Key`), with a valid
  `X-Kefu-Signature`, although the back office answers 503 until node A, killed with
  SIGKILL mid-run while it holds deliveries, has been restarted;
- no ticket number is given to two different tickets;
- no conversation is lost: each session's history, read back through the balancer, holds
  the customer's messages and the promise;
- SIGTERM while the back office answers 503 logs `pending tickets persisted`, and those
  tickets are delivered once the back office is back.

Everything listens on 127.0.0.1; every wait has a deadline, so the script ends within a
few minutes whatever happens.
"""

import hashlib
import hmac
import http.server
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
import urllib.error
import urllib.request
from harness import failer, free_port, start_kefu, stop_within, wait_for, wait_port, wait_ready

KEFU = sys.argv[1] if len(sys.argv) > 1 else "target/debug/kefu"
REDIS = os.environ.get("KEFU_TEST_REDIS")
SECRET = "fleet-secret-" + str(os.getpid())
WORKERS = 8
SESSIONS_PER_WORKER = 12
RETURNABLE = ["202611020001", "202611030009"]
TICKET = re.compile(r"工单号 (T\d{8}-\d{6})")
fail = failer("fleet")


class BackOffice:
    """Records tickets by Idempotency-Key; answers 503 while `failing`."""

    def __init__(self):
        self.lock = threading.RLock()
        self.tickets = {}  # key -> ticket body (first one)
        self.attempts = 0
        self.repeats = 0  # requests for a key it already had (absorbed)
        self.conflicts = 0  # one key, two different tickets
        self.bad_signatures = 0
        self.refused = 0  # 503s answered
        self.failing = True
        office = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                key = self.headers.get("idempotency-key", "")
                timestamp = self.headers.get("x-kefu-timestamp", "")
                expected = "sha256=" + hmac.new(
                    SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
                ).hexdigest()
                given = self.headers.get("x-kefu-signature", "")
                with office.lock:
                    office.attempts += 1
                    if not hmac.compare_digest(expected, given) or not key:
                        office.bad_signatures += 1
                        status = 401
                    elif office.failing:
                        office.refused += 1
                        status = 503
                    else:
                        ticket = json.loads(body)
                        ticket.pop("status", None)
                        if key in office.tickets:
                            office.repeats += 1
                            if office.tickets[key] != ticket:
                                office.conflicts += 1
                        else:
                            office.tickets[key] = ticket
                        status = 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Node:
    def __init__(self, name, port, office_port, state_dir, log_dir):
        self.name, self.port = name, port
        self.args = [
            KEFU, "serve", "--rules", "rules", "--addr", f"127.0.0.1:{port}", "--no-watch",
            "--redis", REDIS, "--mock-llm", "tests/data/server/mock.yaml",
            "--tickets-url", f"http://127.0.0.1:{office_port}/tickets",
            "--ticket-visibility-timeout", "3", "--rate-limit", "0",
            "--state-dir", state_dir,
        ]
        self.log_dir = log_dir
        self.runs = 0
        self.proc = None

    def start(self):
        self.runs += 1
        self.log = os.path.join(self.log_dir, f"{self.name}-{self.runs}.log")
        self.proc = start_kefu(self.args, self.log, KEFU_TICKETS_SECRET=SECRET)
        if not wait_ready(self.port, 60):
            fail(f"node {self.name} was not ready within 60 s; see {self.log}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def term(self, timeout_s):
        if not stop_within(self.proc, timeout_s):
            fail(f"node {self.name} did not stop within {timeout_s} s of SIGTERM")
        with open(self.log) as f:
            return f.read()


def request(port, method, path, body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return 0, None


def turn(port, session, message, deadline):
    """One turn, retried as a client would while the balancer has no node for it."""
    while time.monotonic() < deadline:
        status, body = request(port, "POST", "/v1/chat", {"session_id": session, "message": message})
        if status == 200:
            return body
        time.sleep(0.1)
    return None


def converse(lb, worker, run, results, deadline):
    for i in range(SESSIONS_PER_WORKER):
        session = f"fleet-{run}-{worker}-{i}"
        said, promised = [], None
        # The demo's return flow asks the customer to confirm before it files the ticket.
        for message in ["包邮吗", "我要退货", RETURNABLE[i % len(RETURNABLE)], "是的"]:
            reply = turn(lb, session, message, deadline)
            said.append(message)
            if reply is None:
                break
            found = TICKET.search(reply.get("reply", ""))
            if found and "已为您提交" in reply["reply"]:
                promised = found.group(1)
        results.append((session, said, promised))


def undelivered(office, promised):
    """The promised (ticket, session) pairs the back office does not have as promised."""
    with office.lock:
        return [(t, s) for t, s in promised if office.tickets.get(t, {}).get("session_id") != s]


def main():
    if not REDIS:
        fail("KEFU_TEST_REDIS is not set; run under tests/support/with-redis.sh")
    for tool in ["haproxy", KEFU]:
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            fail(f"{tool} not found (make deps installs haproxy; build kefu first)")
    work = tempfile.mkdtemp(prefix="kefu-fleet-")
    office = BackOffice()
    nodes = [
        Node(name, free_port(), office.port, os.path.join(work, f"state-{name}"), work)
        for name in ["a", "b"]
    ]
    lb = free_port()
    config = os.path.join(work, "haproxy.cfg")
    with open(config, "w") as f:
        f.write(f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 15s
  timeout server 15s
  retries 2
  option redispatch
  retry-on conn-failure
frontend fleet
  bind 127.0.0.1:{lb}
  default_backend kefu
backend kefu
  balance roundrobin
  option httpchk GET /healthz
""")
        for node in nodes:
            f.write(f"  server {node.name} 127.0.0.1:{node.port} check inter 300 fall 1 rise 2\n")
    haproxy = None
    passed = False
    try:
        for node in nodes:
            node.start()
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", config], stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(work, "haproxy.log"), "w"))
        if not wait_port(lb, 10):
            fail("haproxy did not listen")

        # Phase 1: conversations under load; the back office answers 503 until node A,
        # killed with SIGKILL mid-run (with deliveries pending), has been restarted.
        run = os.getpid()
        results = []
        deadline = time.monotonic() + 120
        threads = [threading.Thread(target=converse, args=(lb, w, run, results, deadline))
                   for w in range(WORKERS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        wait_for(lambda: len(results) >= WORKERS * SESSIONS_PER_WORKER // 4, 60)
        nodes[0].kill9()
        killed_at = len(results)
        time.sleep(1.0)
        nodes[0].start()
        office.failing = False
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        load_s = time.monotonic() - started
        promised = [(p, s) for s, _, p in results if p]
        wait_for(lambda: not undelivered(office, promised), 60)

        lost_conversations = []
        for session, said, ticket in results:
            status, body = request(lb, "GET", f"/v1/sessions/{session}")
            history = [h.get("text", "") for h in (body or {}).get("history", [])]
            ok = status == 200 and all(m in history for m in said)
            if ticket:
                ok = ok and any(ticket in h for h in history)
            if not ok:
                lost_conversations.append(session)

        # Phase 2: SIGTERM while the back office answers 503; the pending tickets are
        # persisted (and logged), and delivered once the back office is back.
        office.failing = True
        term_promised = []
        for i in range(3):
            session = f"fleet-{run}-term-{i}"
            for message in ["我要退货", RETURNABLE[0], "是的"]:
                reply = turn(nodes[1].port, session, message, time.monotonic() + 10)
            found = TICKET.search((reply or {}).get("reply", ""))
            if found:
                term_promised.append((found.group(1), session))
        time.sleep(0.5)
        log = nodes[1].term(60)
        persisted = re.search(r"pending=(\d+).*pending tickets persisted|pending tickets persisted.*pending=(\d+)", log)
        if "pending tickets persisted" not in log:
            fail(f"node b's log has no `pending tickets persisted` line after SIGTERM ({nodes[1].log})")
        office.failing = False
        nodes[1].start()
        promised += term_promised
        wait_for(lambda: not undelivered(office, promised), 60)

        with office.lock:
            delivered = set(office.tickets)
            lost = undelivered(office, promised)
            # One number given to two tickets: the back office would merge them.
            numbers = [p for p, _ in promised]
            duplicated = office.conflicts + len(numbers) - len(set(numbers))
            summary = (
                f"fleet: {len(promised)} tickets promised, {len(promised) - len(lost)} delivered once, "
                f"{len(lost)} lost, {duplicated} duplicated"
            )
            detail = (
                f"{len(results)} conversations ({len(lost_conversations)} lost) in {load_s:.1f} s, node a killed "
                f"after {killed_at}; back office: {office.attempts} requests, {office.refused} answered 503, "
                f"{office.repeats} repeats absorbed by Idempotency-Key, {office.bad_signatures} bad signatures, "
                f"{len(delivered - set(numbers))} tickets never promised (node died before answering); "
                f"SIGTERM with the back office down: {len(term_promised)} tickets, log "
                f"`pending tickets persisted` {'pending=' + (persisted.group(1) or persisted.group(2)) if persisted else ''}"
            )
        print(detail, flush=True)
        print(summary, flush=True)
        if lost or duplicated or office.bad_signatures or lost_conversations or len(term_promised) < 3:
            if lost:
                print(f"lost tickets: {lost[:10]}", flush=True)
            if lost_conversations:
                print(f"lost conversations: {lost_conversations[:10]}", flush=True)
            fail(f"see the logs in {work}")
        if len(results) < WORKERS * SESSIONS_PER_WORKER:
            fail(f"only {len(results)} conversations finished in time")
        passed = True
    finally:
        for node in nodes:
            if node.proc and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait()
        if haproxy:
            haproxy.kill()
            haproxy.wait()
        office.server.shutdown()
        # The logs stay for a failed run (the failure message names the directory).
        if passed:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
