#!/usr/bin/env python3
"""A synthetic conversation log for benchmarking `kefu mine` (benches/mine.sh).

    benches/mine_gen.py --turns 100000 --out /tmp/mine-log/conversations-bench.jsonl

Deterministic (a fixed seed; the same arguments give the same bytes). Four weeks of
traffic ending 2026-11-29 in sessions of one to six customer turns. About 70% of the
turns are answered (rules, FAQ entries, flows, with intents and confidences as the demo
shop logs them); the rest are misses: the fallback message, a handoff, or a model answer
with no confident intent. Three quarters of the misses are the topics of the mining
evaluation set (tests/data/mine/eval/labels.yaml, its paraphrases varied the way
customers vary them: fillers, particles, punctuation, a doubled or dropped character,
order numbers), a quarter are a long tail of questions asked once or twice. About one
conversation in forty ends with a feedback record, some of them bad. Standard library
only.
"""

import argparse
import datetime as dt
import json
import os
import random
import re

LABELS = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "mine", "eval", "labels.yaml")
END = dt.datetime(2026, 11, 29, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
DAYS = 28
RULES = "bench0mine25"
FALLBACK = "抱歉亲，这个问题小美暂时回答不了。您可以回复“人工”联系人工客服（9:00-23:00）。"
HANDOFF = "亲，正在为您转接人工客服，请稍候～（人工服务时间 9:00-23:00）"

# Answered turns: (message, source, intent, rule or faq id, reply).
ANSWERED = [
    ("这件T恤会缩水吗", "rule", "商品.缩水", "缩水", "亲，我们的T恤经过预缩处理，正常洗涤不会明显缩水～"),
    ("什么时候发货", "rule", "物流.发货时间", "发货时间", "亲，付款后48小时内发货哦～"),
    ("我的快递到哪了", "flow", "物流.查询", "查物流", "亲，请发一下订单号，小美帮您查～"),
    ("包邮吗", "rule", "物流.运费", "运费", "亲，单笔满 69 元包邮～"),
    ("是纯棉的吗", "rule", "商品.材质", "材质", "亲，这款是100%新疆长绒棉～"),
    ("我想退货", "flow", "售后.退货", "退货", "好的亲，请问是哪一单呢？"),
    ("支持七天无理由吗", "rule", "售后.退货.七天无理由", "七天无理由", "支持的亲，签收后7天内～"),
    ("我170 130斤穿什么码", "flow", "商品.尺码", "尺码推荐", "亲，建议您选L码～"),
    ("有黑色的吗", "rule", "商品.颜色", "颜色", "亲，这款有黑白灰三色～"),
    ("还有货吗", "rule", "商品.库存", "库存", "亲，目前有货，拍下48小时内发出～"),
    ("退款什么时候到账", "rule", "售后.退款进度", "退款进度", "亲，退款1-3个工作日原路退回～"),
    ("能换个尺码吗", "flow", "售后.换货", "换货", "可以的亲，请问要换成什么尺码？"),
    ("你好", "rule", "其他.问候", "问候", "亲，您好～我是客服小美！"),
    ("谢谢", "rule", "其他.感谢", "感谢", "不客气亲～"),
    ("衣服怎么洗", "faq", None, "洗涤保养", "亲，建议反面冷水手洗～"),
    ("优惠券怎么用", "faq", None, "优惠券使用", "亲，下单时在优惠栏选择即可～"),
    ("有童装吗", "faq", None, "童装", "亲，目前只有成人款哦～"),
    ("客服几点上班", "faq", None, "客服时间", "亲，人工客服 9:00-23:00 在线～"),
    ("是正品吗", "faq", None, "正品保障", "亲，官方旗舰店，假一赔十～"),
    ("两个订单能一起发吗", "faq", None, "合并发货", "亲，同一地址未发货的可以合并～"),
]

FILLERS_BEFORE = ["", "", "", "亲 ", "在吗 ", "你好 ", "请问", "hi ", "亲亲 ", "问一下 "]
FILLERS_AFTER = ["", "", "", "？", "?", "呢", "啊", "呀", "亲", "～", "。。", "!!", " 急"]
LONG_TAIL_PARTS = [
    "能不能", "可以", "怎么", "为什么", "有没有", "什么时候", "多少钱", "在哪里",
    "修改", "预约", "开通", "取消", "申请", "查一下", "投诉", "报名", "参加",
    "发票", "积分", "优惠", "快递", "包装", "直播", "会员", "活动", "赠品", "抽奖", "样品",
    "手机号", "地址", "尺码", "颜色", "面料", "退款", "售后", "评价", "晒图", "返现",
    "吊牌", "洗标", "领口", "袖子", "拉链", "纽扣", "口袋", "帽子", "刺绣", "logo",
]


def read_topics(path):
    """The topics of labels.yaml and their messages (a reader for that file's layout only,
    so the generator needs no YAML package)."""
    topics = {}
    current = None
    in_messages = False
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^  - id: (\S+)", line)
        if m:
            current = m.group(1)
            topics[current] = []
            in_messages = False
            continue
        if current is None:
            continue
        if re.match(r"^    messages:", line):
            in_messages = True
            continue
        m = re.match(r"^      - (.+?)\s*$", line)
        if in_messages and m:
            text = m.group(1)
            if text.startswith("+ "):
                text = text[2:]
            topics[current].append(text)
    return topics


def vary(rng, text):
    """A customer's way of typing the same message."""
    roll = rng.random()
    if roll < 0.1 and len(text) > 3:
        i = rng.randrange(1, len(text) - 1)
        text = text[:i] + text[i] + text[i:]  # a doubled character
    elif roll < 0.18 and len(text) > 4:
        i = rng.randrange(1, len(text) - 1)
        text = text[:i] + text[i + 1:]  # a dropped character
    elif roll < 0.22:
        text = text + " 订单号" + str(rng.randrange(10**15, 10**16))
    return rng.choice(FILLERS_BEFORE) + text + rng.choice(FILLERS_AFTER)


def long_tail(rng):
    words = rng.sample(LONG_TAIL_PARTS, rng.randrange(2, 5))
    return "".join(words) + rng.choice(["吗", "呢", "", "？", "啊"])


def turn(ts, session, n, message, reply, source, intent=None, confidence=0.0, name=None, handoff=None, rng=None):
    record = {
        "kind": "turn",
        "ts": ts.isoformat(timespec="seconds"),
        "session": session,
        "turn": n,
        "message": message,
        "reply": reply,
        "source": source,
    }
    if name and source == "rule":
        record["rule"] = name
    elif name and source == "flow":
        record["flow"] = name
        record["step"] = "ask"
    elif name and source == "faq":
        record["faq"] = name
    if intent:
        record["intent"] = intent
    record["confidence"] = round(confidence, 3)
    if handoff:
        record["handoff"] = handoff
    record["latency_ms"] = round(rng.uniform(0.05, 2.5), 3)
    record["rules"] = RULES
    record["node"] = "bench-1"
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--out", required=True, help="the .jsonl file to write")
    parser.add_argument("--seed", type=int, default=25)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    topics = read_topics(LABELS)
    missing = {k: v for k, v in topics.items() if k != "distractor" and v}
    names = sorted(missing)
    # Some topics grow in the last weeks, as a new question does.
    growth = {name: rng.choice([0.0, 0.0, 1.0, 2.0]) for name in names}
    lines = []
    written = 0
    s = 0
    start = END - dt.timedelta(days=DAYS)
    while written < args.turns:
        s += 1
        session = f"bench-{s:06d}"
        day = rng.random()
        ts = start + dt.timedelta(seconds=int(day * DAYS * 86400))
        for n in range(1, rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6]) + 1):
            if written >= args.turns:
                break
            ts += dt.timedelta(seconds=rng.randrange(10, 120))
            if rng.random() < 0.70:
                message, source, intent, name, reply = rng.choice(ANSWERED)
                record = turn(
                    ts, session, n, vary(rng, message), reply, source,
                    intent=intent, confidence=rng.uniform(0.65, 0.99) if intent else 0.0,
                    name=name, rng=rng,
                )
            else:
                if rng.random() < 0.75:
                    name = rng.choice(names)
                    # A growing topic is asked more the later in the period.
                    if rng.random() > (1.0 + growth[name] * day) / (1.0 + growth[name]):
                        name = rng.choice(names)
                    message = vary(rng, rng.choice(missing[name]))
                else:
                    message = long_tail(rng)
                roll = rng.random()
                if roll < 0.6:
                    record = turn(ts, session, n, message, FALLBACK, "fallback", rng=rng)
                elif roll < 0.75:
                    record = turn(ts, session, n, message, HANDOFF, "handoff", handoff="连续三次未能解决", rng=rng)
                else:
                    record = turn(ts, session, n, message, "亲，这个问题我帮您问一下～", "llm",
                                  intent=rng.choice([None, "其他.投诉", "商品.材质"]),
                                  confidence=rng.uniform(0.1, 0.5), rng=rng)
            lines.append(record)
            written += 1
        if rng.random() < 0.025:
            ts += dt.timedelta(seconds=30)
            lines.append({"kind": "feedback", "ts": ts.isoformat(timespec="seconds"), "session": session,
                          "score": rng.choice([1, 2, 4, 5, 5])})
    lines.sort(key=lambda r: r["ts"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as out:
        for record in lines:
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"{written} turns in {s} sessions, {len(lines) - written} feedback records -> {args.out}")


if __name__ == "__main__":
    main()
