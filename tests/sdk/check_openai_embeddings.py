"""Drives a running gateway's `/v1/embeddings` with the official `openai` Python SDK
(`embeddings.create`, which asks for base64 and decodes it, and with floats), only the base URL
changed.

usage: check_openai_embeddings.py BASE_URL MODEL fake|local
  fake:  the model is the fake upstream of tests/common, whose i-th vector starts
         [i, words of the i-th input] and which counts words as tokens
  local: the model is the on-box sentence encoder (all-MiniLM-L6-v2): 384 unit-length values
"""
import math
import sys

import openai
from openai import OpenAI

base, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base, api_key="sdk-test-key", max_retries=0, timeout=60)

texts = ["The cat sat on the mat", "A cat is sitting on a rug", "Quarterly revenue grew"]
raw = client.embeddings.with_raw_response.create(model=model, input=texts)
e = raw.parse()
assert e.object == "list" and len(e.data) == 3, e
assert [item.index for item in e.data] == [0, 1, 2], e.data
floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
if mode == "fake":
    for i, (item, text) in enumerate(zip(e.data, texts)):
        assert len(item.embedding) == 4, item
        assert item.embedding[:2] == [float(i), float(len(text.split()))], item.embedding
    assert e.usage.prompt_tokens == 16 and e.usage.total_tokens == 16, e.usage
    assert raw.headers["x-switchyard-route"] == "cloud", dict(raw.headers)
    short = client.embeddings.create(model=model, input="Rain", encoding_format="float", dimensions=2)
    assert short.data[0].embedding == [0.0, 1.0], short
else:
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    for item in e.data:
        assert len(item.embedding) == 384, len(item.embedding)
        assert abs(math.sqrt(dot(item.embedding, item.embedding)) - 1) < 1e-4
    v = [item.embedding for item in e.data]
    assert dot(v[0], v[1]) > dot(v[0], v[2]), "the cat sentences are nearer each other"
    assert e.usage.prompt_tokens > 0 and e.usage.total_tokens == e.usage.prompt_tokens, e.usage
    assert raw.headers["x-switchyard-route"] == "local", dict(raw.headers)
# The SDK's base64 decoding gives the vectors the float encoding gives.
assert [item.embedding for item in floats.data] == [item.embedding for item in e.data]

try:
    client.embeddings.create(model=model, input="")
    raise AssertionError("an empty input was accepted")
except openai.BadRequestError as err:
    assert err.body["param"] == "input", err.body
print("ok")
