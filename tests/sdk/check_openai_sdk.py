"""Drives a running Switchyard gateway with the official `openai` Python SDK.

usage: check_openai_sdk.py BASE_URL
The gateway's policy must route `auto` to a cloud model and have a local model.
Exits non-zero (with an AssertionError or an SDK exception) when anything is off.
"""
import sys

import openai
from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="sdk-test-key", max_retries=0, timeout=20)
messages = [{"role": "user", "content": "Say hello"}]

# Non-streaming, routed by policy, with the routing headers readable through the SDK.
raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
completion = raw.parse()
assert completion.choices[0].message.content == "Hello from the cloud", completion
assert completion.usage.prompt_tokens == 21, completion.usage
assert raw.headers["x-switchyard-route"] == "cloud", dict(raw.headers)
assert raw.headers["x-switchyard-rule"] == "default", dict(raw.headers)
assert float(raw.headers["x-switchyard-cost-usd"]) > 0

# Streaming with usage.
stream = client.chat.completions.create(
    model="auto", messages=messages, stream=True, stream_options={"include_usage": True}
)
text, usage = "", None
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
assert text == "Hello from the cloud", text
assert usage is not None and usage.completion_tokens == 4, usage

# The on-box model, both ways.
local = client.chat.completions.create(model="local", messages=messages)
assert local.choices[0].message.content == "echo: Say hello", local
assert local.usage.completion_tokens == 3, local.usage
text = "".join(
    c.choices[0].delta.content or ""
    for c in client.chat.completions.create(model="local", messages=messages, stream=True)
    if c.choices
)
assert text == "echo: Say hello", text

# Models list.
ids = [m.id for m in client.models.list()]
assert ids[:2] == ["auto", "local"], ids
# Each listed model can be looked up by id; any other id is the SDK's NotFoundError.
for id in ids:
    model = client.models.retrieve(id)
    assert model.id == id and model.object == "model", model
assert client.models.retrieve("cloud").owned_by == "switchyard-cloud"
try:
    client.models.retrieve("no-such-model")
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
    assert "no-such-model" in e.body["message"], e.body

# Errors surface as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
try:
    client.chat.completions.create(model="auto", messages=[])
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.body["param"] == "messages", e.body

print("openai SDK", openai.__version__, "ok")
