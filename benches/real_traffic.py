#!/usr/bin/env python3
"""Real-traffic evaluation: replay real customer-service conversations through kefu with no
model and count what answered (docs/testing.md, "Real-traffic evaluation").

Data: the Taobao E-commerce Dialogue Corpus (ECD) in the layout its public sample uses
(DeepUtteranceAggregation, ECD_sample/valid and ECD_sample/test): one line per candidate,
`label \\t utt1 \\t utt2 … \\t response`, words separated by spaces, utterances alternating
customer, agent, customer, …, the last (the response) the agent's. Only lines labelled 1
are real conversations; identical contexts are read once. Nothing of the data is
committed: give its path on the command line.

    # replay: one JSON line per customer turn, the shares printed at the end
    benches/real_traffic.py replay --data /work/data/ecd/test.raw \\
        --rules examples/taobao-shop --out /work/data/ecd/out-test.jsonl
    # a judging sheet of the automated answers (all, or a random sample of --sample),
    # verdicts of an earlier sheet carried over where the turn and kefu's answer are the same
    benches/real_traffic.py sheet --replay /work/data/ecd/out-test.jsonl \\
        --out /work/data/ecd/judged-after.tsv --carry /work/data/ecd/judged-before.tsv
    # after filling the sheet's `verdict` column (right / partly / wrong) and `reason`
    benches/real_traffic.py score --replay /work/data/ecd/out-test.jsonl \\
        --judged /work/data/ecd/judged-after.tsv
    # read the conversations (to write a pack from the part set aside for that)
    benches/real_traffic.py show --data /work/data/ecd/valid.raw

`replay` builds nothing: it runs the kefu binary given by --kefu (default
target/debug/kefu; build it first with `cargo build --no-default-features`) as
`kefu serve --model none` on a free loopback port, and sends each conversation's customer
turns in order to `POST /v1/chat`, one fresh session per conversation, one minute apart
from a fixed time (so results do not change with the calendar). No answer cache, so a
repeated question is answered by the FAQ entry itself, as it was the first time.

Sources: `rule`, `flow`, `promotion`, `faq` and `context` answers are automated; then
`fallback` (the shop's fallback message), `handoff` (the turn that handed over) and
`human` (turns after a handoff: a person has the conversation).
"""

import argparse
import collections
import csv
import datetime
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

AUTOMATED = ("rule", "flow", "promotion", "faq", "context")
SOURCES = AUTOMATED + ("fallback", "handoff", "human", "safety", "llm")
START = datetime.datetime(2026, 6, 10, 10, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
SHEET_FIELDS = [
    "id", "session", "turn", "context", "customer", "agent", "kefu", "source", "what",
    "verdict", "reason",
]


def join_words(text):
    """The corpus's words put back together: spaces dropped except between two ASCII words."""
    out = []
    for word in text.split():
        if out and out[-1][-1:].isascii() and out[-1][-1:].isalnum() and word[:1].isascii() and word[:1].isalnum():
            out.append(" ")
        out.append(word)
    return "".join(out)


def sessions(path):
    """The real conversations of an ECD file: lists of utterances, customer first."""
    seen = set()
    result = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if fields[0].strip() != "1" or len(fields) < 3:
                continue
            utts = [join_words(u) for u in fields[1:]]
            key = tuple(utts[:-1])
            if key in seen:
                continue
            seen.add(key)
            result.append(utts)
    return result


def show(args):
    for n, utts in enumerate(sessions(args.data)):
        print(f"## {n}")
        for i, u in enumerate(utts):
            print(("顾客: " if i % 2 == 0 else "客服: ") + u)
        print()


def post(addr, body):
    request = urllib.request.Request(
        f"http://{addr}/v1/chat",
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def start_kefu(kefu, rules):
    """`kefu serve --model none` on a free port: the process and its address."""
    out = tempfile.TemporaryFile(mode="w+")
    state = tempfile.mkdtemp(prefix="kefu-real-traffic-")
    process = subprocess.Popen(
        [kefu, "serve", "--rules", rules, "--addr", "127.0.0.1:0", "--model", "none",
         "--answer-cache", "0", "--rate-limit", "0", "--no-watch", "--state-dir", state,
         "--log-level", "warn"],
        stdout=out, stderr=subprocess.PIPE, text=True,
    )
    for _ in range(600):
        out.seek(0)
        m = re.search(r"^listening on (\S+)", out.read(), re.M)
        if m:
            return process, m.group(1)
        if process.poll() is not None:
            sys.exit(f"kefu did not start:\n{process.stderr.read()}")
        time.sleep(0.1)
    process.kill()
    sys.exit("kefu did not start within a minute")


def what_answered(r):
    """The rule, flow step, FAQ entry or handoff reason behind an answer, for the sheet."""
    source = r.get("source")
    if source == "rule":
        return r.get("rule") or ""
    if source == "flow":
        return f"{r.get('flow')}/{r.get('step')}"
    if source == "promotion":
        return r.get("promotion") or ""
    if source in ("faq", "cache"):
        return r.get("faq") or ""
    if source == "handoff":
        return (r.get("handoff") or {}).get("reason") or ""
    if source == "context":
        return next((t["detail"] for t in r.get("trace", []) if t.get("stage") == "context"), "")
    return ""


def replay(args):
    convs = sessions(args.data)
    process, addr = start_kefu(args.kefu, args.rules)
    counts = collections.Counter()
    try:
        with open(args.out, "w", encoding="utf-8") as out:
            for n, utts in enumerate(convs):
                sid = f"ecd-{n}"
                when = START
                for t in range(0, len(utts), 2):
                    message = utts[t]
                    if not message.strip():
                        continue
                    r = post(addr, {"session_id": sid, "message": message, "as_of": when.isoformat()})
                    when += datetime.timedelta(minutes=1)
                    source = r.get("source")
                    if source == "cache":
                        source = "faq" if r.get("faq") else "llm"
                    counts[source] += 1
                    record = {
                        "session": n,
                        "turn": t // 2,
                        "context": utts[max(0, t - args.context):t],
                        "customer": message,
                        "agent": utts[t + 1] if t + 1 < len(utts) else "",
                        "kefu": r.get("reply", ""),
                        "source": source,
                        "what": what_answered(r),
                        "intent": r.get("intent"),
                        "confidence": r.get("confidence"),
                        "trace": [f"{x.get('stage')}: {x.get('detail')}" for x in r.get("trace", [])],
                    }
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        process.terminate()
        process.wait()
    print_shares(counts, len(convs))


def print_shares(counts, n_sessions):
    total = sum(counts.values())
    auto = sum(counts[s] for s in AUTOMATED)
    print(f"{n_sessions} conversations, {total} customer turns")
    print(f"  automated {auto:5d} {auto / total:6.1%}  (" + ", ".join(f"{s} {counts[s]}" for s in AUTOMATED) + ")")
    for s in SOURCES[len(AUTOMATED):]:
        if counts[s] or s in ("fallback", "handoff", "human"):
            print(f"  {s:9s} {counts[s]:5d} {counts[s] / total:6.1%}")


def load_replay(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def turn_key(r):
    return (" / ".join(r["context"]), r["customer"], r["kefu"])


def sheet(args):
    records = [r for r in load_replay(args.replay) if r["source"] in AUTOMATED]
    if args.sample and len(records) > args.sample:
        records = sorted(random.Random(args.seed).sample(records, args.sample), key=lambda r: (r["session"], r["turn"]))
    carried = {}
    for path in args.carry or []:
        for row in read_sheet(path):
            if row.get("verdict"):
                carried[(row["context"], row["customer"], row["kefu"])] = (row["verdict"], row["reason"])
    with open(args.out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(SHEET_FIELDS)
        kept = 0
        for r in records:
            verdict, reason = carried.get(turn_key(r), ("", ""))
            kept += bool(verdict)
            w.writerow([f"{r['session']}-{r['turn']}", r["session"], r["turn"], " / ".join(r["context"]),
                        r["customer"], r["agent"], r["kefu"].replace("\n", " ⏎ "), r["source"], r["what"],
                        verdict, reason])
    print(f"{len(records)} automated answers to judge in {args.out} ({kept} verdicts carried over)")


def read_sheet(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        row["kefu"] = row["kefu"].replace(" ⏎ ", "\n")
    return rows


def score(args):
    records = load_replay(args.replay)
    counts = collections.Counter(r["source"] for r in records)
    print_shares(counts, len({r["session"] for r in records}))
    rows = read_sheet(args.judged)
    verdicts = collections.Counter(row["verdict"].strip() for row in rows)
    judged = sum(verdicts[v] for v in ("right", "partly", "wrong"))
    if verdicts[""]:
        print(f"  ({verdicts['']} rows of the sheet have no verdict yet)")
    if judged:
        print(f"judged automated answers: {judged}")
        for v in ("right", "partly", "wrong"):
            print(f"  {v:6s} {verdicts[v]:4d} {verdicts[v] / judged:6.1%}")
        by_source = collections.defaultdict(collections.Counter)
        for row in rows:
            by_source[row["source"]][row["verdict"].strip()] += 1
        for s, c in sorted(by_source.items()):
            print(f"    {s:9s} " + ", ".join(f"{v} {c[v]}" for v in ("right", "partly", "wrong")))


CASE = re.compile(r"^\s+([✓✗]) (.*) → (\S+) \((\d\.\d\d)(, answers)?\), expected (\S+)$")
FALSE = re.compile(r"^\s+✗ (.*) → answered by (\S+), but it is listed under not_faq$")


def faq(args):
    """The FAQ step on hand-labelled real messages: recall and precision at the shop's threshold.

    The labels are a knowledge-base check file (docs/knowledge-base.md): `paraphrases`, FAQ
    id → real messages that ask it; `not_faq`, the messages that ask none. They run as
    `kefu test -v` on a copy of the rules with only that file under tests/kb/.
    """
    import shutil
    work = tempfile.mkdtemp(prefix="kefu-faq-labels-")
    rules = os.path.join(work, "rules")
    shutil.copytree(args.rules, rules)
    # `kefu test` wants conversation tests; the shop's own run too, its kb checks do not.
    shutil.rmtree(os.path.join(rules, "tests", "kb"), ignore_errors=True)
    os.makedirs(os.path.join(rules, "tests", "kb"))
    shutil.copy(args.labels, os.path.join(rules, "tests", "kb", "labels.yaml"))
    out = subprocess.run([args.kefu, "test", "-v", rules], capture_output=True, text=True).stdout
    shutil.rmtree(work)
    asked = found = right = wrong_entry = 0
    misses, mistakes = [], []
    for line in out.splitlines():
        if m := CASE.match(line):
            mark, say, top, conf, answers, expected = m.groups()
            asked += 1
            found += mark == "✓"
            if answers and mark == "✓":
                right += 1
            elif answers:
                wrong_entry += 1
                mistakes.append(f"{say} → {top} ({conf}), asks {expected}")
            else:
                misses.append(f"{say} → {top} ({conf}), asks {expected}")
        elif m := FALSE.match(line):
            mistakes.append(f"{m.group(1)} → {m.group(2)}, asks no entry")
    summary = next((line for line in out.splitlines() if "knowledge base (" in line), "")
    negatives = int(re.search(r"(\d+)/(\d+) off-topic", summary).group(2)) if summary else 0
    answered = right + len(mistakes)
    print(f"{asked} messages ask an FAQ entry, {negatives} ask none")
    print(f"  entry ranked first  {found}/{asked}")
    print(f"  recall              {right}/{asked} = {right / max(asked, 1):.1%} (answered directly by the right entry)")
    print(f"  precision           {right}/{answered} = {right / max(answered, 1):.1%}"
          f" ({wrong_entry} by another entry, {len(mistakes) - wrong_entry} messages that ask none)")
    if args.verbose:
        for x in misses:
            print("  not answered:", x)
        for x in mistakes:
            print("  wrong answer:", x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("show", help="print the conversations of an ECD file")
    p.add_argument("--data", required=True)
    p.set_defaults(run=show)
    p = sub.add_parser("replay", help="replay an ECD file through kefu")
    p.add_argument("--data", required=True, help="the ECD file (label \\t utterances)")
    p.add_argument("--rules", default="examples/taobao-shop")
    p.add_argument("--out", required=True, help="JSONL, one line per customer turn (keep it outside the repo)")
    p.add_argument("--kefu", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "kefu"))
    p.add_argument("--context", type=int, default=4, help="earlier utterances kept with each turn")
    p.set_defaults(run=replay)
    p = sub.add_parser("sheet", help="a judging sheet (TSV) of the automated answers")
    p.add_argument("--replay", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sample", type=int, default=100, help="judge a random sample of this many (0: all)")
    p.add_argument("--seed", type=int, default=28)
    p.add_argument("--carry", action="append", help="an earlier judged sheet whose verdicts to keep")
    p.set_defaults(run=sheet)
    p = sub.add_parser("score", help="shares and the judged wrong share")
    p.add_argument("--replay", required=True)
    p.add_argument("--judged", required=True)
    p.set_defaults(run=score)
    p = sub.add_parser("faq", help="FAQ recall and precision on hand-labelled real messages")
    p.add_argument("--labels", required=True, help="a kb check file (paraphrases, not_faq) of real messages")
    p.add_argument("--rules", default="examples/taobao-shop")
    p.add_argument("--kefu", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "kefu"))
    p.add_argument("--verbose", "-v", action="store_true", help="list the misses and the wrong answers")
    p.set_defaults(run=faq)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
