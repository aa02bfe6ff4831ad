"""Tool calls on the on-box engine, through a running gateway with the official `openai` Python
SDK, on a model whose chat template offers tools (Qwen2.5-Coder 0.5B): the model choosing a
tool (`tool_choice: "auto"`), a forced call (`required` and a named function: arguments valid
under the function's schema), tool-call deltas in a stream (and the SDK's stream helper putting
them together), and a round trip with the SDK's tool helpers (`pydantic_function_tool`,
`parse()` with typed arguments): the tool's result goes back as a `tool` message and the model
answers in text.

usage: check_openai_sdk_tools.py BASE_URL
"""
import json
import sys

import jsonschema
import openai
import pydantic
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="sdk-test-key", max_retries=0, timeout=180)
MODEL = "local"
WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 40},
                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather",
                                      "description": "Get the current weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time",
                                      "description": "Get the local time in a city",
                                      "parameters": {"type": "object",
                                                     "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
]


def ask(text):
    return [{"role": "user", "content": text}]


# The model chooses the tool.
done = client.chat.completions.create(model=MODEL, messages=ask("What is the weather in Paris?"),
                                      tools=TOOLS, temperature=0, max_tokens=80)
choice = done.choices[0]
assert choice.finish_reason == "tool_calls", choice
call = choice.message.tool_calls[0]
assert call.type == "function" and call.function.name == "get_weather" and call.id, call
assert "Paris" in json.loads(call.function.arguments)["city"], call

# Nothing to call: it answers in text.
done = client.chat.completions.create(model=MODEL, messages=ask("Write a haiku about rain."),
                                      tools=TOOLS, temperature=0, max_tokens=60)
assert done.choices[0].finish_reason in ("stop", "length") and not done.choices[0].message.tool_calls
assert done.choices[0].message.content.strip(), done

# Forced: a named function, and `required`; the arguments are valid under its schema.
for tool_choice in [{"type": "function", "function": {"name": "get_weather"}}, "required"]:
    done = client.chat.completions.create(model=MODEL, messages=ask("Hello there!"), tools=TOOLS,
                                          tool_choice=tool_choice, temperature=0, max_tokens=80)
    calls = done.choices[0].message.tool_calls
    assert done.choices[0].finish_reason == "tool_calls" and len(calls) == 1, done
    if isinstance(tool_choice, dict):
        assert calls[0].function.name == "get_weather", calls
        jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER)
    else:
        assert calls[0].function.name in ("get_weather", "get_time"), calls
        json.loads(calls[0].function.arguments)

# Streamed: tool-call deltas, put together by the SDK's stream helper.
kw = dict(model=MODEL, messages=ask("What is the weather in Oslo?"), tools=TOOLS,
          tool_choice={"type": "function", "function": {"name": "get_weather"}},
          temperature=0, max_tokens=80)
deltas, finish = [], None
for chunk in client.chat.completions.create(**kw, stream=True):
    for c in chunk.choices:
        deltas.extend(c.delta.tool_calls or [])
        finish = c.finish_reason or finish
assert finish == "tool_calls" and deltas and deltas[0].index == 0 and deltas[0].id, deltas
with client.chat.completions.stream(**kw) as stream:
    final = stream.get_final_completion()
streamed = final.choices[0].message.tool_calls[0]
assert streamed.function.name == "get_weather", final
args = json.loads(streamed.function.arguments)
jsonschema.validate(args, WEATHER)
assert "Oslo" in args["city"], args


# A round trip with the SDK's tool helpers: typed arguments, the result sent back as a `tool`
# message, and an answer in text.
class GetWeather(pydantic.BaseModel):
    """Get the current weather in a city"""
    city: str = pydantic.Field(max_length=40)


messages = ask("What is the weather in Rome?")
tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
first = client.chat.completions.parse(model=MODEL, messages=messages, tools=[tool],
                                      tool_choice="required", temperature=0, max_tokens=80)
message = first.choices[0].message
call = message.tool_calls[0]
assert isinstance(call.function.parsed_arguments, GetWeather), call
weather = {"city": call.function.parsed_arguments.city, "temperature_c": 21, "sky": "sunny"}
messages += [{"role": "assistant", "content": message.content,
              "tool_calls": [{"id": call.id, "type": "function",
                              "function": {"name": call.function.name,
                                           "arguments": call.function.arguments}}]},
             {"role": "tool", "tool_call_id": call.id, "content": json.dumps(weather)}]
second = client.chat.completions.create(model=MODEL, messages=messages, tools=[tool],
                                        tool_choice="none", temperature=0, max_tokens=60)
answer = second.choices[0].message
assert answer.content and answer.content.strip() and not answer.tool_calls, second

# A named function that `tools` does not define is a 400 naming `tool_choice`.
try:
    client.chat.completions.create(model=MODEL, messages=ask("x"), tools=TOOLS, max_tokens=5,
                                   tool_choice={"type": "function", "function": {"name": "nope"}})
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.body["param"] == "tool_choice", e.body
print("ok")
