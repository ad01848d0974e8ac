#!/usr/bin/env python3
"""What hostile clients cost everyone else: kefu under the attacks of issue #16, with
figures to compare two builds side by side.

    benches/hostile.py [--bin target/release/kefu] [--seconds 10] [--only NAME ...]

Each attack runs against a fresh `kefu serve` on 127.0.0.1 (the demo rules plus one
rule with a runaway script), started under the common soft limit of 1,024 open files:

- slow-script: 6 clients send a message whose rule's `when` loops over 60,000-character
  strings, for --seconds; meanwhile /healthz is timed 20 times. Prints /healthz's
  median and worst time and the slow turns' median time.
- pii-digits: one message of "1-" x 1,000 and one of "1 " x 1,000 (the longest a
  message may be), timed.
- idle-sockets: 1,100 connections opened and left idle, then /healthz timed 10 times.
- feedback-flood: 2,000 feedback posts on one session; the session's size after.
- takeover-queue: a taken-over session sent 2,000 messages; the session's size after.

Only loopback addresses are used; every loop is bounded in count and time. Compare
builds by running it with --bin pointing at each (for example a build of the previous
commit in another work tree), one after the other on the same machine.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SLOW_RULE = """rule 慢规则 {
  on keywords "慢慢查"
  when `let n = 0; loop { let s = ""; s.pad(60000, "x"); n += s.len; }`
  reply "不会到这里"
}
"""


def start(binary, rules, extra=()):
    """Starts kefu on a free port under a soft limit of 1,024 open files."""
    cmd = ["bash", "-c", 'ulimit -Sn 1024; exec "$0" "$@"', binary, "serve", "--rules", rules,
           "--addr", "127.0.0.1:0", "--no-watch", "--rate-limit", "0", "--log-level", "warn", "--model", "none", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("listening on "):
            return proc, line.split()[-1]
        if proc.poll() is not None:
            break
    proc.kill()
    sys.exit("kefu did not start")


def call(addr, method, path, body=None, timeout=60):
    """One request; (status, seconds, parsed body or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        return None, time.perf_counter() - started, str(err)
    took = time.perf_counter() - started
    try:
        return status, took, json.loads(raw)
    except ValueError:
        return status, took, raw.decode(errors="replace")


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def slow_script(addr, seconds):
    stop = time.time() + seconds
    slow_times = []

    def client(i):
        n = 0
        while time.time() < stop and n < 200:
            _, took, _ = call(addr, "POST", "/v1/chat", {"session_id": f"slow-{i}-{n}", "message": "慢慢查一下"})
            slow_times.append(took)
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(min(1.0, seconds / 4))
    health = []
    for _ in range(20):
        _, took, _ = call(addr, "GET", "/healthz", timeout=120)
        health.append(took)
        time.sleep(max(0.0, (seconds - 1) / 25))
    for t in threads:
        t.join()
    print(f"slow-script: /healthz median {ms(statistics.median(health))}, worst {ms(max(health))}; "
          f"slow turns: {len(slow_times)}, median {ms(statistics.median(slow_times))}")


def pii_digits(addr):
    for text, name in (("1-" * 1000, '"1-" x 1000'), ("1 " * 1000, '"1 " x 1000')):
        status, took, _ = call(addr, "POST", "/v1/chat", {"session_id": "pii", "message": text}, timeout=300)
        print(f"pii-digits: {name}: {status} in {ms(took)}")


def idle_sockets(addr):
    host, port = addr.rsplit(":", 1)
    hoard = []
    for _ in range(1100):
        try:
            hoard.append(socket.create_connection((host, int(port)), timeout=5))
        except OSError:
            break
    time.sleep(0.5)
    health = []
    failures = 0
    for _ in range(10):
        status, took, _ = call(addr, "GET", "/healthz", timeout=30)
        failures += status != 200
        health.append(took)
    print(f"idle-sockets: {len(hoard)} idle connections open; /healthz median {ms(statistics.median(health))}, "
          f"worst {ms(max(health))}, {failures} of 10 failed")
    for s in hoard:
        s.close()


def session_size(addr, sid):
    status, _, body = call(addr, "GET", f"/v1/sessions/{sid}")
    return len(json.dumps(body, ensure_ascii=False).encode()) if status == 200 else None


def feedback_flood(addr):
    _, _, first = call(addr, "POST", "/v1/chat", {"session_id": "fb", "message": "能开发票吗"})
    token = first.get("session_token", "") if isinstance(first, dict) else ""
    accepted = 0
    took_last = 0.0
    for i in range(2000):
        body = {"score": 5, "comment": "好" * 400}
        if token:
            body["session_token"] = token
        status, took_last, _ = call(addr, "POST", "/v1/sessions/fb/feedback", body)
        accepted += status == 200
    print(f"feedback-flood: {accepted} of 2000 accepted; the last took {ms(took_last)}; "
          f"session {session_size(addr, 'fb')} bytes")


def takeover_queue(addr):
    call(addr, "POST", "/v1/chat", {"session_id": "tq", "message": "能开发票吗"})
    call(addr, "POST", "/v1/sessions/tq/takeover", {})
    for i in range(2000):
        call(addr, "POST", "/v1/chat", {"session_id": "tq", "message": f"在吗{i}" + "急" * 500})
    print(f"takeover-queue: session {session_size(addr, 'tq')} bytes after 2000 messages")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/release/kefu")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rules = tempfile.mkdtemp(prefix="kefu-hostile-")
    try:
        shutil.copytree(os.path.join(root, "rules"), rules, dirs_exist_ok=True)
        with open(os.path.join(rules, "zz_slow.kefu"), "w") as f:
            f.write(SLOW_RULE)
        attacks = {
            "slow-script": lambda a: slow_script(a, args.seconds),
            "pii-digits": pii_digits,
            "idle-sockets": idle_sockets,
            "feedback-flood": feedback_flood,
            "takeover-queue": takeover_queue,
        }
        for name, attack in attacks.items():
            if args.only and name not in args.only:
                continue
            proc, addr = start(args.bin, rules)
            try:
                attack(addr)
            finally:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(rules, ignore_errors=True)


if __name__ == "__main__":
    main()
