#!/usr/bin/env python3
"""The agent workspace under load: many live conversations, many agents watching the
inbox, customers writing at a steady rate; how long a message takes to reach every
agent's screen, and how long the inbox list takes.

    benches/inbox_load.py                               # 1 node: 1,000 conversations, 20 agents
    tests/support/with-redis.sh benches/inbox_load.py --nodes 2   # two nodes sharing Redis
    tests/support/with-redis.sh benches/inbox_load.py --small --nodes 2   # make test's run

It starts `kefu serve` (`--bin`; the demo shop, no model, `--rate-limit 0`) once or on
two nodes sharing Redis (`--redis`, else KEFU_TEST_REDIS), adds AGENTS users with the
`agent` role (one users file and console key for both nodes), and then:

1. Opens CONVERSATIONS conversations, each with a rule-answered question; WAITING_SHARE
   of them (30%) ask for a person ("转人工") and wait; each agent takes HELD (5) of those
   over. The rest stay with the bot.
2. Signs the agents in (agent i on node i mod NODES) and opens each one's inbox stream
   (`GET /admin/inbox/stream`); every stream gets the snapshot, then every update.
3. For SECONDS seconds, sends RATE messages a second, evenly spaced (open loop: a slow
   server makes the messages queue, it does not slow the sending), from SENDERS threads
   on keep-alive connections: BOT_SHARE of them (50%) a rule-answered question in a bot
   conversation, AGENT_SHARE (10%) an agent's reply in a conversation they hold (sent to
   their node), the rest a customer's message in a waiting or held conversation (no bot
   answer). Customer messages go to the nodes in turn, as a balancer without stickiness
   sends them. Every message's text is new in its conversation, and one message per
   conversation is in flight at a time, so the `message` event that carries it is known.
4. Meanwhile agent01, signed in a second time, asks for the inbox list (`GET /admin/inbox`, in turn
   unfiltered with `limit=1000`, `state=waiting`, `q=快递`, `mine=1`) every LIST_EVERY s.

Measured: push latency, from just before a message's POST is sent to the moment its
`message` event arrived on an agent's stream, for every (message, stream) pair
(p50/p90/p99/max; on two nodes also split by whether the stream is on the node that
took the POST or the other one, through Redis); the same from the POST's answer
(`after_answer`: what the hub adds to the turn); the POSTs' own latency; the inbox
list's latency and size; the snapshot's; pushes missing after a 5 s wait, and
duplicates. The client is Python on the same cores: its threads stamp an event's arrival
when they get to it, so the figures carry the client's own delays (a few ms when busy).

Prints a line per phase and one JSON line at the end; fails (status 1) when a push is
missing or duplicated, a request failed, a stream ended early, or p99 is over
--max-p99-ms. Only the Python standard library.
"""

import argparse
import itertools
import json
import os
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from harness import (Client, SseStream, add_users, agent_reply, failer, free_port, last_line, login,  # noqa: E402
                     percentiles, start_kefu, wait_ready, write_console_key)

fail = failer("inbox load")
PASSWORD = "inbox-load-pw-" + str(os.getpid())
# Rule-answered questions of the demo shop (benches/chat.lua's and more): a bot
# conversation's messages cycle through them, so none repeats in one conversation.
QUESTIONS = ["包邮吗", "这件T恤洗了会缩水吗", "这个是什么面料", "有哪些颜色可选", "现在还有货吗",
             "什么时候发货", "发什么快递", "有尺码表吗", "能开发票吗", "几天能到"]
# What a customer writes while waiting for a person or talking to one.
WAITING = ["人呢？", "我的快递怎么还没到", "能快点吗", "我等了好久了", "订单一直没发货", "还在吗",
           "麻烦帮我看看物流", "东西收到了但是坏了", "能退款吗", "好的谢谢", "你好", "在吗在吗"]
# An agent's replies.
REPLIES = ["您好，我是客服，马上为您处理", "已经为您查询，请稍等", "快递已在派送中，今天能到",
           "给您添麻烦了，非常抱歉", "已为您加急处理", "还有其他可以帮您的吗", "好的，稍后联系您",
           "请您提供一下订单号", "已帮您备注了", "感谢您的耐心等待", "这边为您登记了", "祝您生活愉快"]


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=env("KEFU_BIN") or (
        str(ROOT / "target/release/kefu") if (ROOT / "target/release/kefu").exists() else str(ROOT / "target/debug/kefu")))
    p.add_argument("--nodes", type=int, choices=[1, 2], default=1)
    p.add_argument("--redis", default=env("KEFU_TEST_REDIS"), help="Redis URL (two nodes need it)")
    p.add_argument("--conversations", type=int, default=1000)
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--rate", type=float, default=50.0, help="messages a second")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--waiting-share", type=float, default=0.3)
    p.add_argument("--held", type=int, default=5, help="conversations each agent holds")
    p.add_argument("--bot-share", type=float, default=0.5)
    p.add_argument("--agent-share", type=float, default=0.1)
    p.add_argument("--senders", type=int, default=16)
    p.add_argument("--list-every", type=float, default=0.5)
    p.add_argument("--max-p99-ms", type=float, default=0, help="fail when push p99 is over this (0: never)")
    p.add_argument("--small", action="store_true",
                   help="make test's run: 200 conversations, 5 agents, 20 messages/s for 8 s")
    p.add_argument("--out", help="also write the summary (and every push latency) to this JSON file")
    p.add_argument("--seed", type=int, default=23)
    a = p.parse_args()
    if a.small:
        a.conversations, a.agents, a.rate, a.seconds, a.held = 200, 5, 20.0, 8.0, 4
    if a.nodes == 2 and not a.redis:
        p.error("two nodes need Redis: --redis URL or tests/support/with-redis.sh")
    if a.conversations < 10 or a.agents < 1 or a.rate <= 0 or a.seconds <= 0 or a.senders < 1:
        p.error("--conversations >= 10, --agents >= 1, --rate, --seconds and --senders > 0")
    if a.agents * a.held > a.conversations * a.waiting_share:
        p.error("--agents x --held must not exceed the waiting conversations")
    return a


class Node:
    def __init__(self, name, args, work):
        self.name, self.port, self.work = name, free_port(), work
        self.log = os.path.join(work, f"{name}.log")
        self.args = [
            args.bin, "serve", "--rules", str(ROOT / "rules"), "--addr", f"127.0.0.1:{self.port}", "--no-watch",
            "--model", "none", "--rate-limit", "0", "--max-connections-per-client", "0", "--drain-seconds", "0",
            "--log-level", "warn", "--state-dir", os.path.join(work, f"state-{name}"),
            "--users", os.path.join(work, "users.yaml"), "--console-key-file", os.path.join(work, "console.key"),
        ]
        if args.nodes == 2:
            self.args += ["--redis", args.redis]
        self.proc = None

    def start(self):
        self.proc = start_kefu(self.args, self.log)
        if not wait_ready(self.port, 120):
            fail(f"node {self.name} was not ready within 120 s ({last_line(self.log)}); see {self.log}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Pushes:
    """The messages sent and, for each, which streams got it when."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = {}  # (session, text) -> {"sent", "answered", "node", "kind", "got": {stream: at}}
        self.duplicates = 0
        self.unmatched = 0

    def expect(self, session, text, node, kind, sent):
        with self.lock:
            entry = {"sent": sent, "answered": None, "node": node, "kind": kind, "got": {}}
            self.pending[(session, text)] = entry
            return entry

    def arrived(self, stream, event):
        data = event.data
        if not isinstance(data, dict) or data.get("role") == "bot":
            return
        with self.lock:
            entry = self.pending.get((data.get("session"), data.get("text")))
            if entry is None:
                self.unmatched += 1
            elif stream in entry["got"]:
                self.duplicates += 1
            else:
                entry["got"][stream] = event.at


def main():
    args = parse_args()
    random.seed(args.seed)
    if not os.path.exists(args.bin):
        fail(f"{args.bin} not found: build kefu first (cargo build --release)")
    work = tempfile.mkdtemp(prefix="kefu-inbox-load-")
    write_console_key(os.path.join(work, "console.key"))
    names = [f"agent{i + 1:02d}" for i in range(args.agents)]
    error = add_users(args.bin, os.path.join(work, "users.yaml"), names, "agent", PASSWORD)
    if error:
        fail(error)
    nodes = [Node(n, args, work) for n in ["a", "b"][: args.nodes]]
    streams = []
    passed = False
    try:
        for node in nodes:
            node.start()
        run = os.getpid()
        sessions = [f"load-{run}-{i}" for i in range(args.conversations)]
        t0 = time.monotonic()

        # 1. The conversations: opened, some waiting, some held.
        waiting_n = int(args.conversations * args.waiting_share)
        agents = {}
        for i, name in enumerate(names):
            client = login(nodes[i % len(nodes)].port, name, PASSWORD)
            if client is None:
                fail(f"{name} could not sign in; see {nodes[i % len(nodes)].log}")
            agents[name] = client
        errors = []

        def open_batch(items):
            clients = [Client(n.port) for n in nodes]
            for i, message in items:
                status, body = clients[i % len(nodes)].request(
                    "POST", "/v1/chat", {"session_id": sessions[i], "message": message})
                if status != 200:
                    errors.append(f"opening {sessions[i]}: HTTP {status}")
                elif message == "转人工" and not body.get("handoff"):
                    errors.append(f"{sessions[i]}: 转人工 was not handed off (source {body.get('source')})")

        def in_parallel(items):
            chunks = [items[k::args.senders] for k in range(args.senders)]
            threads = [threading.Thread(target=open_batch, args=(c,)) for c in chunks]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        in_parallel([(i, QUESTIONS[i % len(QUESTIONS)]) for i in range(args.conversations)])
        in_parallel([(i, "转人工") for i in range(waiting_n)])
        holder = {}  # session -> agent name
        for k, name in enumerate(names[: args.agents]):
            for i in range(k * args.held, (k + 1) * args.held):
                status, _ = agents[name].request("POST", f"/v1/sessions/{sessions[i]}/takeover", {})
                if status != 200:
                    errors.append(f"{name} taking over {sessions[i]}: HTTP {status}")
                holder[sessions[i]] = name
        if errors:
            fail(f"{len(errors)} errors while opening the conversations, first: {errors[0]}")
        print(f"opened {args.conversations} conversations ({waiting_n} waiting, {len(holder)} of them held by "
              f"{args.agents} agents) on {len(nodes)} node(s) in {time.monotonic() - t0:.1f} s", flush=True)

        # 2. The agents' inbox streams.
        pushes = Pushes()
        snapshot_at = {}
        for k, name in enumerate(names[: args.agents]):
            client = agents[name]

            def on_event(event, k=k):
                if event.name == "message":
                    pushes.arrived(k, event)
                elif event.name == "snapshot":
                    conversations = event.data.get("conversations", []) if isinstance(event.data, dict) else []
                    snapshot_at[k] = (event.at, len(conversations))

            opened = time.monotonic()
            stream = SseStream(client.port, "/admin/inbox/stream", headers={"cookie": client.cookie},
                               on_event=on_event, keep=False, names={"message", "snapshot"})
            stream.opened_at = opened
            stream.node = nodes.index(next(n for n in nodes if n.port == client.port))
            streams.append(stream)
        deadline = time.monotonic() + 30
        while len(snapshot_at) < len(streams) and time.monotonic() < deadline:
            if any(s.ended.is_set() for s in streams):
                break
            time.sleep(0.05)
        if len(snapshot_at) < len(streams):
            broken = next((s for s in streams if s.ended.is_set()), streams[0])
            fail(f"{len(snapshot_at)} of {len(streams)} inbox streams sent their snapshot within 30 s "
                 f"(one answered HTTP {broken.status}, {broken.error})")
        snapshot_ms = [(snapshot_at[k][0] - s.opened_at) * 1000 for k, s in enumerate(streams)]
        snapshot_size = min(size for _, size in snapshot_at.values())
        print(f"{len(streams)} inbox streams open, snapshots of {snapshot_size} conversations in "
              f"{percentiles(snapshot_ms)} ms", flush=True)

        # 3. Steady traffic, and 4. the inbox list, for SECONDS.
        bot_sessions = sessions[waiting_n:]
        human_sessions = sessions[:waiting_n]
        held_sessions = list(holder)
        busy = set()
        busy_lock = threading.Lock()
        counters = {s: 0 for s in sessions}
        jobs = queue.Queue()
        post_ms, failures = [], []
        turn = itertools.count()
        kinds = {"bot": 0, "customer": 0, "agent": 0}

        def pick(pool):
            with busy_lock:
                for _ in range(20):
                    session = random.choice(pool)
                    if session not in busy:
                        busy.add(session)
                        counters[session] += 1
                        return session, counters[session]
            return None, 0

        def sender():
            customers = [Client(n.port) for n in nodes]
            staff = {}
            while True:
                job = jobs.get()
                if job is None:
                    return
                roll = random.random()
                if roll < args.bot_share:
                    kind, (session, n) = "bot", pick(bot_sessions)
                    text = QUESTIONS[n % len(QUESTIONS)] if session else None
                elif roll < args.bot_share + args.agent_share:
                    kind, (session, n) = "agent", pick(held_sessions)
                    text = f"{REPLIES[n % len(REPLIES)]}（{n}）" if session else None
                else:
                    kind, (session, n) = "customer", pick(human_sessions)
                    text = f"{WAITING[n % len(WAITING)]}（{n}）" if session else None
                if session is None:
                    continue
                # A bot conversation's questions repeat once it has had them all; mark the
                # repeats so that each text is new in its conversation.
                if kind == "bot" and n > len(QUESTIONS):
                    text = f"{text}（{n}）"
                try:
                    if kind == "agent":
                        name = holder[session]
                        client = staff.get(name)
                        if client is None:
                            client = staff[name] = Client(agents[name].port, cookie=agents[name].cookie,
                                                          csrf=agents[name].csrf)
                        node = nodes.index(next(x for x in nodes if x.port == client.port))
                        entry = pushes.expect(session, text, node, kind, time.monotonic())
                        status, _ = agent_reply(client, session, text)
                    else:
                        node = next(turn) % len(nodes)
                        entry = pushes.expect(session, text, node, kind, time.monotonic())
                        status, _ = customers[node].request("POST", "/v1/chat", {"session_id": session, "message": text})
                    entry["answered"] = time.monotonic()
                    with busy_lock:
                        post_ms.append((entry["answered"] - entry["sent"]) * 1000)
                        kinds[kind] += 1
                    if status != 200:
                        failures.append(f"{kind} message in {session}: HTTP {status}")
                        entry["failed"] = True
                finally:
                    with busy_lock:
                        busy.discard(session)

        list_ms, list_sizes = {}, {}
        stop_listing = threading.Event()

        def lister():
            # agent01 again, in a session of their own (no stream): `mine=1` lists what they hold.
            me = login(agents["agent01"].port, "agent01", PASSWORD)
            if me is None:
                failures.append("agent01 could not sign in a second time for the list")
                return
            variants = {"limit=1000": "limit=1000", "state=waiting": "state=waiting",
                        "q=快递": "q=%E5%BF%AB%E9%80%92", "mine=1": "mine=1"}
            labels = list(variants)
            for i in itertools.count():
                if stop_listing.wait(args.list_every):
                    return
                variant = labels[i % len(labels)]
                started = time.monotonic()
                status, body = me.request("GET", f"/admin/inbox?{variants[variant]}")
                took = (time.monotonic() - started) * 1000
                if status != 200:
                    failures.append(f"GET /admin/inbox?{variant}: HTTP {status}")
                    continue
                list_ms.setdefault(variant, []).append(took)
                list_sizes[variant] = (len(body.get("conversations", [])), body.get("counts"))

        senders = [threading.Thread(target=sender, daemon=True) for _ in range(args.senders)]
        for t in senders:
            t.start()
        listing = threading.Thread(target=lister, daemon=True)
        listing.start()
        started = time.monotonic()
        total = int(args.rate * args.seconds)
        lag = 0.0
        for k in range(total):
            due = started + k / args.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                lag = max(lag, now - due)
            jobs.put(k)
        for _ in senders:
            jobs.put(None)
        for t in senders:
            t.join(60)
        sent_s = time.monotonic() - started
        stop_listing.set()
        listing.join(10)

        # Whatever is still on its way gets 5 s.
        with pushes.lock:
            entries = [e for e in pushes.pending.values() if not e.get("failed")]
        wait_until = time.monotonic() + 5
        while time.monotonic() < wait_until:
            with pushes.lock:
                if all(len(e["got"]) == len(streams) for e in entries):
                    break
            time.sleep(0.05)
        ended = sum(s.ended.is_set() for s in streams)

        with pushes.lock:
            push, local, remote, after, missing = [], [], [], [], 0
            missing_by_kind = {"bot": 0, "customer": 0, "agent": 0}
            by_kind = {"bot": [], "customer": [], "agent": []}
            for e in entries:
                for k, s in enumerate(streams):
                    at = e["got"].get(k)
                    if at is None:
                        missing += 1
                        missing_by_kind[e["kind"]] += 1
                        continue
                    ms = (at - e["sent"]) * 1000
                    push.append(ms)
                    by_kind[e["kind"]].append(ms)
                    (local if s.node == e["node"] else remote).append(ms)
                    if e["answered"] is not None:
                        after.append((at - e["answered"]) * 1000)
            duplicates, unmatched = pushes.duplicates, pushes.unmatched

        summary = {
            "nodes": len(nodes), "conversations": args.conversations, "agents": args.agents,
            "rate": args.rate, "seconds": args.seconds, "messages": len(entries), "by_kind": kinds,
            "sending_s": round(sent_s, 1), "sender_lag_ms": round(lag * 1000, 1),
            "pushes": len(push), "missing": missing, "missing_by_kind": missing_by_kind, "duplicates": duplicates,
            "push_ms": percentiles(push),
            "push_ms_by_kind": {k: percentiles(v) for k, v in by_kind.items()},
            "after_answer_ms": percentiles(after), "post_ms": percentiles(post_ms),
            "list_ms": percentiles([x for v in list_ms.values() for x in v]),
            "list_ms_by_query": {k: percentiles(v) for k, v in list_ms.items()},
            "list_sizes": {k: v[0] for k, v in list_sizes.items()},
            "counts": list_sizes.get("limit=1000", (None, None))[1],
            "snapshot_ms": percentiles(snapshot_ms), "snapshot_size": snapshot_size,
            "errors": len(failures), "streams_ended": ended, "bin": args.bin,
        }
        if len(nodes) == 2:
            summary["push_ms_same_node"] = percentiles(local)
            summary["push_ms_other_node"] = percentiles(remote)
        metrics = server_push_mean(nodes)
        if metrics is not None:
            summary["server_push_mean_ms"] = metrics
        print(json.dumps(summary, ensure_ascii=False), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"summary": summary, "push_ms": push}, f)
        problems = []
        if failures:
            problems.append(f"{len(failures)} requests failed, first: {failures[0]}")
        if missing:
            problems.append(f"{missing} pushes missing ({missing_by_kind})")
        if duplicates:
            problems.append(f"{duplicates} pushes came twice")
        if ended:
            problems.append(f"{ended} inbox streams ended early")
        if args.max_p99_ms and push and summary["push_ms"]["p99"] > args.max_p99_ms:
            problems.append(f"push p99 {summary['push_ms']['p99']} ms is over {args.max_p99_ms} ms")
        if not push:
            problems.append("no push arrived")
        if problems:
            fail("; ".join(problems) + f"; the logs are in {work}")
        passed = True
    finally:
        for s in streams:
            s.close()
        for node in nodes:
            node.stop()
        if passed:
            shutil.rmtree(work, ignore_errors=True)


def server_push_mean(nodes):
    """The mean of `kefu_inbox_push_seconds` over the nodes, in ms (None without it)."""
    total, count = 0.0, 0
    for node in nodes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("kefu_inbox_push_seconds_sum"):
                total += float(line.split()[-1])
            elif line.startswith("kefu_inbox_push_seconds_count"):
                count += int(float(line.split()[-1]))
    return round(total / count * 1000, 2) if count else None


if __name__ == "__main__":
    main()
