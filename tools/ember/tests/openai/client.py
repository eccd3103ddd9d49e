#!/usr/bin/env python3
"""The `openai` Python package against `ember serve` (run by tools/ember/tests/serve.rs).

    client.py PORT   -> prints one JSON object of what the client got
"""
import json
import sys

import openai

port = int(sys.argv[1])
client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
out = {}
out["models"] = [m.id for m in client.models.list().data]
model = out["models"][0]
messages = [{"role": "user", "content": "What is the capital of France?"}]
r = client.chat.completions.create(model=model, messages=messages, max_tokens=6, temperature=0)
out["chat"] = r.choices[0].message.content
out["chat_finish"] = r.choices[0].finish_reason
out["chat_usage"] = [r.usage.prompt_tokens, r.usage.completion_tokens]
stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=6, temperature=0, stream=True
)
out["chat_stream"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
r = client.completions.create(
    model=model, prompt="The three primary colours are", max_tokens=16, temperature=0
)
out["completion"] = r.choices[0].text
stream = client.completions.create(
    model=model, prompt="The three primary colours are", max_tokens=16, temperature=0, stream=True
)
out["completion_stream"] = "".join(c.choices[0].text for c in stream if c.choices)
try:
    client.chat.completions.create(model=model, messages=messages, max_tokens=10**6)
    out["too_long"] = "accepted"
except openai.BadRequestError as e:
    out["too_long"] = e.status_code
print(json.dumps(out))
