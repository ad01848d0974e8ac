#!/usr/bin/env python3
"""The agent workspace across two nodes: two kefu nodes sharing one redis-server (and
one users file and console key), agents signed in on node A, customers talking to node B.

Usage: tests/support/with-redis.sh tests/support/inbox_fleet.py [target/debug/kefu]

What it checks (one line per case, then a summary line):
- (a) takeover: agent amy, her inbox stream open on A, takes over on A a conversation
  the bot answered on B; the customer's next message on B is not answered by the bot
  (`source: "human"`, empty reply) and reaches amy's stream on A as a `message` event;
  her reply on A reaches the customer's own event stream (`/v1/sessions/{id}/events`)
  open on B.
- (b) silence: a customer's streamed model answer on B (a scripted model that streams a
  token every TOKEN_MS) is taken over from A after its first piece went out: B's stream
  sends no model text later than SILENCE_SLACK_MS after the takeover answered, it ends
  with a `done` that is `dropped` (empty reply, `source: "human"`) preceded by a
  `retract` event (text went out), and the stored history has none of the model's text.
- (c) grace (`--agent-grace 2`): cleo's only inbox stream closes while she holds a
  conversation: it is still hers a second later, and waiting again (kind, reason and
  group kept) within GRACE_DEADLINE_S (3.5) seconds, on both nodes, with its history
  intact (the customer's messages, the one queued while she held it, her reply). dan's
  stream drops and comes back within the grace: he keeps his conversation. amy, whose
  stream stays open on A and who never had one on B, keeps hers.

Every case runs even when an earlier one failed; the script fails (status 1) when any
did, naming the logs' directory. Everything listens on 127.0.0.1; every wait has a
deadline, so the script ends within a minute or two whatever happens.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from harness import (Client, SseStream, add_users, agent_reply, failer, free_port, last_line, login, start_kefu,
                     wait_for, wait_ready, write_console_key)

KEFU = sys.argv[1] if len(sys.argv) > 1 else "target/debug/kefu"
REDIS = os.environ.get("KEFU_TEST_REDIS")
PASSWORD = "inbox-fleet-pw-" + str(os.getpid())
GRACE_S = 2
GRACE_DEADLINE_S = float(os.environ.get("GRACE_DEADLINE_S", "3.5"))
TOKEN_MS = int(os.environ.get("TOKEN_MS", "80"))
SILENCE_SLACK_MS = int(os.environ.get("SILENCE_SLACK_MS", "500"))
# The model's answer to "你们老板是谁呀" (the demo shop's rules leave it to the model): 30
# tokens of two characters, about 2.4 s at 80 ms a token.
MODEL_ANSWER = ("关于我们店铺的情况，小美简单为您介绍一下：我们是一家专注原创设计的服装品牌，"
                "所有商品都由自有工厂生产，品质有保障，欢迎您随时选购哦。")
fail = failer("inbox fleet")


class Node:
    def __init__(self, name, work):
        self.name, self.port, self.work = name, free_port(), work
        self.log = os.path.join(work, f"{name}.log")
        self.proc = None

    def start(self):
        args = [
            KEFU, "serve", "--rules", "rules", "--addr", f"127.0.0.1:{self.port}", "--no-watch",
            "--redis", REDIS, "--mock-llm", os.path.join(self.work, "mock.yaml"),
            "--rate-limit", "0", "--answer-cache", "0", "--drain-seconds", "0",
            "--agent-grace", str(GRACE_S),
            "--state-dir", os.path.join(self.work, f"state-{self.name}"),
            "--users", os.path.join(self.work, "users.yaml"),
            "--console-key-file", os.path.join(self.work, "console.key"),
        ]
        self.proc = start_kefu(args, self.log)
        if not wait_ready(self.port, 60):
            fail(f"node {self.name} was not ready within 60 s ({last_line(self.log)}); see {self.log}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def inbox_stream(client):
    """The signed-in agent's inbox stream on the client's node (kept open by a thread)."""
    return SseStream(client.port, "/admin/inbox/stream", headers={"cookie": client.cookie})


def state_of(client, session):
    """The conversation's state (`waiting`, `agent`, ...) in the hub of the client's node,
    with its summary; (None, None) when the node does not know it."""
    status, body = client.request("GET", f"/admin/inbox/{session}")
    if status != 200 or not isinstance(body, dict):
        return None, None
    summary = body.get("summary") or {}
    return summary.get("state"), summary


def chat(port, session, message):
    status, body = Client(port).request("POST", "/v1/chat", {"session_id": session, "message": message})
    return body if status == 200 else None


def history_texts(client, session):
    status, body = client.request("GET", f"/v1/sessions/{session}")
    if status != 200:
        return None, None
    return [(h.get("role"), h.get("text", "")) for h in body.get("history", [])], body


def case_takeover(a, b, amy, stream, run):
    """(a): takeover on A silences the bot on B; the customer's message reaches A's inbox
    (`stream`, amy's, open all along); A's reply reaches the customer's event stream on B."""
    session = f"inbox-{run}-a"
    if not stream.wait_event(lambda e: e.name == "snapshot", 10):
        return False, f"amy's inbox stream on A sent no snapshot (HTTP {stream.status}, {stream.error})"
    first = chat(b.port, session, "包邮吗")
    if not first or first.get("source") == "human":
        return False, f"the first message on B was not answered by the bot: {first}"
    token = first.get("session_token", "")
    status, _ = amy.request("POST", f"/v1/sessions/{session}/takeover", {})
    if status != 200:
        return False, f"takeover on A answered {status}"
    mark = len(stream.events)
    held = stream.wait_event(lambda e: e.name == "conversation" and isinstance(e.data, dict)
                             and e.data.get("id") == session and e.data.get("state") == "agent", 3)
    if not held:
        return False, "amy's stream on A did not show the conversation as `agent` within 3 s"
    customer = SseStream(b.port, f"/v1/sessions/{session}/events?token={token}")
    if not customer.opened.wait(5) or customer.status != 200:
        return False, f"the customer's event stream on B answered {customer.status} ({customer.error})"
    message = "我的快递怎么还没到，麻烦帮我看看"
    sent = time.monotonic()
    answer = chat(b.port, session, message)
    if not answer or answer.get("source") != "human" or answer.get("reply"):
        return False, f"B answered the customer after the takeover on A: {answer}"
    pushed = stream.wait_event(lambda e: e.name == "message" and isinstance(e.data, dict)
                               and e.data.get("session") == session and e.data.get("text") == message, 3,
                               start=mark)
    if not pushed:
        return False, "the customer's message on B did not reach amy's inbox stream on A within 3 s"
    push_ms = (pushed.at - sent) * 1000
    words = "您好，我是客服amy，马上为您查询物流"
    replied = time.monotonic()
    status, _ = agent_reply(amy, session, words)
    if status != 200:
        customer.close()
        return False, f"amy's reply on A answered {status}"
    got = customer.wait_event(lambda e: e.name == "message" and isinstance(e.data, dict)
                              and e.data.get("role") == "agent" and e.data.get("text") == words, 3)
    customer.close()
    if not got:
        return False, "amy's reply on A did not reach the customer's event stream on B within 3 s"
    return True, (f"takeover on A, message on B answered `human`, on A's inbox in {push_ms:.0f} ms; "
                  f"A's reply on the customer's stream on B in {(got.at - replied) * 1000:.0f} ms")


def case_silence(a, b, amy, run):
    """(b): a takeover on A while B streams a model answer stops B's text."""
    session = f"inbox-{run}-b"
    stream = SseStream(b.port, "/v1/chat", body={"session_id": session, "message": "你们老板是谁呀", "stream": True})
    first = stream.wait_event(lambda e: e.name in ("delta", "done"), 15)
    if not first or first.name != "delta":
        stream.close()
        return False, f"B's stream sent no model text first ({first}, HTTP {stream.status}, {stream.error})"
    status, _ = amy.request("POST", f"/v1/sessions/{session}/takeover", {})
    taken = time.monotonic()
    if status != 200:
        stream.close()
        return False, f"takeover on A answered {status}"
    if not stream.ended.wait(15):
        stream.close()
        return False, "B's stream did not end within 15 s of the takeover"
    events = list(stream.events)
    deltas = [e for e in events if e.name == "delta"]
    late = [e for e in deltas if e.at > taken + SILENCE_SLACK_MS / 1000]
    shown = "".join(e.data.get("text", "") for e in deltas if isinstance(e.data, dict))
    done = [e for e in events if e.name == "done"]
    names = [e.name for e in events]
    problems = []
    if late:
        problems.append(f"{len(late)} pieces of model text came more than {SILENCE_SLACK_MS} ms after the "
                        f"takeover (the last {(late[-1].at - taken) * 1000:.0f} ms after)")
    if shown == MODEL_ANSWER:
        problems.append("the whole model answer was streamed")
    if len(done) != 1:
        problems.append(f"{len(done)} `done` events")
    else:
        body = done[0].data if isinstance(done[0].data, dict) else {}
        if body.get("dropped") is not True or body.get("reply") or body.get("source") != "human":
            problems.append(f"`done` is not a dropped human answer: dropped={body.get('dropped')} "
                            f"source={body.get('source')} reply={body.get('reply')!r}")
        if "retract" not in names or names.index("retract") > names.index("done"):
            problems.append(f"no `retract` before `done` although text went out (events: {summarize(names)})")
    history, _ = history_texts(amy, session)
    if history is None:
        problems.append("the session could not be read back")
    elif any(role == "bot" and text and text in MODEL_ANSWER for role, text in history):
        problems.append("the model's answer is in the stored history")
    after = [e for e in deltas if e.at > taken]
    last_ms = (after[-1].at - taken) * 1000 if after else 0
    detail = (f"{len(deltas)} pieces streamed ({len(shown)} of {len(MODEL_ANSWER)} characters), {len(after)} "
              f"after the takeover answered (last {last_ms:.0f} ms after), events {summarize(names)}")
    if problems:
        return False, "; ".join(problems) + f" [{detail}]"
    return True, detail


def summarize(names):
    """`delta x12, retract, done`: the event names in order, runs counted."""
    out = []
    for name in names:
        if out and out[-1][0] == name:
            out[-1][1] += 1
        else:
            out.append([name, 1])
    return ", ".join(n if c == 1 else f"{n} x{c}" for n, c in out)


def case_grace(a, b, amy, cleo, dan, run, amy_holds):
    """(c): an agent gone for longer than the grace loses their conversations to the queue;
    one back within it keeps them; nothing the customer wrote is lost."""
    s_cleo, s_dan, s_amy = f"inbox-{run}-c1", f"inbox-{run}-c2", f"inbox-{run}-a"
    streams = {"cleo": inbox_stream(cleo), "dan": inbox_stream(dan)}
    try:
        for name, stream in streams.items():
            if not stream.wait_event(lambda e: e.name == "snapshot", 10):
                return False, f"{name}'s inbox stream on A sent no snapshot (HTTP {stream.status}, {stream.error})"
        for session in (s_cleo, s_dan):
            if not chat(b.port, session, "包邮吗"):
                return False, f"B did not answer {session}"
        for client, session in ((cleo, s_cleo), (dan, s_dan)):
            status, _ = client.request("POST", f"/v1/sessions/{session}/takeover", {})
            if status != 200:
                return False, f"takeover of {session} on A answered {status}"
        queued = "还在吗？我等了好久了"
        if (chat(b.port, s_cleo, queued) or {}).get("source") != "human":
            return False, "B answered cleo's conversation after her takeover"
        words = "在的，我是cleo，正在为您处理"
        if agent_reply(cleo, s_cleo, words)[0] != 200:
            return False, "cleo's reply failed"
        before_state, before = state_of(amy, s_cleo)
        if before_state != "agent":
            return False, f"cleo's conversation is `{before_state}` on A before her stream closed"
        streams["cleo"].close()
        closed = time.monotonic()
        streams["dan"].close()
        time.sleep(0.5)
        streams["dan"] = inbox_stream(dan)
        if not streams["dan"].wait_event(lambda e: e.name == "snapshot", 5):
            return False, "dan's second inbox stream sent no snapshot"
        time.sleep(max(0.0, closed + 1.0 - time.monotonic()))
        early, _ = state_of(amy, s_cleo)
        if early != "agent":
            return False, f"cleo's conversation was `{early}` 1 s after her stream closed (grace {GRACE_S} s)"
        if not wait_for(lambda: state_of(amy, s_cleo)[0] == "waiting", closed + GRACE_DEADLINE_S - time.monotonic(),
                        step=0.1):
            return False, (f"cleo's conversation is `{state_of(amy, s_cleo)[0]}` on A "
                           f"{GRACE_DEADLINE_S} s after her stream closed (grace {GRACE_S} s)")
        requeued_s = time.monotonic() - closed
        _, after = state_of(amy, s_cleo)
        problems = []
        if not wait_for(lambda: state_of(Client(b.port, cookie=amy.cookie), s_cleo)[0] == "waiting", 2, step=0.1):
            problems.append(f"B's hub shows cleo's conversation as "
                            f"`{state_of(Client(b.port, cookie=amy.cookie), s_cleo)[0]}` 2 s after A requeued it")
        if after.get("agent"):
            problems.append(f"the requeued conversation still names agent {after.get('agent')}")
        for field in ("kind", "reason", "group"):
            if after.get(field) != before.get(field):
                problems.append(f"`{field}` changed from {before.get(field)!r} to {after.get(field)!r}")
        history, session = history_texts(amy, s_cleo)
        texts = [t for _, t in history or []]
        for said in ("包邮吗", queued, words):
            if said not in texts:
                problems.append(f"`{said}` is missing from the history")
        takeover = (session or {}).get("takeover") or {}
        if takeover.get("agent") or takeover.get("assigned_at"):
            problems.append(f"the stored takeover is still held: {takeover}")
        for name, session_id in (("dan", s_dan), ("amy", s_amy))[: 2 if amy_holds else 1]:
            state, _ = state_of(amy, session_id)
            if state != "agent":
                problems.append(f"{name}'s conversation is `{state}` (their stream was open)")
        if problems:
            return False, "; ".join(problems)
        return True, (f"cleo's conversation waiting again {requeued_s:.1f} s after her stream closed "
                      f"(grace {GRACE_S} s), on B too, history intact; dan (back in 0.5 s) and amy kept theirs")
    finally:
        for stream in streams.values():
            stream.close()


def main():
    if not REDIS:
        fail("KEFU_TEST_REDIS is not set; run under tests/support/with-redis.sh")
    if subprocess.run(["sh", "-c", f"command -v {KEFU}"], capture_output=True).returncode:
        fail(f"{KEFU} not found (build kefu first)")
    work = tempfile.mkdtemp(prefix="kefu-inbox-fleet-")
    with open(os.path.join(work, "mock.yaml"), "w") as f:
        f.write(f"token_delay_ms: {TOKEN_MS}\nanswers:\n  - {{ when: 老板, reply: {MODEL_ANSWER}, confidence: 0.95 }}\n")
    write_console_key(os.path.join(work, "console.key"))
    error = add_users(KEFU, os.path.join(work, "users.yaml"), ["amy", "cleo", "dan"], "agent", PASSWORD)
    if error:
        fail(error)
    nodes = [Node("a", work), Node("b", work)]
    passed = False
    try:
        for node in nodes:
            node.start()
        a, b = nodes
        agents = {name: login(a.port, name, PASSWORD) for name in ("amy", "cleo", "dan")}
        for name, client in agents.items():
            if client is None:
                fail(f"{name} could not sign in on node a; see {a.log}")
        run = os.getpid()
        results = []
        # amy's inbox stream on A stays open to the end: she is online, so the grace never
        # requeues what she holds.
        amy_stream = inbox_stream(agents["amy"])
        for label, case in (("(a) takeover across nodes",
                             lambda: case_takeover(a, b, agents["amy"], amy_stream, run)),
                            ("(b) takeover silences a streaming model answer",
                             lambda: case_silence(a, b, agents["amy"], run)),
                            ("(c) agent grace", lambda: case_grace(a, b, agents["amy"], agents["cleo"],
                                                                   agents["dan"], run, results[0]))):
            try:
                ok, detail = case()
            except Exception as e:  # a case that breaks must not hide the others' results
                ok, detail = False, f"{type(e).__name__}: {e}"
            results.append(ok)
            print(f"{label}: {'ok' if ok else 'FAILED'}: {detail}", flush=True)
        amy_stream.close()
        print(f"inbox fleet: {sum(results)} of {len(results)} cases passed", flush=True)
        if not all(results):
            fail(f"see the logs in {work}")
        passed = True
    finally:
        for node in nodes:
            node.stop()
        # The logs stay for a failed run (the failure message names the directory).
        if passed:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
