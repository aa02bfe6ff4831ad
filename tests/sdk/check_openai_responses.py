"""Drives a running gateway's `/v1/responses` with the official `openai` Python SDK
(`responses.create`, `responses.stream`, `responses.input_tokens.count` and
`responses.compact`), only the base URL changed.

usage: check_openai_responses.py BASE_URL MODE
  MODE cloud: `auto` goes to a fake OpenAI upstream; the tag `tool` to one that calls get_weather
  MODE native: `auto` goes to a fake upstream serving the Responses API itself, which answers
              as `gpt-up` (passed through as it came; no tool calls)
  MODE local: `local` is a real on-box GGUF model
"""
import json
import sys

import openai
from openai import OpenAI

base, mode = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key="sdk-test-key", max_retries=0, timeout=60)
model = "local" if mode == "local" else "auto"

raw = client.responses.with_raw_response.create(
    model=model, instructions="You are concise.", input="What is the capital of Italy?",
    max_output_tokens=16, temperature=0, safety_identifier="user-1f2e", prompt_cache_key="capitals",
)
r = raw.parse()
# The response repeats the identifiers (a passed-through answer is the upstream's own).
assert mode == "native" or (r.safety_identifier, r.prompt_cache_key) == ("user-1f2e", "capitals"), r
assert r.object == "response" and r.status in ("completed", "incomplete"), r
assert r.output_text.strip(), r
assert r.model == ("gpt-up" if mode == "native" else model) and r.instructions == "You are concise." and r.max_output_tokens == 16, r
assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 16, r.usage
assert raw.headers["x-switchyard-route"] == ("local" if mode == "local" else "cloud"), dict(raw.headers)
# The prompt's token count: exact on the box (the prompt the model then read), the provider's
# own from a model serving the Responses API (the fake upstream's counts 4321), else the
# gateway's estimate.
count = client.responses.input_tokens.count(model=model, instructions="You are concise.",
                                            input="What is the capital of Italy?")
assert count.object == "response.input_tokens" and count.input_tokens > 0, count
assert mode != "local" or count.input_tokens == r.usage.input_tokens, (count, r.usage)
assert (mode == "native") == (count.input_tokens == 4321), (mode, count)

deltas, kinds = [], []
with client.responses.stream(model=model, input=[{"role": "user", "content": "What is the capital of Italy?"}],
                             max_output_tokens=16, temperature=0) as stream:
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    final = stream.get_final_response()
assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), kinds
assert final.output_text == "".join(deltas) and deltas, (final.output_text, deltas)
assert final.usage.output_tokens > 0, final.usage

try:
    client.responses.create(model=model, input="hi", previous_response_id="resp_123")
    raise AssertionError("previous_response_id was accepted")
except openai.BadRequestError as e:
    assert "previous_response_id" in str(e), e
# The gateway stores no responses: retrieving one is a 404 that says so.
try:
    client.responses.retrieve("resp_123")
    raise AssertionError("a stored response was retrieved")
except openai.NotFoundError as e:
    assert e.code == "not_found" and "keeps no responses" in str(e), e
# A built-in tool runs on OpenAI's servers: only a model serving the Responses API itself
# (passed the request as it came) can take it; any other route is a 400 naming the tool.
try:
    r = client.responses.create(model=model, input="hi",
                                tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}])
    assert mode == "native", ("a built-in tool was accepted by a model that cannot run it", r)
except openai.BadRequestError as e:
    assert mode != "native" and e.code == "unsupported_capability" and e.param == "tools[0]", e
# A web search is chat's web_search_options: any model with the web_search capability takes it
# (the fake cloud model does), the on-box model does not.
try:
    r = client.responses.create(model=model, input="hi", tools=[{"type": "web_search"}])
    assert mode != "local" and r.output_text, ("the on-box model took a web search", r)
except openai.BadRequestError as e:
    assert mode == "local" and e.code == "unsupported_capability" and e.param == "tools[0]", e

# A compaction is the Responses API's own: a model serving it takes the conversation as it
# came and its compacted output starts the next turn there; any other route is a 400.
conversation = [{"role": "user", "content": "What is the capital of Italy?"},
                {"role": "assistant", "content": "Rome."},
                {"role": "user", "content": "And of France?"}]
try:
    compacted = client.responses.compact(model=model, input=conversation, instructions="You are concise.")
    assert mode == "native", ("a compaction was answered by a model that cannot write one", compacted)
    assert compacted.object == "response.compaction" and compacted.usage.output_tokens > 0, compacted
    kinds = [o.type for o in compacted.output]
    assert kinds == ["message", "message", "compaction"], kinds
    assert compacted.output[1].content[0].text == "And of France?", compacted.output
    items = [o.model_dump(exclude_none=True) for o in compacted.output]
    r = client.responses.create(model=model, input=items + [{"role": "user", "content": "And of Spain?"}])
    assert r.output_text, r
except openai.BadRequestError as e:
    assert mode != "native" and e.code == "unsupported_capability" and e.param == "input", e

if mode == "cloud":
    tools = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    tagged = {"x-switchyard-tags": "tool"}
    r = client.responses.create(model="auto", input="Weather in Paris?", tools=tools, extra_headers=tagged)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}, r.output
    with client.responses.stream(model="auto", input="Weather in Paris?", tools=tools, extra_headers=tagged) as stream:
        final = stream.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert calls and json.loads(calls[0].arguments) == {"city": "Paris"}, final.output
    follow = client.responses.create(model="auto", tools=tools, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 C, sunny"},
    ])
    assert follow.output_text, follow
print("ok")
