"""Drives the on-box model (a real GGUF model) through a running gateway with the official
`openai` Python SDK: `model="local"`, streaming and not.

usage: check_openai_sdk_local.py BASE_URL
"""
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="sdk-test-key", max_retries=0, timeout=60)
messages = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is the capital of Italy?"},
]
settings = dict(model="local", messages=messages, temperature=0, max_tokens=16)

raw = client.chat.completions.with_raw_response.create(**settings)
completion = raw.parse()
answer = completion.choices[0].message.content
assert isinstance(answer, str) and answer.strip(), completion
assert completion.choices[0].finish_reason in ("stop", "length"), completion
assert completion.usage.prompt_tokens > 10 and 0 < completion.usage.completion_tokens <= 16, completion.usage
assert raw.headers["x-switchyard-route"] == "local", dict(raw.headers)

text, usage, finish = "", None, None
for chunk in client.chat.completions.create(
    **settings, stream=True, stream_options={"include_usage": True}
):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
assert text == answer, (text, answer)
assert finish == completion.choices[0].finish_reason, finish
assert usage is not None and usage.completion_tokens == completion.usage.completion_tokens, usage

# What the on-box engine cannot do is refused with a 400 naming it, never answered without it:
# image parts, and tools on a model whose chat template offers none (SmolLM2's).
image = {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {
    "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}
tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
for extra, param in [({"messages": [image]}, "messages"), ({"tools": tools}, "tools")]:
    try:
        client.chat.completions.create(**{**settings, **extra})
        raise AssertionError(f"expected BadRequestError for {extra}")
    except openai.BadRequestError as e:
        assert e.code == "unsupported_capability" and e.body["param"] == param, e.body
try:
    client.chat.completions.create(**{**settings, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "nope"}]}]})
    raise AssertionError("expected BadRequestError for an unknown content part")
except openai.BadRequestError as e:
    assert "type `nope`" in e.message, e.message
print("ok")
