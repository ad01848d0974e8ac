#!/usr/bin/env python3
"""Many chats at once: kefu against llama-server, on the same model, threads and workload.

N conversations run at once (N = 1, 4, 8, 16 by default), each of 4 to 6 turns (seeded
random), every turn a streaming `POST /v1/chat/completions` sent as soon as the previous
answer ended. The questions (benches/data/chat_questions.txt) are ones no rule, flow,
promotion or FAQ entry of the demo shop answers, so every turn reaches the model.

- kefu gets the question only, with `kefu_session` (one per conversation): it keeps the
  history and builds its own prompt (persona and instructions, tone, promotions, passages,
  the last 6 messages), samples with the shop's style (max_tokens 128, temperature 0.5,
  top_p 0.9 for the demo's default style) and checks the answer (judge, output guard).
  A model turn is one with completion tokens in its usage; the others (a rule, the FAQ,
  a model past kefu's 20 s deadline...) are counted by the final chunk's `kefu.source`,
  and so are the model answers kefu withheld (source not `llm`). The demo hands a
  conversation to a human after three answers it could not give, which a small model's
  withheld answers trigger: the script then hands it back (`POST
  /v1/sessions/{id}/release`, counted as released) so the next turns reach the model.
- llama-server gets what a plain client of it would send for the same chat: a system
  message with the shop's shared instructions (benches/data/shop_instructions.txt, the
  start of every kefu system prompt; see --write-instructions), the conversation's last 6
  messages (its own earlier answers) and the new question, with kefu's sampling (max_tokens
  128, temperature 0.5, top_p 0.9, top-k 40, repetition penalty 1.1 over 64 tokens, no
  min-p) and stop strings. kefu also stops a generation early once its judge is sure to
  withhold the answer: the table shows the mean generated tokens of a turn per side.

Per side and N it measures: aggregate generated tokens/s (completion tokens of all turns /
wall time of the run), time to first token (first non-empty content delta) p50 and p95,
total turn time p95 (these three over model turns), mean prompt and generated tokens of a
model turn (from `usage`, `stream_options.include_usage`), errors. It prints a table per N
(medians over rounds) and writes the raw figures, every turn included, to a JSON file.

Each (round, N) starts a fresh server for each side, one after the other (never both at
once: a 2-core machine), alternating which side goes first; fresh, because kefu caches
model answers (two conversations opening with the same question would be one model call)
and so the conversations of one run open with different questions. Before a run each
server answers one warm-up turn, not measured. Both servers run at their own defaults
(kefu `--parallel` 4; llama-server's slot count is read from its /props and reported) but
for threads (all cores) and the model file; kefu runs its llama.cpp workers with
OMP_WAIT_POLICY=passive by its own choice, llama-server with OpenMP's default unless the
environment sets it.

    benches/chat_load.py                          # N = 1,4,8,16, 4-6 turns, 1 round
    benches/chat_load.py --n 1,4 --turns 4-4 --rounds 1
    benches/chat_load.py --kefu-args '--parallel 8' --llama-server-args '-np 8'
    benches/chat_load.py --write-instructions     # remake shop_instructions.txt from kefu

Environment (flags win): KEFU_BIN (target/release/kefu), LLAMA_SERVER
(target/llama-tools/bin/llama-server, benches/llama_tools.sh builds it), MODEL
(models/default.gguf), THREADS (all cores), RULES (rules), CHAT_N (1,4,8,16), TURNS (4-6),
ROUNDS (1), SEED (20), OUT (target/chat_load.json). Only the Python standard library.
"""

import argparse
import http.client
import http.server
import json
import math
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benches" / "data"
# What kefu's prompt module keeps of the history (src/llm/prompt.rs HISTORY_IN_PROMPT).
HISTORY_IN_PROMPT = 6
# kefu's model request for the demo shop's default style (src/engine/model.rs: the
# engine's max_tokens, the style's temperature and top_p, prompt::stop_markers()) and its
# sampling chain (src/llm/sample.rs: repetition penalty 1.1 over the last 64 tokens, top-k
# 40, no min-p), so that llama-server samples as kefu does; llama-server's own defaults
# differ (no repetition penalty, min-p 0.05).
SAMPLING = {"max_tokens": 128, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.0,
            "repeat_penalty": 1.1, "repeat_last_n": 64,
            "stop": ["<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"]}
WARMUP_QUESTION = "你们家的衣服适合送给同事吗？"


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", default=env("CHAT_N", "1,4,8,16"), help="concurrent conversations, comma-separated")
    p.add_argument("--turns", default=env("TURNS", "4-6"), help="turns per conversation, MIN-MAX")
    p.add_argument("--rounds", type=int, default=int(env("ROUNDS", "1")))
    p.add_argument("--seed", type=int, default=int(env("SEED", "20")))
    p.add_argument("--kefu-bin", default=env("KEFU_BIN", str(ROOT / "target/release/kefu")))
    p.add_argument("--llama-server", default=env("LLAMA_SERVER", str(ROOT / "target/llama-tools/bin/llama-server")))
    p.add_argument("--model", default=env("MODEL", str(ROOT / "models/default.gguf")))
    p.add_argument("--threads", type=int, default=int(env("THREADS", str(os.cpu_count() or 1))))
    p.add_argument("--rules", default=env("RULES", str(ROOT / "rules")))
    p.add_argument("--kefu-args", default="", help="more arguments for `kefu serve`")
    p.add_argument("--llama-server-args", default="", help="more arguments for llama-server")
    p.add_argument("--only", choices=["kefu", "llama-server"], help="run one side only")
    p.add_argument("--out", default=env("OUT", str(ROOT / "target/chat_load.json")))
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a turn may take")
    p.add_argument("--write-instructions", action="store_true",
                   help="capture the shared instructions from kefu's prompt into benches/data/shop_instructions.txt")
    a = p.parse_args()
    try:
        a.n_list = [int(x) for x in a.n.split(",") if x.strip()]
        lo, _, hi = a.turns.partition("-")
        a.turns_range = (int(lo), int(hi or lo))
    except ValueError:
        p.error("--n is a comma-separated list of numbers, --turns MIN-MAX")
    if not a.n_list or min(a.n_list) < 1 or a.turns_range[0] < 1 or a.turns_range[0] > a.turns_range[1]:
        p.error("--n must be positive numbers and --turns MIN-MAX with 1 <= MIN <= MAX")
    if a.rounds < 1 or a.threads < 1:
        p.error("--rounds and --threads must be at least 1")
    return a


def read_lines(path):
    return [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip() and not l.startswith("#")]


# ---------------------------------------------------------------- servers


class Server:
    """A server process on a free loopback port, its log in a temporary file."""

    def __init__(self, name, argv, ready, state_dir=None, stdout_pipe=False):
        self.name = name
        self.state_dir = state_dir
        self.log = tempfile.NamedTemporaryFile(prefix=f"chat_load.{name}.", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE if stdout_pipe else self.log, stderr=self.log, text=True)
        self.addr = ready(self)

    def fail(self, why):
        tail = Path(self.log.name).read_text(errors="replace")[-3000:]
        self.stop()
        sys.exit(f"{self.name} did not start ({why}); its log ends:\n{tail}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def start_kefu(a, extra_args, llm_url=None):
    # Its own state directory (the ticket journal): another kefu on the machine holds the
    # default one.
    state = tempfile.mkdtemp(prefix="chat_load.kefu-state.")
    argv = [a.kefu_bin, "serve", "--addr", "127.0.0.1:0", "--rules", a.rules, "--no-watch", "--state-dir", state]
    if llm_url:
        argv += ["--llm-url", llm_url]
    else:
        argv += ["--model", a.model, "--threads", str(a.threads)]
    argv += shlex.split(extra_args)

    def ready(s):
        # kefu prints `listening on ADDR` on stdout once bound (and its rules loaded).
        for line in s.proc.stdout:
            if line.startswith("listening on "):
                threading.Thread(target=s.proc.stdout.read, daemon=True).start()
                return line.split()[-1]
        s.fail(f"exit status {s.proc.wait()}")

    return Server("kefu", argv, ready, state_dir=state, stdout_pipe=True)


def kefu_parallel(a):
    """The conversations kefu generates for at once: --parallel in --kefu-args, else the
    default its `serve --help` states."""
    args = shlex.split(a.kefu_args)
    for i, arg in enumerate(args):
        if arg == "--parallel" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--parallel="):
            return arg.split("=", 1)[1]
    help_text = subprocess.run([a.kefu_bin, "serve", "--help"], capture_output=True, text=True).stdout
    section = help_text[help_text.find("--parallel"):]
    start = section.find("[default: ")
    return section[start + 10: section.find("]", start)] if start >= 0 else "?"


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(a):
    port = free_port()
    argv = [a.llama_server, "-m", a.model, "-t", str(a.threads), "--host", "127.0.0.1", "--port", str(port)]
    argv += shlex.split(a.llama_server_args)

    def ready(s):
        # /health answers 503 while the model loads, 200 once it can serve.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if s.proc.poll() is not None:
                s.fail(f"exit status {s.proc.returncode}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return f"127.0.0.1:{port}"
            except OSError:
                pass
            time.sleep(0.2)
        s.fail("not healthy within 120 s")

    return Server("llama-server", argv, ready)


def llama_server_slots(addr):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/props")
    props = json.loads(c.getresponse().read())
    return props.get("total_slots"), props.get("default_generation_settings", {}).get("n_ctx")


# ---------------------------------------------------------------- one turn


def stream_turn(addr, body, timeout):
    """POSTs a streaming completion and reads its SSE chunks. Returns a dict: ttft and
    total seconds, the answer, usage, the final chunk's `kefu` field, or `error`."""
    host, port = addr.rsplit(":", 1)
    t0 = time.monotonic()
    out = {"ttft": None, "total": None, "content": "", "usage": None, "kefu": None, "error": None}
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=timeout)
        c.request("POST", "/v1/chat/completions", json.dumps(body, ensure_ascii=False).encode(),
                  {"content-type": "application/json", "accept": "text/event-stream"})
        r = c.getresponse()
        if r.status != 200:
            out["error"] = f"HTTP {r.status}: {r.read()[:300]!r}"
            return out
        parts = []
        for raw in r:  # http.client undoes the chunked encoding; SSE lines come out whole
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                out["error"] = f"stream error: {json.dumps(chunk['error'], ensure_ascii=False)[:300]}"
                break
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    if out["ttft"] is None:
                        out["ttft"] = time.monotonic() - t0
                    parts.append(text)
            if chunk.get("usage"):
                out["usage"] = chunk["usage"]
            if "kefu" in chunk:
                out["kefu"] = chunk["kefu"]
        c.close()
        out["content"] = "".join(parts)
    except (OSError, http.client.HTTPException, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["total"] = time.monotonic() - t0
    return out


def release(addr, session):
    """An agent hands the conversation back to the bot (kefu's agent route; loopback
    clients need no token). True when kefu took it back."""
    host, port = addr.rsplit(":", 1)
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request("POST", f"/v1/sessions/{session}/release")
        r = c.getresponse()
        r.read()
        c.close()
        return r.status == 200
    except (OSError, http.client.HTTPException):
        return False


def kefu_body(question, session):
    return {"model": "kefu", "messages": [{"role": "user", "content": question}], "stream": True,
            "stream_options": {"include_usage": True}, "kefu_session": session}


def llama_body(system, history, question):
    messages = [{"role": "system", "content": system}] + history[-HISTORY_IN_PROMPT:]
    messages.append({"role": "user", "content": question})
    return {"messages": messages, "stream": True, "stream_options": {"include_usage": True}, **SAMPLING}


# ---------------------------------------------------------------- one run


def conversations(questions, n, turns_range, seed):
    """n conversations: turn counts and questions drawn with `seed`, the first questions
    all different (kefu would answer a repeated opening from its cache)."""
    rng = random.Random(seed)
    openings = rng.sample(range(len(questions)), min(n, len(questions)))
    convs = []
    for i in range(n):
        k = rng.randint(*turns_range)
        first = openings[i % len(openings)]
        rest = rng.sample([j for j in range(len(questions)) if j != first], k - 1)
        convs.append([questions[j] for j in [first] + rest])
    return convs


def run_side(side, addr, convs, system, run_id, timeout):
    """Runs all conversations at once against one server; returns the turns' records and
    the wall time from the first request to the last answer."""
    records = [[] for _ in convs]

    def converse(i):
        history = []
        for question in convs[i]:
            if side == "kefu":
                body = kefu_body(question, f"chat-load-{run_id}-{i}")
            else:
                body = llama_body(system, history, question)
            r = stream_turn(addr, body, timeout)
            r["conversation"], r["question"] = i, question
            records[i].append(r)
            if side == "kefu" and (r["kefu"] or {}).get("source") == "handoff":
                # The demo hands a conversation to a human after three answers it could not
                # give (a small model's withheld ones count); an agent hands it back, so
                # that the next turns reach the model again, with the history kept.
                r["released"] = release(addr, body["kefu_session"])
            if r["error"]:
                break  # a broken conversation stops; its error is counted
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": r["content"]}]

    threads = [threading.Thread(target=converse, args=(i,)) for i in range(len(convs))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for rs in records for r in rs], time.monotonic() - t0


def pct(values, p):
    if not values:
        return None
    v = sorted(values)  # nearest rank
    return v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))]


def summarize(side, turns, wall):
    ok = [t for t in turns if not t["error"]]
    completion = sum((t["usage"] or {}).get("completion_tokens", 0) for t in ok)
    gen = lambda t: (t["usage"] or {}).get("completion_tokens", 0)
    modelled = [t for t in ok if gen(t) > 0]
    missed, withheld = {}, 0
    for t in ok:
        source = (t["kefu"] or {}).get("source") if side == "kefu" else None
        if gen(t) == 0:
            missed[source or "no tokens"] = missed.get(source or "no tokens", 0) + 1
        elif side == "kefu" and source != "llm":
            withheld += 1  # the model generated, kefu's judge or guard did not use the answer
    ttft = [t["ttft"] for t in modelled if t["ttft"] is not None]
    total = [t["total"] for t in modelled]
    ms = lambda x: None if x is None else round(x * 1000, 1)
    return {
        "turns": len(turns), "errors": len(turns) - len(ok), "model_turns": len(modelled),
        "not_model": missed, "withheld": withheld, "released": sum(1 for t in turns if t.get("released")), "wall_s": round(wall, 3), "completion_tokens": completion,
        "tokens_per_s": round(completion / wall, 2) if wall > 0 else None,
        "ttft_p50_ms": ms(pct(ttft, 50)), "ttft_p95_ms": ms(pct(ttft, 95)),
        "total_p50_ms": ms(pct(total, 50)), "total_p95_ms": ms(pct(total, 95)),
        "prompt_tokens_mean": round(statistics.mean(t["usage"].get("prompt_tokens", 0) for t in modelled), 1)
        if modelled else None,
        "completion_tokens_mean": round(statistics.mean(gen(t) for t in modelled), 1) if modelled else None,
        "error_samples": [t["error"] for t in turns if t["error"]][:3],
    }


# ---------------------------------------------------------------- instructions


def write_instructions(a):
    """Starts kefu against a stub model server, asks one question, and keeps the start of
    the system message kefu sent: the persona and the fixed instructions
    (src/llm/prompt.rs `instructions`), up to the end of its `要求：` line."""
    seen = []

    class Stub(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            body = b'data: {"choices":[{"index":0,"delta":{"content":"\\u597d"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    kefu = start_kefu(a, a.kefu_args, llm_url=f"http://127.0.0.1:{stub.server_address[1]}")
    try:
        stream_turn(kefu.addr, kefu_body(read_lines(DATA / "chat_questions.txt")[0], "instructions"), 60)
    finally:
        kefu.stop()
        stub.shutdown()
    if not seen:
        sys.exit("kefu did not call the model for the first question of chat_questions.txt")
    system = seen[0]["messages"][0]["content"]
    start = system.find("\n要求：")
    end = system.find("\n", start + 1)
    if start < 0 or end < 0:
        sys.exit("kefu's system message has no `要求：` line: has src/llm/prompt.rs changed?")
    (DATA / "shop_instructions.txt").write_text(system[: end + 1], encoding="utf-8")
    print(f"wrote {DATA / 'shop_instructions.txt'} ({end + 1} characters)")


# ---------------------------------------------------------------- main


def main():
    a = parse_args()
    if a.write_instructions:
        return write_instructions(a)
    sides = [a.only] if a.only else ["kefu", "llama-server"]
    needed = [(a.model, "MODEL")]
    if "kefu" in sides:
        needed.append((a.kefu_bin, "KEFU_BIN"))
    if "llama-server" in sides:
        needed.append((a.llama_server, "LLAMA_SERVER (benches/llama_tools.sh builds it)"))
    for path, what in needed:
        if not Path(path).is_file():
            sys.exit(f"missing {path}: set {what}")
    questions = read_lines(DATA / "chat_questions.txt")
    system = (DATA / "shop_instructions.txt").read_text(encoding="utf-8")
    if len(questions) < a.turns_range[1]:
        sys.exit(f"chat_questions.txt has {len(questions)} questions, fewer than {a.turns_range[1]} turns")
    if max(a.n_list) > len(questions):
        print(f"note: N > {len(questions)} questions: some conversations open alike (kefu may answer those from its cache)",
              file=sys.stderr)
    runs, info = [], {}
    if "kefu" in sides:
        info["kefu"] = {"parallel": kefu_parallel(a)}
    for rnd in range(a.rounds):
        for ni, n in enumerate(a.n_list):
            convs = conversations(questions, n, a.turns_range, a.seed * 1000 + rnd * 100 + n)
            order = sides if (rnd + ni) % 2 == 0 else sides[::-1]
            for side in order:
                print(f"round {rnd + 1}/{a.rounds}, N={n}: {side} ({sum(map(len, convs))} turns)", file=sys.stderr)
                server = start_kefu(a, a.kefu_args) if side == "kefu" else start_llama_server(a)
                try:
                    if side == "llama-server" and "llama-server" not in info:
                        slots, n_ctx = llama_server_slots(server.addr)
                        info["llama-server"] = {"slots": slots, "n_ctx_per_slot": n_ctx}
                    run_id = f"{rnd}-{n}-{time.time_ns()}"
                    warm = (kefu_body(WARMUP_QUESTION, f"chat-load-warm-{run_id}") if side == "kefu"
                            else llama_body(system, [], WARMUP_QUESTION))
                    w = stream_turn(server.addr, warm, a.timeout)
                    if w["error"]:
                        print(f"  warm-up failed: {w['error']}", file=sys.stderr)
                    turns, wall = run_side(side, server.addr, convs, system, run_id, a.timeout)
                finally:
                    server.stop()
                s = summarize(side, turns, wall)
                runs.append({"round": rnd + 1, "n": n, "side": side, **s, "records": turns})
                print(f"  {s['tokens_per_s']} tok/s, TTFT p50 {s['ttft_p50_ms']} ms, {s['model_turns']} of "
                      f"{s['turns']} turns generated, errors {s['errors']}", file=sys.stderr)
    report(a, runs, info, sides)


def report(a, runs, info, sides):
    med = lambda xs: round(statistics.median(xs), 1) if xs else None
    rows = []
    print(f"\nmodel {a.model}, {a.threads} threads, turns {a.turns}, {a.rounds} round(s), seed {a.seed}; "
          f"kefu {a.kefu_bin} --parallel {info.get('kefu', {}).get('parallel', '?')}"
          f"{' (' + a.kefu_args + ')' if a.kefu_args else ' (its default)'}; "
          f"llama-server slots {info.get('llama-server', {}).get('slots', '?')}"
          f"{' (' + a.llama_server_args + ')' if a.llama_server_args else ' (its default)'}")
    print("medians over rounds; ms; tok/s = completion tokens of all turns / wall time of the run")
    print("model = turns the model generated for (TTFT and total are theirs); withheld = of those, answers kefu's")
    print("judge or guard replaced; released = conversations an agent handed back after kefu's handoff")
    print("prompt, gen = mean prompt and generated tokens of a model turn")
    print(f"{'N':>3} {'side':<13}{'tok/s':>8}{'TTFT p50':>10}{'TTFT p95':>10}{'total p95':>11}{'prompt':>8}{'gen':>7}"
          f"{'turns':>7}{'model':>7}{'errors':>7}  notes")
    for n in a.n_list:
        for side in sides:
            rs = [r for r in runs if r["n"] == n and r["side"] == side]
            row = {"n": n, "side": side,
                   **{k: med([r[k] for r in rs if r[k] is not None]) for k in
                      ("tokens_per_s", "ttft_p50_ms", "ttft_p95_ms", "total_p95_ms", "prompt_tokens_mean",
                       "completion_tokens_mean")},
                   **{k: sum(r[k] for r in rs) for k in ("turns", "model_turns", "errors", "withheld", "released")},
                   "not_model": {}}
            for r in rs:
                for k, v in r["not_model"].items():
                    row["not_model"][k] = row["not_model"].get(k, 0) + v
            rows.append(row)
            f = lambda x, w: f"{'-' if x is None else x:>{w}}"
            notes = []
            if side == "kefu":
                notes.append(f"withheld {row['withheld']}, released {row['released']}")
            if row["not_model"]:
                notes.append("no model: " + ", ".join(f"{k} {v}" for k, v in row["not_model"].items()))
            print(f"{n:>3} {side:<13}{f(row['tokens_per_s'], 8)}{f(row['ttft_p50_ms'], 10)}{f(row['ttft_p95_ms'], 10)}"
                  f"{f(row['total_p95_ms'], 11)}{f(row['prompt_tokens_mean'], 8)}{f(row['completion_tokens_mean'], 7)}{row['turns']:>7}{row['model_turns']:>7}"
                  f"{row['errors']:>7}  {'; '.join(notes)}")
        if len(sides) == 2:
            k, l = (next(r for r in rows if r["n"] == n and r["side"] == s) for s in sides)
            if k["tokens_per_s"] and l["tokens_per_s"]:
                print(f"{'':>3} {'kefu/llama':<13}{k['tokens_per_s'] / l['tokens_per_s']:>8.3f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(a).items() if k not in ("n_list", "turns_range", "write_instructions")}
    out.write_text(json.dumps({"settings": settings, "servers": info, "summary": rows, "runs": runs},
                              ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
