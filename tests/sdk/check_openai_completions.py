"""Drives a running gateway's legacy `/v1/completions` with the official `openai` Python SDK
(`completions.create`, JSON and stream), only the base URL changed.

usage: check_openai_completions.py BASE_URL MODEL EXPECTED_ROUTE
"""
import sys

import openai
from openai import OpenAI

base, model, route = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base, api_key="sdk-test-key", max_retries=0, timeout=60)

raw = client.completions.with_raw_response.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
c = raw.parse()
assert c.object == "text_completion" and c.choices[0].text.strip(), c
assert c.choices[0].finish_reason in ("stop", "length"), c
assert c.usage.prompt_tokens > 0 and 0 < c.usage.completion_tokens <= 8, c.usage
assert raw.headers["x-switchyard-route"] == route, dict(raw.headers)

pieces = []
for chunk in client.completions.create(model=model, prompt="The capital of France is", max_tokens=8,
                                       temperature=0, stream=True):
    if chunk.choices:
        pieces.append(chunk.choices[0].text)
assert "".join(pieces) == c.choices[0].text, (pieces, c.choices[0].text)

try:
    client.completions.create(model=model, prompt="x", echo=True)
    raise AssertionError("echo was accepted")
except openai.BadRequestError as e:
    assert "echo" in str(e), e
print("ok")
