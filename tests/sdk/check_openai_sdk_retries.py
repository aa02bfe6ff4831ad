"""The official `openai` SDK's own retries against an upstream that keeps answering 429: its
tries are not multiplied by the gateway's.

usage: check_openai_sdk_retries.py BASE_URL
The gateway's `auto` must go to a cloud model whose upstream always answers 429 with
`Retry-After: 1`, with gateway retries enabled.
"""
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="sdk-test-key", max_retries=2, timeout=20)
try:
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("expected RateLimitError")
except openai.RateLimitError as e:
    assert e.response.headers["x-switchyard-upstream-status"] == "429", dict(e.response.headers)
    assert e.response.headers["retry-after"] == "1", dict(e.response.headers)
print("ok")
