#!/usr/bin/env python3
"""Talk to kefu with the official `openai` Python SDK, unchanged.

    pip install openai
    kefu serve --rules rules --addr 127.0.0.1:8080      # in another terminal
    python3 examples/openai_client.py [BASE_URL]        # default http://127.0.0.1:8080/v1

kefu reads the last user message, keeps the conversation itself (the `user` field is the
session id), and adds its own metadata (what answered, which rule, the trace) in an
extra `kefu` field that the SDK keeps in `model_extra`. The script checks what it gets
and exits non-zero if the answers do not look right, so `make test` can run it.
"""

import sys

from openai import OpenAI

base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
# kefu's customer routes need no key; the SDK insists on one, so pass anything.
client = OpenAI(base_url=base_url, api_key="unused")

question = "这件T恤洗了会缩水吗"

# 1. A plain completion.
completion = client.chat.completions.create(
    model="kefu-demo",
    user="sdk-example",
    messages=[{"role": "user", "content": question}],
)
answer = completion.choices[0].message.content
kefu = completion.model_extra["kefu"]
print(f"你: {question}")
print(f"客服: {answer}")
print(f"      [{kefu['source']} {kefu.get('rule', '')} · rules {kefu['rules_version']}]")
assert completion.object == "chat.completion", completion
assert completion.model == "kefu-demo", completion
assert completion.choices[0].finish_reason == "stop", completion
assert kefu["source"] == "rule" and "缩水" in answer, completion

# 2. The same question, streamed.
stream = client.chat.completions.create(
    model="kefu-demo",
    user="sdk-example",
    messages=[{"role": "user", "content": question}],
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        finish = choice.finish_reason or finish
streamed = "".join(pieces)
print(f"客服 (streamed): {streamed}")
assert streamed == answer, (streamed, answer)
assert finish == "stop", finish
assert usage is not None and usage.total_tokens == 0, usage  # a rule answer uses no tokens

print("openai SDK example: ok (plain and streamed completions)")
