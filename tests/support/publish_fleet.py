#!/usr/bin/env python3
"""Publishing across a fleet: two kefu nodes sharing one redis-server follow the version
store's live and canary pointers. A publish, a canary, a promote and a rollback made on
one node (or with `kefu publish --redis` directly) reach the other within a second, and
a node started later serves the current live version.

Usage: tests/support/with-redis.sh tests/support/publish_fleet.py [target/debug/kefu]

Steps, each judged (any failure exits 1 with one line):
1. `kefu publish rules --redis URL -m 初始版本` publishes the demo shop as the first
   version; nodes A and B start on the store (no file watcher) and serve it.
2. A draft (a copy of rules/ whose shipping reply ends in 新版本) is published through
   node A's admin API (`kefu publish DRAFT --server A`) while node B is asked every 10 ms
   in new conversations: the time from the version's record (when the store moved its
   pointer) to B's first answer from it is printed, and must be under SWITCH_S.
3. `kefu rollback --server B`: node A answers from the first content again (a new
   version: history grows).
4. The draft again as a canary of CANARY percent: SESSIONS new conversations, each asked
   on A and then on B, must get the same version on both nodes (sticky, shared hash), and
   the canary's share must be within 5 points of CANARY.
5. `kefu promote --server A`: both nodes serve the candidate to everyone.
6. Node C, started now, serves the promoted version.

Prints one summary line:
    publish fleet: switch after publish 0.21 s, after rollback 0.18 s; canary 9.8% of 1000 ...
Env knobs: SESSIONS (1000), CANARY (10), SWITCH_S (1.0, the target of a publish reaching
every node; a debug build on a busy machine may need more). Everything
listens on 127.0.0.1; every wait has a deadline.
"""

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from harness import failer, free_port, start_kefu, stop_within, wait_for, wait_ready

KEFU = sys.argv[1] if len(sys.argv) > 1 else "target/debug/kefu"
REDIS = os.environ.get("KEFU_TEST_REDIS")
SESSIONS = int(os.environ.get("SESSIONS", "1000"))
CANARY = int(os.environ.get("CANARY", "10"))
SWITCH_S = float(os.environ.get("SWITCH_S", "1.0"))
fail = failer("publish fleet")

# A message the shipping rule answers; the draft changes that rule's reply.
QUESTION = "包邮吗"
MARKER = "新版本"


def post(port, path, body):
    """POST `body` as JSON; (status, parsed JSON)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def ask(port, session):
    """The node's answer to QUESTION in `session`: (reply, rules_version, rules_role)."""
    status, body = post(port, "/v1/chat", {"session_id": session, "message": QUESTION})
    if status != 200:
        fail(f"chat on :{port} answered {status}: {body}")
    return body["reply"], body["rules_version"], body.get("rules_role")


def canary_on(node):
    """Whether `node` serves a canary now (its `/admin/rules`)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/admin/rules", timeout=5) as r:
            return json.loads(r.read()).get("store", {}).get("canary") is not None
    except OSError:
        return False


def kefu(*args):
    """Runs a kefu command; its stdout, or a failure with its stderr."""
    done = subprocess.run([KEFU, *args], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        fail(f"kefu {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return done.stdout


class Node:
    """One `kefu serve` on the shared redis-server, with a state directory of its own."""

    def __init__(self, name, work):
        self.name, self.work = name, work
        self.port = free_port()
        self.log = os.path.join(work, f"{name}.log")
        args = [
            KEFU, "serve", "--rules", os.path.join(work, "rules"), "--addr", f"127.0.0.1:{self.port}",
            "--redis", REDIS, "--model", "none", "--rate-limit", "0",
            "--max-connections-per-client", "0", "--state-dir", os.path.join(work, f"state-{name}"),
        ]
        self.proc = start_kefu(args, self.log)
        if not wait_ready(self.port, 120):
            fail(f"node {name} did not become ready; see {self.log}")

    def url(self):
        return f"http://127.0.0.1:{self.port}"


class Watch:
    """Asks `node` in new conversations every 10 ms, on a thread, until `changed(reply)`
    holds; `seen` is then the wall-clock time of that answer (compared with the store's
    record of the change: one host, one clock)."""

    def __init__(self, node, changed):
        self.node, self.changed, self.seen = node, changed, None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        deadline = time.monotonic() + 60
        n = 0
        while time.monotonic() < deadline:
            n += 1
            reply, _, _ = ask(self.node.port, f"watch-{self.node.name}-{time.monotonic_ns()}-{n}")
            if self.changed(reply):
                self.seen = time.time()
                return
            time.sleep(0.01)

    def after(self, changed_at):
        """Seconds from `changed_at` (the store's record) to the node's first answer from
        the change, or a failure."""
        self.thread.join(timeout=60)
        if self.seen is None:
            fail(f"node {self.node.name} did not switch within 60 s")
        return max(0.0, self.seen - changed_at)


def record_time(text):
    """Seconds since the epoch of an RFC 3339 time as kefu writes it."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def versions():
    return json.loads(kefu("versions", "--redis", REDIS, "--json"))


def main():
    if not REDIS:
        fail("KEFU_TEST_REDIS is not set (run me under tests/support/with-redis.sh)")
    work = tempfile.mkdtemp(prefix="kefu-publish-fleet-")
    nodes = []
    try:
        rules = os.path.join(work, "rules")
        shutil.copytree("rules", rules)
        draft = os.path.join(work, "draft")
        shutil.copytree("rules", draft)
        path = os.path.join(draft, "logistics.kefu")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        edited = text.replace("每单都送退换货运费险～", f"每单都送退换货运费险～（{MARKER}）", 1)
        if edited == text:
            fail("the shipping reply to edit is not in rules/logistics.kefu any more")
        with open(path, "w", encoding="utf-8") as f:
            f.write(edited)

        kefu("publish", rules, "--redis", REDIS, "-m", "初始版本", "--author", "fleet-test")
        a, b = Node("a", work), Node("b", work)
        nodes += [a, b]
        for node in (a, b):
            reply, _, _ = ask(node.port, f"first-{node.name}")
            if MARKER in reply:
                fail(f"node {node.name} answers from the draft before it was published")

        watch = Watch(b, lambda r: MARKER in r)
        kefu("publish", draft, "--server", a.url(), "-m", "运费话术加标记", "--author", "fleet-test")
        after_publish = watch.after(record_time(versions()["versions"][-1]["time"]))

        watch = Watch(a, lambda r: MARKER not in r)
        kefu("rollback", "--server", b.url(), "--author", "fleet-test")
        after_rollback = watch.after(record_time(versions()["versions"][-1]["time"]))

        # The draft was published as version 2 and rolled back since: a publish from it
        # names the live version as its parent (else it is refused as a conflict).
        live = versions()["pointers"]["live"]
        kefu("publish", draft, "--server", a.url(), "-m", "再来一次，灰度", "--canary", str(CANARY),
             "--parent", str(live), "--author", "fleet-test")
        # Both nodes must have picked the canary up before the split is judged.
        if not wait_for(lambda: canary_on(a) and canary_on(b), 10):
            fail("the nodes did not both serve the canary within 10 s")
        canary, mismatched = 0, 0
        for i in range(SESSIONS):
            session = f"canary-{i}"
            on_a = ask(a.port, session)
            on_b = ask(b.port, session)
            if on_a[1] != on_b[1]:
                mismatched += 1
            if on_a[2] == "canary":
                canary += 1
                if MARKER not in on_a[0]:
                    fail(f"{session}: the canary answered without the draft's reply")
        share = 100.0 * canary / SESSIONS
        if mismatched:
            fail(f"{mismatched} of {SESSIONS} conversations got different versions on the two nodes")
        if abs(share - CANARY) > 5:
            fail(f"the canary served {share:.1f}% of conversations, not about {CANARY}%")

        watch = Watch(b, lambda r: MARKER in r)
        kefu("promote", "--server", a.url(), "--author", "fleet-test")
        promoted = versions()["versions"][-1]
        note = [n for n in promoted.get("notes", []) if n["kind"] == "promoted"]
        if not note:
            fail("the promoted version has no `promoted` note")
        after_promote = watch.after(record_time(note[-1]["time"]))
        for i in range(50):
            reply, _, role = ask(b.port, f"promoted-{i}")
            if MARKER not in reply or role == "canary":
                fail(f"after promote, node b answered {role} without the draft's reply")

        c = Node("c", work)
        nodes.append(c)
        reply, _, _ = ask(c.port, "late-node")
        if MARKER not in reply:
            fail("a node started after the promote does not serve the live version")

        count = len(versions()["versions"])
        slowest = max(after_publish, after_rollback, after_promote)
        print(
            f"publish fleet: switch after publish {after_publish:.2f} s, after rollback "
            f"{after_rollback:.2f} s, after promote {after_promote:.2f} s; canary {share:.1f}% of "
            f"{SESSIONS} conversations, 0 split between nodes; late node on live; {count} versions",
            flush=True,
        )
        if slowest > SWITCH_S:
            fail(f"a node took {slowest:.2f} s to switch (target {SWITCH_S} s)")
    finally:
        for node in nodes:
            stop_within(node.proc, 10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
