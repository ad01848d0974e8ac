#!/usr/bin/env python3
"""Soak: an hour of mixed traffic against one release `kefu serve`, with RSS, open file
descriptors, latency and errors recorded every minute (issue #20).

    benches/soak.py                          # an hour, the default model in process
    benches/soak.py --duration 180 --mock-llm   # a quick check with a scripted model
    KEFU_BIN=/tmp/kefu-old benches/soak.py      # another build

kefu serves a copy of rules/ in a temporary directory with the file watcher on, the
real default model in process (`--model models/default.gguf --threads 2`; `--mock-llm`
uses benches/slow_model.yaml instead), and KEFU_ADMIN_TOKEN set to a random token. The
traffic is steady, not the most the machine can take:

- rule turns (the questions of benches/chat.lua) at --rate a second from --workers
  threads, on /v1/chat and /v1/chat/completions, plain and streamed (SSE), over
  keep-alive connections that are dropped and opened again now and then; a session id
  lives for 1-4 turns and a new one follows, so the session store fills to its bound
  (100,000) and evicts;
- model turns (questions no rule answers, varied so the answer cache does not answer
  them) from --model-workers threads back to back, both routes, plain and streamed;
- SSE streams cut: every --cut-every seconds a streamed turn (rule or model) whose
  client closes the socket after the first bytes or the first event;
- agents: every --agent-every seconds a conversation taken over, a customer message
  queued, an agent reply, the session read, released, and a satisfaction score; plus
  refusals provoked on purpose and expected (a second score: 409, a score without the
  session token: 403, an agent reply to a conversation nobody took over: 409);
- reloads: every --reload-every seconds a rule's reply text in the copy is changed
  (in place and by rename, alternately) for the watcher, then POST /admin/reload;
- /healthz and /metrics now and then.

Every --interval seconds (60) it records: requests done, errors by kind (an unexpected
status, a connection error, a timeout, a malformed answer; the first few kept whole),
p50/p99 of the rule turns of that interval, kefu's RSS (VmRSS), open file descriptors
(/proc/PID/fd) and CPU time. At the end: the RSS drift per 1,000 requests (the
least-squares slope of RSS against cumulative requests, the first --warmup seconds (300)
left out), the errors, kefu's log checked for panics and errors, and a verdict against
the goals (drift under 1 MB per 1,000 requests, 0 errors). Writes --csv, --json and an
SVG chart (--chart, docs/img/soak.svg), and prints the figures as a Markdown table for
docs/operations.md. Exit status 1 when a goal is missed.

--session-pool N draws the rule turns' session ids from N per thread instead of new ones
(a run beside a default one tells the session store filling from memory not given back);
--admin-reconnect opens a new connection for each reload round instead of keeping one
alive across the 20 s gap (builds before 2026-12-05 closed idle keep-alive connections
after 10 s, not after --idle-timeout); --rules DIR serves another rules directory (an
older build needs the rules of its day); --replot JSON redraws the chart of a run.

Environment: KEFU_BIN (target/release/kefu). Stdlib Python 3.11 only; run from anywhere.
"""

import argparse
import csv
import html
import http.client
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The rule file edited for reloads and the reply changed in it (benches/reload_under_load.sh
# edits the same one).
RELOAD_FILE = "presale.kefu"
RELOAD_REPLY = "我们的T恤经过预缩处理，正常洗涤不会明显缩水，建议冷水手洗。"

# Questions no rule of the demo shop answers (checked against it: each went to the model),
# with a tail that changes every time so that the answer cache (which keeps model answers
# for the same question) does not answer them instead of the model. The tail's number is
# written in Chinese numerals: digits read as an order number or a complaint to the
# classifier, and so did "这是我第N次问了".
MODEL_QUESTIONS = ["你们老板是谁呀", "在吗，你们公司在哪个城市", "亲，今天天气怎么样", "请问你喜欢什么电影",
                   "你们那边今天下雨了吗", "你平时看书吗", "你们店里有几个人呀"]
DIGITS = "零一二三四五六七八九"


def chinese_number(n):
    """1..9999 in Chinese numerals (三千七百, 两千零一, 六十一)."""
    out, zero = "", False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d, n = divmod(n, value)
        if d:
            if zero and out:
                out += "零"
            out += ("两" if d == 2 and unit in ("千", "百") else DIGITS[d]) + unit
            zero = False
        else:
            zero = bool(out)
    return out[1:] if out.startswith("一十") else out


def chat_questions():
    """The questions of benches/chat.lua (the rule-answered load of benches/load.sh)."""
    with open(os.path.join(ROOT, "benches", "chat.lua"), encoding="utf-8") as f:
        return re.findall(r'^  "(.*)",$', f.read(), re.M)


class Stats:
    """Counters shared by the workers; the sampler takes an interval's worth at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.kinds = {}  # what was asked: rule, model, cut, agent, reload, ...
        self.expected_4xx = 0
        self.errors = {}  # kind -> count
        self.error_samples = []
        self.rule_latencies = []  # this interval's, in ms
        self.model_latencies = []
        self.sources = {}  # "kind source" -> count: what answered each kind of turn
        self.reloads = {"edits": 0, "applied": 0, "admin": 0}

    def done(self, kind, ms=None):
        with self.lock:
            self.requests += 1
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if kind == "rule":
                self.rule_latencies.append(ms)
            elif kind == "model":
                self.model_latencies.append(ms)

    def expected(self):
        with self.lock:
            self.requests += 1
            self.expected_4xx += 1

    def error(self, kind, detail):
        with self.lock:
            self.requests += 1
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.error_samples) < 10:
                self.error_samples.append({"at": time.strftime("%H:%M:%S"), "kind": kind, "detail": detail[:600]})

    def source(self, kind, src):
        with self.lock:
            key = f"{kind} {src}"
            self.sources[key] = self.sources.get(key, 0) + 1

    def take_latencies(self):
        with self.lock:
            rule, self.rule_latencies = self.rule_latencies, []
            model, self.model_latencies = self.model_latencies, []
            return rule, model


class Client:
    """One keep-alive connection to kefu; reopened after an error or when asked."""

    def __init__(self, addr, timeout):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None):
        """(status, body bytes) of one request; raises OSError/HTTPException on failure."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        data = json.dumps(body, ensure_ascii=False).encode() if isinstance(body, dict) else body
        try:
            self.conn.request(method, path, body=data, headers=h)
            resp = self.conn.getresponse()
            out = resp.read()
        except Exception:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, out


def classify(exc):
    return "timeout" if isinstance(exc, (socket.timeout, TimeoutError)) else "connection"


def parse_sse(raw, route):
    """The final answer of a streamed turn: the `done` event (/v1/chat) or the chunk with
    `kefu` (/v1/chat/completions), as the /v1/chat response; None when the stream is
    malformed or incomplete."""
    text = raw.decode("utf-8", "replace")
    if route == "/v1/chat":
        m = re.search(r"event: done\ndata: (.*)\n", text)
        return json.loads(m.group(1)) if m else None
    if "data: [DONE]" not in text:
        return None
    for line in text.splitlines():
        if line.startswith("data: {") and '"kefu"' in line:
            return json.loads(line[6:]).get("kefu")
    return None


def turn_body(route, session, message, stream):
    user = {"segment": "vip", "orders": 3}
    if route == "/v1/chat":
        return {"session_id": session, "message": message, "user": user, "stream": stream}
    return {"model": "kefu-soak", "kefu_session": session, "kefu_user": user, "stream": stream,
            "messages": [{"role": "user", "content": message}]}


def answer_of(status, raw, route, stream):
    """The /v1/chat response inside a 200 turn's body, or None when it is malformed."""
    if status != 200:
        return None
    try:
        if stream:
            return parse_sse(raw, route)
        data = json.loads(raw)
        return data if route == "/v1/chat" else data.get("kefu")
    except (ValueError, AttributeError):
        return None


def turn(client, stats, kind, route, session, message, stream):
    """One customer turn; records it and returns its answer (None on error)."""
    t0 = time.perf_counter()
    try:
        status, raw = client.request("POST", route, turn_body(route, session, message, stream))
    except Exception as e:  # noqa: BLE001 - every failure is counted, none ends the soak
        stats.error(classify(e), f"{kind} {route} stream={stream}: {e!r}")
        return None
    ms = (time.perf_counter() - t0) * 1000
    answer = answer_of(status, raw, route, stream)
    if answer is None:
        k = f"status {status}" if status != 200 else "malformed"
        stats.error(k, f"{kind} {route} stream={stream}: {raw[:400].decode('utf-8', 'replace')}")
        return None
    stats.done(kind, ms)
    stats.source(kind, answer.get("source"))
    return answer


class Soak:
    def __init__(self, args, addr, token, rules_dir):
        self.args = args
        self.addr = addr
        self.token = token
        self.rules_dir = rules_dir
        self.stats = Stats()
        self.stop = threading.Event()
        self.questions = chat_questions()
        self.auth = {"Authorization": f"Bearer {token}"}
        self.sessions = 0
        self.session_lock = threading.Lock()

    def new_session(self, prefix):
        with self.session_lock:
            self.sessions += 1
            return f"soak-{prefix}-{self.sessions}"

    def model_question(self, rng):
        return f"{rng.choice(MODEL_QUESTIONS)}，我今天走了{chinese_number(rng.randint(1, 9999))}步"

    def rule_worker(self, i):
        rng = random.Random(i)
        client = Client(self.addr, self.args.timeout)
        period = self.args.workers / self.args.rate
        nxt = time.monotonic()
        session, left = None, 0
        while not self.stop.is_set():
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1:
                nxt = time.monotonic()  # far behind: do not burst to catch up
            if left == 0:
                left = rng.randint(1, 4)
                if self.args.session_pool:
                    session = f"soak-pool-{i}-{rng.randrange(self.args.session_pool)}"
                else:
                    session = self.new_session(f"r{i}")
            left -= 1
            r = rng.random()
            route = "/v1/chat" if r < 0.7 else "/v1/chat/completions"
            stream = rng.random() < 0.3
            turn(client, self.stats, "rule", route, session, rng.choice(self.questions), stream)
            if rng.random() < 0.01:
                client.close()  # connections come and go too
        client.close()

    def model_worker(self, i):
        rng = random.Random(1000 + i)
        client = Client(self.addr, self.args.model_timeout)
        n = 0
        while not self.stop.is_set():
            n += 1
            route = "/v1/chat" if n % 4 < 2 else "/v1/chat/completions"
            turn(client, self.stats, "model", route, self.new_session(f"m{i}"), self.model_question(rng), n % 2 == 0)
        client.close()

    def cut_worker(self):
        """Streamed turns whose client goes away after the first bytes or the first event."""
        rng = random.Random(7)
        host, port = self.addr.rsplit(":", 1)
        n = 0
        while not self.stop.wait(self.args.cut_every):
            n += 1
            model = n % 2 == 0
            route = "/v1/chat" if n % 4 < 2 else "/v1/chat/completions"
            message = self.model_question(rng) if model else rng.choice(self.questions)
            body = json.dumps(turn_body(route, self.new_session("cut"), message, True), ensure_ascii=False).encode()
            conn = http.client.HTTPConnection(host, int(port), timeout=self.args.model_timeout)
            try:
                conn.request("POST", route, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                if resp.status != 200:
                    self.stats.error(f"status {resp.status}", f"cut {route}: {resp.read()[:400]!r}")
                    continue
                if n % 3 == 0:
                    resp.read(1)  # the first byte
                else:
                    while resp.fp.readline() not in (b"\n", b""):
                        pass  # the first event
                self.stats.done("cut")
            except Exception as e:  # noqa: BLE001
                self.stats.error(classify(e), f"cut {route}: {e!r}")
            finally:
                # Close the socket itself, mid-stream (HTTPResponse.close would try to drain).
                if conn.sock is not None:
                    conn.sock.close()
                conn.close()

    def agent_call(self, client, path, body, want):
        """An agent or customer request expecting status `want` (200, or a refusal
        provoked on purpose); returns the parsed body or None."""
        try:
            status, raw = client.request("POST", path, body if body is not None else b"", self.auth)
        except Exception as e:  # noqa: BLE001
            self.stats.error(classify(e), f"agent {path}: {e!r}")
            return None
        if status != want:
            self.stats.error(f"status {status}", f"agent {path} (wanted {want}): {raw[:400].decode('utf-8', 'replace')}")
            return None
        if want == 200:
            self.stats.done("agent")
        else:
            self.stats.expected()
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def agent_worker(self):
        rng = random.Random(11)
        client = Client(self.addr, self.args.timeout)
        while not self.stop.wait(self.args.agent_every):
            sid = self.new_session("agent")
            first = turn(client, self.stats, "rule", "/v1/chat", sid, rng.choice(self.questions), False)
            if first is None:
                continue
            base = f"/v1/sessions/{sid}"
            self.agent_call(client, f"{base}/reply", {"message": "没人接管也回一句"}, 409)
            self.agent_call(client, f"{base}/takeover", {"agent": "小王"}, 200)
            queued = turn(client, self.stats, "agent-customer", "/v1/chat", sid, "人呢？", False)
            if queued is not None and queued.get("source") != "human":
                self.stats.error("unexpected source", f"taken-over turn answered by {queued.get('source')}")
            self.agent_call(client, f"{base}/reply", {"message": "您好，我是小王，马上帮您处理"}, 200)
            try:
                status, raw = client.request("GET", base, None, self.auth)
                if status == 200:
                    self.stats.done("agent")
                else:
                    self.stats.error(f"status {status}", f"GET {base}: {raw[:400]!r}")
            except Exception as e:  # noqa: BLE001
                self.stats.error(classify(e), f"GET {base}: {e!r}")
            self.agent_call(client, f"{base}/release", None, 200)
            turn(client, self.stats, "rule", "/v1/chat", sid, rng.choice(self.questions), False)
            token = first.get("session_token", "")
            self.agent_call(client, f"{base}/feedback", {"score": rng.randint(1, 5)}, 403)
            self.agent_call(client, f"{base}/feedback", {"score": rng.randint(1, 5), "comment": "很快", "session_token": token}, 200)
            self.agent_call(client, f"{base}/feedback", {"score": 5, "session_token": token}, 409)
        client.close()

    def rules_version(self, client):
        status, raw = client.request("GET", "/admin/rules", None, self.auth)
        self.stats.done("admin")
        return json.loads(raw).get("version") if status == 200 else None

    def reload_worker(self):
        client = Client(self.addr, self.args.timeout)
        path = os.path.join(self.rules_dir, RELOAD_FILE)
        with open(path, encoding="utf-8") as f:
            original = f.read()
        n = 0
        while not self.stop.wait(self.args.reload_every):
            n += 1
            if self.args.admin_reconnect:
                client.close()
            try:
                try:
                    before = self.rules_version(client)
                except (http.client.RemoteDisconnected, ConnectionResetError) as e:
                    # The connection kept alive since the last round (--reload-every
                    # idle) was closed by kefu: a client reusing it sees this error.
                    self.stats.error("closed while idle", f"reload {n}: the keep-alive connection, idle "
                                     f"{self.args.reload_every:.0f} s, was closed by kefu: {e!r}")
                    before = self.rules_version(client)
                text = original.replace(RELOAD_REPLY, f"我们的T恤经过预缩处理，正常洗涤不会明显缩水（第{n}版）。")
                if n % 2:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(text)
                else:
                    tmp = os.path.join(self.rules_dir, f".{RELOAD_FILE}.tmp")
                    with open(tmp, "w", encoding="utf-8") as f:
                        f.write(text)
                    os.replace(tmp, path)
                self.stats.reloads["edits"] += 1
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not self.stop.is_set():
                    if self.rules_version(client) != before:
                        self.stats.reloads["applied"] += 1
                        break
                    time.sleep(0.1)
                else:
                    if not self.stop.is_set():
                        self.stats.error("reload missed", f"edit {n} not applied by the watcher within 10 s")
                status, raw = client.request("POST", "/admin/reload", b"", self.auth)
                if status == 200:
                    self.stats.done("admin")
                    self.stats.reloads["admin"] += 1
                else:
                    self.stats.error(f"status {status}", f"POST /admin/reload: {raw[:400]!r}")
                for route in ("/healthz", "/metrics"):
                    status, raw = client.request("GET", route)
                    if status == 200:
                        self.stats.done("admin")
                    else:
                        self.stats.error(f"status {status}", f"GET {route}: {raw[:200]!r}")
            except Exception as e:  # noqa: BLE001
                self.stats.error(classify(e), f"reload {n}: {e!r}")
        client.close()


def proc_figures(pid):
    """(RSS in MB, open fds, CPU seconds) of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss_kb = int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, fds, cpu


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def slope(xs, ys):
    """Least-squares slope of ys against xs (None with fewer than 3 points)."""
    if len(xs) < 3:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def nice_ticks(lo, hi, count=5):
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering lo..hi."""
    if hi - lo < 1e-9:
        hi = lo + 1
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v < hi + step * 0.999:
        ticks.append(round(v, 10))
        v += step
    return ticks


def svg_chart(rows, path, title, subtitle, warmup_min):
    """RSS, open fds and rule-turn p99 per interval as three stacked line charts; the
    warm-up left out of the drift is shaded."""
    w, ph, left, right, top, gap = 760, 150, 70, 20, 58, 45
    panels = [("RSS (MB)", "rss_mb", "#1f77b4"), ("open file descriptors", "fds", "#2ca02c"),
              ("rule turns p99 (ms)", "p99_ms", "#d62728")]
    h = top + len(panels) * (ph + gap) + 10
    xticks = nice_ticks(0, max(rows[-1]["minute"], 0.1), 10)
    x1 = xticks[-1]

    def sx(x):
        return left + x / x1 * (w - left - right)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
           f'<text x="{w / 2}" y="36" text-anchor="middle" font-size="11" fill="#444">{html.escape(subtitle)}</text>']
    for k, (label, key, color) in enumerate(panels):
        y_top = top + k * (ph + gap)
        vals = [(r["minute"], r[key]) for r in rows if r[key] is not None]
        lo = min((v for _, v in vals), default=0)
        hi = max((v for _, v in vals), default=1)
        # RSS from a round value under its lowest point (its drift is the point), the
        # others from 0.
        yticks = nice_ticks(lo if key == "rss_mb" else 0, hi, 4)
        lo2, hi2 = yticks[0], yticks[-1]

        def sy(y):
            return y_top + ph - (y - lo2) / (hi2 - lo2) * ph

        if warmup_min > 0:
            wx = sx(min(warmup_min, x1))
            out.append(f'<rect x="{left}" y="{y_top}" width="{wx - left:.1f}" height="{ph}" fill="#f3f3f3"/>')
            if k == 0:
                out.append(f'<text x="{(left + wx) / 2:.1f}" y="{y_top + 14}" text-anchor="middle" fill="#888">warm-up</text>')
        out.append(f'<rect x="{left}" y="{y_top}" width="{w - left - right}" height="{ph}" fill="none" stroke="#888"/>')
        out.append(f'<text x="{left}" y="{y_top - 6}" fill="{color}" font-size="12">{label}</text>')
        for yv in yticks:
            y = sy(yv)
            out.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#e4e4e4"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{yv:g}</text>')
        for xv in xticks:
            x = sx(xv)
            out.append(f'<line x1="{x:.1f}" y1="{y_top + ph}" x2="{x:.1f}" y2="{y_top + ph + 4}" stroke="#888"/>')
            out.append(f'<text x="{x:.1f}" y="{y_top + ph + 16}" text-anchor="middle">{xv:g}</text>')
        if vals:
            pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in vals)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
            for x, y in vals:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>')
    out.append(f'<text x="{w / 2}" y="{h - 4}" text-anchor="middle">minutes since the start</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def markdown(summary):
    """The run's figures as a Markdown table, for docs/operations.md."""
    rows = summary["rows"]
    p99s = [r["p99_ms"] for r in rows if r["p99_ms"] is not None]
    p50s = [r["p50_ms"] for r in rows if r["p50_ms"] is not None]
    errs = ", ".join(f"{k}: {v}" for k, v in summary["errors_by_kind"].items()) or "none"
    drift = summary["drift_mb_per_1000_requests"]
    half = summary["drift_second_half_mb_per_1000_requests"]
    lines = [
        ("run", f"{summary['started']}, {summary['duration_s'] / 60:.0f} min, {summary['mode']}"),
        ("requests", f"{summary['requests']:,} ({summary['requests'] / summary['duration_s']:.0f}/s); "
                     f"{summary['by_kind'].get('model', 0):,} model turns, {summary['by_kind'].get('cut', 0):,} cut streams, "
                     f"{summary['reloads']['edits']} edits + {summary['reloads']['admin']} admin reloads, "
                     f"{summary['sessions']:,} sessions opened"),
        ("errors", f"{summary['errors']} ({errs}); {summary['expected_4xx']:,} refusals provoked and expected"),
        ("rule turns p50 / p99 (median of the intervals; worst p99)",
         f"{statistics.median(p50s) if p50s else 0:.2f} / {statistics.median(p99s) if p99s else 0:.2f} ms; "
         f"{max(p99s, default=0):.1f} ms"),
        ("RSS start / end / max", f"{summary['rss_mb']['start']:.0f} / {summary['rss_mb']['end'] or 0:.0f} / "
                                  f"{summary['rss_mb']['max']:.0f} MB"),
        ("RSS drift per 1,000 requests", f"{drift:+.3f} MB ({summary['drift_window']}); second half {half:+.3f} MB"
         if drift is not None and half is not None else "n/a"),
        ("open fds start / end / max", f"{summary['fds']['start']} / {summary['fds']['end']} / {summary['fds']['max']}"),
        ("kefu CPU", f"{summary['cpu_s']} s ({summary['cpu_s'] / summary['duration_s'] * 100:.0f}% of a core)"
         if summary["cpu_s"] is not None else "n/a"),
        ("kefu log", f"{summary['log_lines_flagged']} lines with panic/error/warn"),
    ]
    return "\n".join(["| figure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in lines])


def chart(summary, path):
    """The chart of a run, from its summary."""
    drift = summary["drift_mb_per_1000_requests"]
    dsub = f"{drift:+.3f} MB" if drift is not None else "n/a"
    svg_chart(summary["rows"], path,
              f"kefu soak, {summary['started']}, {summary['duration_s'] / 60:.0f} min, {summary['mode']}",
              f"{summary['requests']:,} requests, {summary['errors']} errors; "
              f"RSS drift {dsub} per 1,000 requests after the warm-up (shaded)",
              summary.get("warmup_s", 300) / 60)


LOG_BAD = re.compile(r"panic|panicked|\bERROR\b|\berror\b|\bWARN\b", re.I)


def check_log(path):
    """Lines of kefu's log that mention a panic, an error or a warning (counted, the
    first few kept)."""
    hits, first = 0, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if LOG_BAD.search(line):
                hits += 1
                if len(first) < 8:
                    first.append(line.rstrip()[:300])
    return hits, first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3600, help="seconds of traffic (3600)")
    ap.add_argument("--interval", type=float, default=60, help="seconds between samples (60)")
    ap.add_argument("--warmup", type=float, default=300, help="seconds left out of the drift slope (300)")
    ap.add_argument("--rate", type=float, default=150, help="rule turns a second (150)")
    ap.add_argument("--workers", type=int, default=4, help="rule-turn threads (4)")
    ap.add_argument("--model-workers", type=int, default=2, help="threads asking the model back to back (2)")
    ap.add_argument("--cut-every", type=float, default=2, help="seconds between cut SSE streams (2)")
    ap.add_argument("--agent-every", type=float, default=1, help="seconds between agent takeovers (1)")
    ap.add_argument("--reload-every", type=float, default=20, help="seconds between rule edits + admin reloads (20)")
    ap.add_argument("--session-pool", type=int, default=0,
                    help="rule turns draw their session ids from this many per worker instead of new ones (0: new)")
    ap.add_argument("--admin-reconnect", action="store_true",
                    help="a new connection for each reload round instead of one kept alive across the idle gap")
    ap.add_argument("--timeout", type=float, default=30, help="client timeout of rule and agent requests, s (30)")
    ap.add_argument("--model-timeout", type=float, default=120, help="client timeout of model turns, s (120)")
    ap.add_argument("--mock-llm", action="store_true", help="benches/slow_model.yaml instead of the real model")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "default.gguf"))
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (2)")
    ap.add_argument("--rules", default=os.path.join(ROOT, "rules"),
                    help="rules copied and served (rules/; an older build needs the rules of its day)")
    ap.add_argument("--log-level", default="info,llama-cpp-2=warn")
    ap.add_argument("--csv", default=os.path.join(ROOT, "target", "soak.csv"), help="per-interval rows (target/soak.csv)")
    ap.add_argument("--json", default=os.path.join(ROOT, "target", "soak.json"), help="the summary (target/soak.json)")
    ap.add_argument("--chart", default=os.path.join(ROOT, "docs", "img", "soak.svg"))
    ap.add_argument("--keep-log", help="copy kefu's log here at the end")
    ap.add_argument("--replot", metavar="JSON", help="only redraw --chart from the summary of an earlier run")
    args = ap.parse_args()
    if args.replot:
        with open(args.replot, encoding="utf-8") as f:
            summary = json.load(f)
        chart(summary, args.chart)
        print(markdown(summary))
        print(f"wrote {args.chart}")
        return

    binary = os.environ.get("KEFU_BIN", os.path.join(ROOT, "target", "release", "kefu"))
    tmp = tempfile.mkdtemp(prefix="kefu-soak-")
    rules_dir = os.path.join(tmp, "rules")
    shutil.copytree(args.rules, rules_dir)
    log_path = os.path.join(tmp, "kefu.log")
    token = secrets.token_hex(16)
    cmd = [binary, "serve", "--rules", rules_dir, "--addr", "127.0.0.1:0", "--log-level", args.log_level,
           "--state-dir", os.path.join(tmp, "state")]
    if args.mock_llm:
        cmd += ["--mock-llm", os.path.join(ROOT, "benches", "slow_model.yaml")]
    else:
        cmd += ["--model", args.model, "--threads", str(args.threads)]
    env = dict(os.environ, KEFU_ADMIN_TOKEN=token)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=ROOT)
    addr = None
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("listening on "):
            addr = line.split()[-1]
            break
        if not line and proc.poll() is not None:
            break
    if addr is None:
        proc.kill()
        log.close()
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-3000:]
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit("kefu did not start:\n" + tail)
    # stdout is drained so kefu never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()

    soak = Soak(args, addr, token, rules_dir)
    for q in soak.questions:
        a = turn(Client(addr, 10), soak.stats, "check", "/v1/chat", "soak-check", q, False)
        if a is None or a.get("source") not in ("rule", "promotion"):
            proc.kill()
            shutil.rmtree(tmp, ignore_errors=True)
            sys.exit(f"not rule-answered: {q}: {a and a.get('source')}")
    mode = ("mock model (benches/slow_model.yaml)" if args.mock_llm
            else f"model {os.path.basename(args.model)}, {args.threads} threads")
    print(f"kefu {binary} pid {proc.pid} on {addr}; {mode}; {args.duration:.0f} s, sample every {args.interval:.0f} s")

    threads = [threading.Thread(target=soak.rule_worker, args=(i,)) for i in range(args.workers)]
    threads += [threading.Thread(target=soak.model_worker, args=(i,)) for i in range(args.model_workers)]
    threads += [threading.Thread(target=f) for f in (soak.cut_worker, soak.agent_worker, soak.reload_worker)]
    start = time.monotonic()
    started_at = time.strftime("%Y-%m-%d %H:%M:%S")
    rss0, fds0, cpu0 = proc_figures(proc.pid)
    for t in threads:
        t.start()

    rows = [{"minute": 0.0, "requests": 0, "interval_requests": 0, "errors": 0, "expected_4xx": 0,
             "rule_turns": 0, "p50_ms": None, "p99_ms": None, "model_turns": 0, "model_p50_s": None,
             "rss_mb": round(rss0, 2), "fds": fds0, "cpu_s": 0.0, "sessions": 0}]
    print(f"{'min':>5} {'requests':>9} {'req/s':>6} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'model':>5} {'RSS MB':>7} {'fds':>4} {'CPU %':>6}")
    last_req, last_cpu, last_t = 0, cpu0, start
    crashed = False
    n = 0
    while True:
        n += 1
        target = start + min(n * args.interval, args.duration)
        while time.monotonic() < target:
            time.sleep(min(1, max(0, target - time.monotonic())))
            if proc.poll() is not None:
                crashed = True
                break
        if crashed:
            break
        now = time.monotonic()
        rule, model = soak.stats.take_latencies()
        with soak.stats.lock:
            req = soak.stats.requests
            errs = sum(soak.stats.errors.values())
            exp = soak.stats.expected_4xx
        rss, fds, cpu = proc_figures(proc.pid)
        row = {"minute": round((now - start) / 60, 2), "requests": req, "interval_requests": req - last_req,
               "errors": errs, "expected_4xx": exp, "rule_turns": len(rule),
               "p50_ms": round(percentile(rule, 50), 2) if rule else None,
               "p99_ms": round(percentile(rule, 99), 2) if rule else None,
               "model_turns": len(model), "model_p50_s": round(percentile(model, 50) / 1000, 2) if model else None,
               "rss_mb": round(rss, 2), "fds": fds, "cpu_s": round(cpu - cpu0, 2), "sessions": soak.sessions}
        rows.append(row)
        print(f"{row['minute']:5.1f} {req:9d} {(req - last_req) / (now - last_t):6.1f} {errs:6d} "
              f"{row['p50_ms'] or 0:7.2f} {row['p99_ms'] or 0:7.2f} {len(model):5d} {rss:7.1f} {fds:4d} "
              f"{(cpu - last_cpu) / (now - last_t) * 100:6.1f}", flush=True)
        last_req, last_cpu, last_t = req, cpu, now
        if now - start >= args.duration - 0.5:
            break

    soak.stop.set()
    for t in threads:
        t.join(timeout=args.model_timeout + 5)
    final = proc_figures(proc.pid) if proc.poll() is None else None
    exit_code = proc.poll()
    if exit_code is None:
        proc.terminate()
        try:
            exit_code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = "killed after 30 s"
    log.close()

    st = soak.stats
    after = [r for r in rows if r["minute"] * 60 >= args.warmup]
    drift = slope([r["requests"] for r in after], [r["rss_mb"] for r in after])
    drift_per_k = drift * 1000 if drift is not None else None
    half = [r for r in rows if r["minute"] >= rows[-1]["minute"] / 2]
    drift_half = slope([r["requests"] for r in half], [r["rss_mb"] for r in half])
    log_hits, log_first = check_log(log_path)
    errors = sum(st.errors.values())
    summary = {
        "started": started_at, "duration_s": round(time.monotonic() - start, 1), "binary": binary, "mode": mode,
        "rate": args.rate, "workers": args.workers, "model_workers": args.model_workers,
        "requests": st.requests, "by_kind": st.kinds, "expected_4xx": st.expected_4xx,
        "errors": errors, "errors_by_kind": st.errors, "error_samples": st.error_samples,
        "answered_by": st.sources, "reloads": st.reloads, "sessions": soak.sessions,
        "rss_mb": {"start": round(rss0, 2), "end": round(final[0], 2) if final else None,
                   "max": max(r["rss_mb"] for r in rows)},
        "fds": {"start": fds0, "end": final[1] if final else None, "max": max(r["fds"] for r in rows)},
        "cpu_s": round(final[2] - cpu0, 1) if final else None,
        "drift_mb_per_1000_requests": round(drift_per_k, 4) if drift_per_k is not None else None,
        "drift_window": f"samples from {args.warmup:.0f} s on ({len(after)} samples)",
        "drift_second_half_mb_per_1000_requests": round(drift_half * 1000, 4) if drift_half is not None else None,
        "rule_p99_ms_median_of_intervals": statistics.median([r["p99_ms"] for r in rows if r["p99_ms"] is not None] or [0]),
        "warmup_s": args.warmup, "kefu_crashed": crashed, "kefu_exit": exit_code,
        "log_lines_flagged": log_hits, "log_first_flagged": log_first,
        "rows": rows,
    }
    for p in (args.csv, args.json):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1)
    chart(summary, args.chart)
    if args.keep_log:
        shutil.copy(log_path, args.keep_log)

    print(f"\n{st.requests} requests in {summary['duration_s']:.0f} s ({st.requests / summary['duration_s']:.1f}/s): {st.kinds}")
    print(f"expected refusals (provoked): {st.expected_4xx}; answered by (kind source): {st.sources}")
    print(f"reloads: {st.reloads}; sessions opened: {soak.sessions}")
    print(f"RSS {rss0:.1f} -> {summary['rss_mb']['end']} MB (max {summary['rss_mb']['max']}); "
          f"fds {fds0} -> {summary['fds']['end']} (max {summary['fds']['max']}); kefu CPU {summary['cpu_s']} s")
    print(f"errors: {errors} {st.errors}")
    for s in st.error_samples[:5]:
        print(f"  {s['at']} {s['kind']}: {s['detail']}")
    print(f"kefu log: {log_hits} lines with panic/error/warn" + "".join(f"\n  {l}" for l in log_first))
    dtxt = f"{drift_per_k:+.4f} MB" if drift_per_k is not None else "n/a (too few samples after the warm-up)"
    print(f"RSS drift per 1,000 requests ({summary['drift_window']}): {dtxt}; "
          f"second half: {summary['drift_second_half_mb_per_1000_requests']}")
    ok_drift = drift_per_k is not None and drift_per_k < 1
    ok_errors = errors == 0 and not crashed
    print(f"verdict: drift {'OK' if ok_drift else 'MISSED'} (goal < 1 MB / 1,000 requests), "
          f"errors {'OK' if ok_errors else 'MISSED'} (goal 0{', kefu exited' if crashed else ''})")
    print("\n" + markdown(summary) + "\n")
    print(f"wrote {args.csv}, {args.json}, {args.chart}")
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok_drift and ok_errors else 1)


if __name__ == "__main__":
    main()
