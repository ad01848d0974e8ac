#!/usr/bin/env python3
"""Redis stopped mid-traffic: no conversation turn goes to a wrong flow step.

Usage: tests/support/redis_outage.py [target/debug/kefu]

Starts its own redis-server (a free loopback port, a password, its data in an append-only
file so that a restart keeps the sessions) and one kefu node on it (the demo rules in
rules/, the scripted model of tests/data/server/mock.yaml, `--redis`). WORKERS threads
then hold the demo's return and exchange conversations, each a flow whose steps are
known, for RUN_S seconds; OUTAGE_AT_S seconds in, redis-server is stopped for OUTAGE_S
seconds (OUTAGE=restart: SIGTERM, then started again on the same port; OUTAGE=pause:
SIGSTOP, then SIGCONT). A turn answered 503 is sent again 0.2 s later, as a customer would.

It counts and prints as one summary line: turns answered 200, 503s (`store_unavailable`),
other failures, wrong flow steps (a 200 whose flow step is not the one the conversation
is at: the session read as new), the longest turn while Redis was down and overall, the
first turn started after Redis answered again (must be a 200), 503s after that, answers
given again (a turn whose save landed though Redis went away before confirming it, sent
again by the customer: kefu gives the recorded answer), and the
node's `kefu_redis_errors_total`. It also checks that the node's log never shows the
Redis password. Exit status 1 on a wrong flow step, a failed first turn after the outage,
a 503 after it, or the password in the log; the summary line is printed either way.

Env knobs: WORKERS (8), RUN_S (20), OUTAGE_AT_S (5), OUTAGE_S (7), OUTAGE (restart),
REDIS_TIMEOUT_MS and REDIS_ATTEMPTS (kefu's --redis-timeout-ms and --redis-attempts;
kefu's defaults when unset). Everything listens on 127.0.0.1; every wait has a deadline.
"""

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
import urllib.error
import urllib.request
from harness import failer, free_port, wait_ready

KEFU = sys.argv[1] if len(sys.argv) > 1 else "target/debug/kefu"
WORKERS = int(os.environ.get("WORKERS", "8"))
RUN_S = float(os.environ.get("RUN_S", "20"))
OUTAGE_AT_S = float(os.environ.get("OUTAGE_AT_S", "5"))
OUTAGE_S = float(os.environ.get("OUTAGE_S", "7"))
OUTAGE = os.environ.get("OUTAGE", "restart")
PASSWORD = f"outage-pw-{os.getpid()}"

# The demo's flows, message by message, with the flow step each answer must come from
# (`step` without its line number). A message read against another step, or by a
# session read as new, answers from another step or from no flow at all.
CONVERSATIONS = [
    [("我要退货", "ask order_id"), ("202611020001", "confirm confirm"), ("是的", "end")],
    [("我想换个颜色", "ask order_id"), ("202611030009", "ask new_color"), ("白色", "end")],
    [("尺码小了想换大一码", "ask order_id"), ("202611020001", "ask new_size"), ("XL", "end")],
]


fail_now = failer("redis_outage")


def redis_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = s.recv(64)
                if not chunk:
                    return False
                data += chunk
            return data.endswith(b"+PONG\r\n")
    except OSError:
        return False


class Redis:
    def __init__(self, work):
        self.port, self.dir = free_port(), work
        self.log = os.path.join(work, "redis.log")
        self.proc = None

    def start(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--requirepass", PASSWORD, "--save", "", "--appendonly", "yes",
                 "--appendfsync", "always", "--dir", self.dir],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if redis_answers(self.port):
                return
            time.sleep(0.02)
        fail_now(f"redis-server did not answer within 10 s; see {self.log}")

    def stop(self):
        if OUTAGE == "pause":
            self.proc.send_signal(signal.SIGSTOP)
        else:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)

    def resume(self):
        if OUTAGE == "pause":
            self.proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 10
            while not redis_answers(self.port) and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            self.start()

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


def post(port, path, body, timeout=10):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.load(e)
        except ValueError:
            return e.code, None
    except (OSError, ValueError):
        return 0, None


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.turns = []  # (started, seconds, status, error type)
        self.wrong = []  # (session, message, expected step, got)
        self.conversations = 0
        self.given_again = 0  # answers of a turn saved although its save was not confirmed

    def add(self, started, took, status, kind):
        with self.lock:
            self.turns.append((started, took, status, kind))


def worker(port, n, tally, end):
    i = 0
    while time.monotonic() < end:
        script = CONVERSATIONS[(n + i) % len(CONVERSATIONS)]
        session = f"outage-{os.getpid()}-{n}-{i}"
        i += 1
        for message, step in script:
            while True:
                started = time.monotonic()
                status, body = post(port, "/v1/chat", {"session_id": session, "message": message})
                took = time.monotonic() - started
                kind = (body or {}).get("error", {}).get("type") if status != 200 else None
                tally.add(started, took, status, kind)
                if status == 200:
                    break
                if time.monotonic() > end + 15:
                    return
                time.sleep(0.2)
            if any(s.get("stage") == "store" for s in body.get("trace", [])):
                with tally.lock:
                    tally.given_again += 1
            got = (body.get("step") or "").split("@")[0]
            if body.get("flow") is None or got != step:
                with tally.lock:
                    tally.wrong.append((session, message, step, f"{body.get('flow')} {body.get('step')}: {body.get('reply', '')[:40]}"))
                break
        else:
            with tally.lock:
                tally.conversations += 1


def metric(port, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def main():
    if shutil.which("redis-server") is None:
        fail_now("redis-server not found (make deps installs it)")
    if not os.path.exists(KEFU):
        fail_now(f"{KEFU} not found: build kefu first (cargo build --no-default-features)")
    work = tempfile.mkdtemp(prefix="kefu-outage-")
    redis = Redis(work)
    node = None
    try:
        redis.start()
        port = free_port()
        url = f"redis://:{PASSWORD}@127.0.0.1:{redis.port}/0"
        args = [KEFU, "serve", "--rules", "rules", "--addr", f"127.0.0.1:{port}", "--no-watch",
                "--redis", url, "--mock-llm", "tests/data/server/mock.yaml",
                "--state-dir", os.path.join(work, "state")]
        if os.environ.get("REDIS_TIMEOUT_MS"):
            args += ["--redis-timeout-ms", os.environ["REDIS_TIMEOUT_MS"]]
        if os.environ.get("REDIS_ATTEMPTS"):
            args += ["--redis-attempts", os.environ["REDIS_ATTEMPTS"]]
        node_log = os.path.join(work, "kefu.log")
        with open(node_log, "w") as err:
            node = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        if not wait_ready(port, 60):
            fail_now(f"kefu was not ready within 60 s; see {node_log}")

        tally = Tally()
        start = time.monotonic()
        end = start + RUN_S
        threads = [threading.Thread(target=worker, args=(port, n, tally, end)) for n in range(WORKERS)]
        for t in threads:
            t.start()
        time.sleep(OUTAGE_AT_S)
        down_at = time.monotonic()
        redis.stop()
        time.sleep(OUTAGE_S)
        redis.resume()
        back_at = time.monotonic()
        for t in threads:
            t.join(timeout=RUN_S + 60)
        errors = metric(port, "kefu_redis_errors_total")
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
        with open(node_log) as f:
            log = f.read()
    finally:
        if node and node.poll() is None:
            node.kill()
        redis.close()

    turns = tally.turns
    ok = sum(1 for t in turns if t[2] == 200)
    unavailable = sum(1 for t in turns if t[2] == 503 and t[3] == "store_unavailable")
    other = len(turns) - ok - unavailable
    other_kinds = {}
    for t in turns:
        if t[2] != 200 and not (t[2] == 503 and t[3] == "store_unavailable"):
            key = f"{t[2]} {t[3] or ''}".strip()
            other_kinds[key] = other_kinds.get(key, 0) + 1
    during = [t[1] for t in turns if down_at <= t[0] < back_at]
    after = sorted((t for t in turns if t[0] >= back_at), key=lambda t: t[0])
    first = after[0] if after else None
    after_503 = sum(1 for t in after if t[2] != 200)
    leaked = PASSWORD in log
    logged = [line for line in log.splitlines() if "redis" in line and ("ERROR" in line or "WARN" in line)]
    print(
        f"redis_outage: {OUTAGE} {OUTAGE_S:g} s in {RUN_S:g} s, {WORKERS} workers: "
        f"turns 200: {ok}, 503 store_unavailable: {unavailable}, other failures: {other} "
        f"({', '.join(f'{k}: {n}' for k, n in sorted(other_kinds.items())) or 'none'}), "
        f"wrong flow steps: {len(tally.wrong)}, answers given again: {tally.given_again}, "
        f"conversations finished: {tally.conversations}, "
        f"max turn latency during the outage: {max(during, default=0) * 1000:.0f} ms "
        f"(over {len(during)} turns), overall: {max((t[1] for t in turns), default=0) * 1000:.0f} ms, "
        f"first turn after redis answered again: "
        + (f"{first[2]} ({(first[0] - back_at) * 1000:.0f} ms after)" if first else "none")
        + f", non-200 after it: {after_503}, kefu_redis_errors_total: {errors if errors is None else int(errors)}, "
        f"redis log lines: {len(logged)}, password in the log: {'yes' if leaked else 'no'}",
        flush=True,
    )
    if logged:
        print(f"redis_outage: a logged line: {logged[0][:300]}", flush=True)
    for session, message, step, got in tally.wrong[:5]:
        print(f"redis_outage: wrong step: {session} {message!r}: expected {step}, got {got}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    if tally.wrong or not first or first[2] != 200 or after_503 or leaked:
        sys.exit(1)


if __name__ == "__main__":
    main()
