"""Drives a running gateway's `/v1/embeddings` with the official `openai` Python SDK
(`embeddings.create`, which asks for base64 and decodes it, and with floats), only the base URL
changed. The upstream behind it is the fake of tests/common: the i-th vector starts
[i, words of the i-th input].

usage: check_openai_embeddings.py BASE_URL MODEL
"""
import sys

import openai
from openai import OpenAI

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key="sdk-test-key", max_retries=0, timeout=60)

texts = ["The cat sat on the mat", "Dogs bark", "Rain"]
raw = client.embeddings.with_raw_response.create(model=model, input=texts)
e = raw.parse()
assert e.object == "list" and len(e.data) == 3, e
for i, (item, text) in enumerate(zip(e.data, texts)):
    assert item.index == i and len(item.embedding) == 4, item
    assert item.embedding[:2] == [float(i), float(len(text.split()))], item.embedding
assert e.usage.prompt_tokens == 9 and e.usage.total_tokens == 9, e.usage
assert raw.headers["x-switchyard-route"] == "cloud", dict(raw.headers)

floats = client.embeddings.create(model=model, input="Rain", encoding_format="float", dimensions=2)
assert floats.data[0].embedding == [0.0, 1.0], floats

try:
    client.embeddings.create(model=model, input="")
    raise AssertionError("an empty input was accepted")
except openai.BadRequestError as err:
    assert err.body["param"] == "input", err.body
print("ok")
