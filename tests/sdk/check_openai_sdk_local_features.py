"""The OpenAI features the on-box engine honours, through a running gateway with the official
`openai` Python SDK, on a small real model (SmolLM2): JSON output (`json_object`, a strict
`json_schema` with nested objects, arrays, enums and required fields, and the SDK's own
`parse()` with a pydantic model), a schema the engine refuses, `logprobs`/`top_logprobs`, `n`
and `seed`, streamed and not. The model's answers may be poor; their shape may not.

usage: check_openai_sdk_local_features.py BASE_URL
"""
import enum
import json
import sys
from typing import List

import jsonschema
import openai
import pydantic
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="sdk-test-key", max_retries=0, timeout=120)
MODEL = "local"


def ask(text):
    return [{"role": "user", "content": text}]


def stream_text(**kw):
    """Streams a request; returns ({index: text}, {index: finish_reason}, {index: [logprobs]})."""
    texts, finishes, logprobs = {}, {}, {}
    for chunk in client.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
            if c.logprobs and c.logprobs.content:
                logprobs.setdefault(c.index, []).extend(c.logprobs.content)
    return texts, finishes, logprobs


# --- JSON object -------------------------------------------------------------------------
kw = dict(model=MODEL, messages=ask("Describe a cat as JSON."), temperature=0, max_tokens=120,
          response_format={"type": "json_object"})
done = client.chat.completions.create(**kw)
choice = done.choices[0]
if choice.finish_reason == "stop":
    assert isinstance(json.loads(choice.message.content), dict), choice.message.content
else:
    assert choice.message.content.lstrip().startswith("{"), choice.message.content
texts, finishes, _ = stream_text(**kw)
assert texts[0] == choice.message.content and finishes[0] == choice.finish_reason, (texts, finishes)

# --- A strict JSON schema: nested objects, arrays, enums, required fields ------------------
schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "size": {"type": "string", "enum": ["small", "medium", "large"]},
        "population": {"type": "integer", "minimum": 0, "maximum": 50000000},
        "districts": {"type": "array", "maxItems": 3,
                      "items": {"type": "string", "maxLength": 12}},
        "mayor": {"type": "object",
                  "properties": {"name": {"type": "string", "maxLength": 16},
                                 "party": {"type": "string", "enum": ["red", "blue", "green"]}},
                  "required": ["name", "party"], "additionalProperties": False},
        "airports": {"type": "array", "maxItems": 2,
                     "items": {"type": "object",
                               "properties": {"code": {"type": "string", "maxLength": 4},
                                              "international": {"type": "boolean"}},
                               "required": ["code", "international"],
                               "additionalProperties": False}},
    },
    "required": ["name", "size", "population", "districts", "mayor", "airports"],
    "additionalProperties": False,
}
fmt = {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": schema}}
for temperature, seed in [(0, None), (1.0, 3), (1.0, 4)]:
    kw = dict(model=MODEL, messages=ask("Describe a city."), max_tokens=400,
              temperature=temperature, response_format=fmt)
    if seed is not None:
        kw["seed"] = seed
    done = client.chat.completions.create(**kw)
    assert done.choices[0].finish_reason == "stop", done
    jsonschema.validate(json.loads(done.choices[0].message.content), schema)
    texts, finishes, _ = stream_text(**kw)
    jsonschema.validate(json.loads(texts[0]), schema)
    if seed is not None or temperature == 0:
        assert texts[0] == done.choices[0].message.content, (texts, done)


# --- The SDK's structured outputs: parse() with a pydantic model ($defs and $ref) ---------
class Color(str, enum.Enum):
    red = "red"
    green = "green"


class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    legs: int
    color: Color


class Household(pydantic.BaseModel):
    pets: List[Pet] = pydantic.Field(max_length=2)
    owner: str = pydantic.Field(max_length=12)


parsed = client.chat.completions.parse(model=MODEL, messages=ask("Describe a household."),
                                       response_format=Household, temperature=0, max_tokens=300)
household = parsed.choices[0].message.parsed
assert isinstance(household, Household), parsed

# --- A schema the engine cannot enforce: a 400 naming the feature ------------------------
try:
    client.chat.completions.create(
        model=MODEL, messages=ask("x"), max_tokens=5,
        response_format={"type": "json_schema", "json_schema": {"name": "set", "schema": {
            "type": "array", "items": {"type": "integer"}, "uniqueItems": True}}})
    raise AssertionError("expected BadRequestError for uniqueItems")
except openai.BadRequestError as e:
    assert e.body["param"] == "response_format" and "uniqueItems" in e.message, e.body

# --- logprobs and top_logprobs ------------------------------------------------------------
kw = dict(model=MODEL, messages=ask("Name three fruits."), temperature=0, max_tokens=12,
          logprobs=True, top_logprobs=3)
done = client.chat.completions.create(**kw)
choice = done.choices[0]
tokens = choice.logprobs.content
assert len(tokens) == done.usage.completion_tokens, (len(tokens), done.usage)
assert "".join(t.token for t in tokens) == choice.message.content, (tokens, choice.message)
for t in tokens:
    assert t.logprob <= 0 and bytes(t.bytes).decode("utf-8", "replace") == t.token, t
    assert len(t.top_logprobs) == 3, t
    lps = [a.logprob for a in t.top_logprobs]
    assert lps == sorted(lps, reverse=True), lps
    # Greedy: the chosen token is the most likely one.
    assert t.top_logprobs[0].token == t.token and abs(lps[0] - t.logprob) < 1e-5, t
_, _, streamed = stream_text(**kw)
assert [(t.token, round(t.logprob, 4)) for t in streamed[0]] == \
    [(t.token, round(t.logprob, 4)) for t in tokens], (streamed, tokens)
for bad in [dict(top_logprobs=21), dict(logprobs=False, top_logprobs=2)]:
    try:
        client.chat.completions.create(**{**kw, **bad})
        raise AssertionError(f"expected BadRequestError for {bad}")
    except openai.BadRequestError as e:
        assert e.body["param"] == "top_logprobs", e.body

# --- n and seed ---------------------------------------------------------------------------
kw = dict(model=MODEL, messages=ask("Tell me about the sea."), temperature=1.0, max_tokens=16,
          n=3, seed=11, logprobs=True)
done = client.chat.completions.create(**kw)
assert [c.index for c in done.choices] == [0, 1, 2], done
per_choice = [len(c.logprobs.content) for c in done.choices]
assert sum(per_choice) == done.usage.completion_tokens, (per_choice, done.usage)
contents = [c.message.content for c in done.choices]
assert len(set(contents)) > 1, contents
again = client.chat.completions.create(**kw)
assert [c.message.content for c in again.choices] == contents, (again, contents)
assert again.usage.prompt_tokens == done.usage.prompt_tokens
texts, finishes, _ = stream_text(**kw)
assert [texts[i] for i in range(3)] == contents, (texts, contents)
assert set(finishes) == {0, 1, 2}, finishes
other = client.chat.completions.create(**{**kw, "seed": 12})
assert [c.message.content for c in other.choices] != contents, other
try:
    client.chat.completions.create(**{**kw, "n": 9})
    raise AssertionError("expected BadRequestError for n=9")
except openai.BadRequestError as e:
    assert e.body["param"] == "n", e.body

# --- Sampling fields out of range ---------------------------------------------------------
for bad, param in [({"presence_penalty": 2.5}, "presence_penalty"),
                   ({"frequency_penalty": -3}, "frequency_penalty"),
                   ({"logit_bias": {"999999999": 5}}, "logit_bias"),
                   ({"logit_bias": {"1": 101}}, "logit_bias")]:
    try:
        client.chat.completions.create(model=MODEL, messages=ask("x"), max_tokens=2, **bad)
        raise AssertionError(f"expected BadRequestError for {bad}")
    except openai.BadRequestError as e:
        assert e.body["param"] == param, e.body
print("ok")
