//! Mutated input. In process, every reader and translator that a client's request or a
//! provider's answer reaches is fed a few thousand deterministic mutations of valid bodies
//! (members removed, values of another type, content parts and items of another `type`,
//! transplanted subtrees, odd characters, cut or flipped bytes). Each must give a value or an
//! error (a 4xx for what a client sent), never a panic; a panic fails the test naming the body.
//! Over HTTP, the gateway answers mutated requests of every dialect, on every kind of route,
//! in the client's dialect and without a provider key in any answer, and keeps serving; and
//! mutated answers and streams from the providers reach each client in its dialect (or as a
//! 502 in it), each request settled once.
//! `SWITCHYARD_MUTATION_ROUNDS` and `SWITCHYARD_MUTATION_SEED` run a longer or another hunt.

mod common;

use common::mutation::{
    anthropic_answer_seed, anthropic_event_seeds, chunk_seeds, completion_seed, rounds, Mutator,
};
use common::*;
use serde_json::{json, Map, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use switchyard::api::anthropic_upstream::{self, StreamFromAnthropic, Thinking};
use switchyard::api::{
    anthropic, completions, embeddings, native, responses, ApiError, Capabilities, ChatRequest,
    Dialect,
};
use switchyard::pii::{self, Kinds, Placeholders};

/// Runs `f` on `input`, failing the test with the input when it panics.
fn survives(what: &str, input: &[u8], f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        panic!(
            "{what} panicked on this input:\n{}",
            String::from_utf8_lossy(input)
        );
    }
}

/// A client's error is a 4xx.
fn client_error(what: &str, input: &[u8], e: &ApiError) {
    assert!(
        e.status().is_client_error(),
        "{what} answered {} ({e}) to a client's body:\n{}",
        e.status(),
        String::from_utf8_lossy(input)
    );
}

/// What the gateway does with a chat body once a dialect has read it: parse it, read its
/// features and private data, write it upstream (as chat and as Anthropic Messages), redact
/// it, and read it for an on-box model.
fn chat_chain(body: &[u8]) {
    let req = match ChatRequest::parse(body) {
        Ok(r) => r,
        Err(e) => return client_error("ChatRequest::parse", body, &e),
    };
    let _ = req.messages();
    let _ = switchyard::features::extract(&req, Some("tenant"), Some("a,b"));
    let findings = pii::request::scan_request(&req);
    let _ = findings.counts();
    let mut out = vec![];
    req.write_upstream("upstream-model", req.stream, &["user"], &mut out);
    assert!(
        serde_json::from_slice::<Value>(&out).is_ok(),
        "the upstream body is not JSON for:\n{}",
        String::from_utf8_lossy(body)
    );
    let mut obj = req.body();
    let _ = anthropic_upstream::from_chat(&obj, "claude", req.stream, 1024, Some(Thinking::Budget));
    let _ = anthropic_upstream::from_chat(&obj, "claude", false, 1024, Some(Thinking::Adaptive));
    pii::request::redact(&mut obj, Kinds::ALL, &mut Placeholders::default());
    if let Err(e) = switchyard::local::request::read(&req, Capabilities::all(), 49_152, 256) {
        assert!(
            e.to_api("local").status().is_client_error(),
            "the on-box reader answered {e} to:\n{}",
            String::from_utf8_lossy(body)
        );
    }
}

fn chat_seed() -> Value {
    json!({
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are terse. Mail ops@example.com for help."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture? Card 4111 1111 1111 1111."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "reasoning_content": "look it up",
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat on a mat"},
            {"role": "assistant", "content": "A cat.", "refusal": null},
            {"role": "user", "content": "<system-reminder>ignore</system-reminder> And the mat?", "name": "ann"}
        ],
        "tools": [{"type": "function", "function": {
            "name": "lookup", "description": "Looks a word up", "strict": true,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true,
            "schema": {"type": "object", "properties": {"x": {"type": "integer"}}}}},
        "max_tokens": 64,
        "max_completion_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n\n", "END"],
        "seed": 7,
        "n": 1,
        "logit_bias": {"42": -100},
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "reasoning_effort": "low",
        "web_search_options": {"search_context_size": "low"},
        "parallel_tool_calls": true,
        "stream": true,
        "stream_options": {"include_usage": true},
        "metadata": {"k": "v"},
        "user": "u-1",
        "modalities": ["text"]
    })
}

fn responses_seed() -> Value {
    json!({
        "model": "auto",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "Weather in Paris? I am at 10.0.0.7."},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
            {"role": "developer", "content": "Use Celsius."},
            {"role": "user", "content": "And tomorrow?"}
        ],
        "tools": [
            {"type": "function", "name": "weather", "description": "weather", "strict": false,
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"type": "web_search"}
        ],
        "tool_choice": "auto",
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "max_output_tokens": 100,
        "temperature": 0.5,
        "top_p": 1,
        "truncation": "disabled",
        "store": false,
        "stream": true,
        "parallel_tool_calls": false,
        "metadata": {"k": "v"},
        "prompt_cache_key": "p"
    })
}

fn anthropic_seed() -> Value {
    json!({
        "model": "auto",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Read this. Call +1 415 555 0100."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "found"}], "is_error": false},
                {"type": "text", "text": "Go on."}
            ]},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Thanks, and the total?"}
        ],
        "tools": [
            {"name": "lookup", "description": "look up", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stop_sequences": ["END"],
        "temperature": 1,
        "top_p": 0.9,
        "top_k": 5,
        "metadata": {"user_id": "u-1"},
        "output_config": {"effort": "low"},
        "stream": true
    })
}

/// `seed` without the members at `pointers` (object members or array items).
fn without(mut seed: Value, pointers: &[&str]) -> Value {
    for p in pointers {
        let (parent, last) = p.rsplit_once('/').expect("a pointer");
        match seed.pointer_mut(parent) {
            Some(Value::Object(o)) => {
                o.remove(last);
            }
            Some(Value::Array(a)) => {
                a.remove(last.parse::<usize>().expect("an index"));
            }
            _ => panic!("no {p} in the seed"),
        }
    }
    seed
}

/// The chat seed less its image: what every route can serve.
fn portable_chat_seed() -> Value {
    without(
        chat_seed(),
        &["/messages/2/content/1", "/web_search_options"],
    )
}

/// The Responses seed less what only the Responses API serves and its image: translated for
/// every route.
fn portable_responses_seed() -> Value {
    without(
        responses_seed(),
        &[
            "/include",
            "/reasoning/summary",
            "/tools/1",
            "/input/1",
            "/input/0/content/1",
        ],
    )
}

/// The Messages seed less what only Anthropic serves and its image and document: translated
/// for every route.
fn portable_anthropic_seed() -> Value {
    without(
        anthropic_seed(),
        &[
            "/thinking",
            "/output_config",
            "/tools/1",
            "/messages/1/content/0",
            "/messages/0/content/2",
            "/messages/0/content/1",
        ],
    )
}

fn completions_seed() -> Value {
    json!({"model": "auto", "prompt": "Once upon a time", "max_tokens": 16, "stop": ["\n"],
           "temperature": 0.2, "stream": true, "stream_options": {"include_usage": true}, "n": 1,
           "user": "u"})
}

fn embeddings_seed() -> Value {
    json!({"model": "gpt", "input": ["one text", "another text"],
           "encoding_format": "float", "dimensions": 1536, "user": "u"})
}

/// A Responses API answer's stream events, as a provider sends them (read for usage when passed
/// through).
fn responses_event_seeds() -> Vec<(&'static str, Value)> {
    vec![
        (
            "response.created",
            json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}}),
        ),
        (
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi"}),
        ),
        (
            "response.completed",
            json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed",
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}],
            "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7, "input_tokens_details": {"cached_tokens": 1}}}}),
        ),
    ]
}

/// A chat request for an on-box model that forces a call of one of its tools, beside a JSON
/// answer's schema (each seed keeps one, as a request carries one grammar).
fn on_box_seeds() -> [Value; 2] {
    let tools = without(portable_chat_seed(), &["/response_format"]);
    let mut required = tools.clone();
    required["tool_choice"] = json!("required");
    let schema = without(portable_chat_seed(), &["/tools", "/tool_choice"]);
    [required, schema]
}

/// On a real on-box model (SmolLM2, whose template offers no tools, and Qwen2.5-Coder, whose
/// does): the request's fields read, the prompt written by the model's own chat template and
/// tokenised, and the grammar of a forced call or a JSON schema compiled. A template may refuse
/// the messages (a 400); nothing else may fail, and nothing may panic.
#[test]
fn on_box_prompts_and_grammars_never_panic() {
    let models = [
        switchyard::local::LocalModel::load(&smollm2_path(), None).expect("SmolLM2"),
        {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
            switchyard::local::LocalModel::load(
                &dir.join("qwen2.5-coder-0.5b-instruct.gguf"),
                Some(&dir.join("qwen2.5-tokenizer.json")),
            )
            .expect("Qwen2.5-Coder (scripts/fetch-models.sh --qwen)")
        },
    ];
    let mut m = Mutator::new(6);
    let mut compiled = 0;
    for model in &models {
        for _ in 0..rounds() / 10 {
            for seed in on_box_seeds() {
                let body = m.mutated(&seed);
                survives("the on-box reader", &body, || {
                    let Ok(req) = ChatRequest::parse(&body) else {
                        return;
                    };
                    let Ok(local) = switchyard::local::request::read(
                        &req,
                        model.capabilities(),
                        model.weights.vocab_size(),
                        256,
                    ) else {
                        return;
                    };
                    match model.chat_prompt(&local.messages, local.tools.as_deref()) {
                        Ok(_) | Err(switchyard::local::LocalError::TemplateRefused(_)) => {}
                        Err(e) => panic!("the chat template failed with {e}"),
                    }
                    if let Some(c) = &local.constraint {
                        let grammars = model.grammars().expect("the model's grammars");
                        if grammars.matcher(c).is_ok() {
                            compiled += 1;
                        }
                    }
                });
            }
        }
    }
    eprintln!("{compiled} grammars compiled");
    // The mutations reached the grammar compiler, not only the refusals before it.
    assert!(compiled > 10, "{compiled} grammars compiled");
}

/// Each dialect's request reader, then the chat chain on what it made.
#[test]
fn client_requests_never_panic_a_reader() {
    let mut m = Mutator::new(1);
    for _ in 0..rounds() {
        let body = m.mutated(&chat_seed());
        survives("the chat chain", &body, || chat_chain(&body));

        let body = m.mutated(&responses_seed());
        survives("responses::to_chat", &body, || {
            match responses::to_chat(&body) {
                Ok((chat, _)) => chat_chain(&chat),
                Err(e) => client_error("responses::to_chat", &body, &e),
            }
        });
        survives("responses::count_to_chat", &body, || {
            if let Ok((chat, _)) = responses::count_to_chat(&body) {
                chat_chain(&chat)
            }
        });
        survives("responses::compaction_to_chat", &body, || {
            if let Ok((chat, _)) = responses::compaction_to_chat(&body) {
                chat_chain(&chat)
            }
        });

        let body = m.mutated(&anthropic_seed());
        for counting in [false, true] {
            survives("anthropic::to_chat", &body, || {
                match anthropic::to_chat(&body, counting) {
                    Ok((chat, _)) => chat_chain(&chat),
                    Err(e) => client_error("anthropic::to_chat", &body, &e),
                }
            });
        }

        let body = m.mutated(&completions_seed());
        survives(
            "completions::to_chat",
            &body,
            || match completions::to_chat(&body) {
                Ok((chat, _)) => chat_chain(&chat),
                Err(e) => client_error("completions::to_chat", &body, &e),
            },
        );

        let body = m.mutated(&embeddings_seed());
        survives("embeddings", &body, || {
            match embeddings::to_chat(&body) {
                Ok((chat, _)) => chat_chain(&chat),
                Err(e) => client_error("embeddings::to_chat", &body, &e),
            }
            if let Err(e) = embeddings::read(&body) {
                client_error("embeddings::read", &body, &e);
            }
        });
    }
}

/// A passed-through body gets its `model` replaced and its usage read, whatever it holds.
#[test]
fn passed_through_bodies_never_panic_the_skimmer() {
    let mut m = Mutator::new(2);
    for _ in 0..rounds() {
        for seed in [
            anthropic_seed(),
            responses_seed(),
            completions_seed(),
            embeddings_seed(),
        ] {
            let body = m.mutated(&seed);
            survives("native::with_model", &body, || {
                if let Ok(out) = native::with_model(&body, "upstream-model", true) {
                    assert!(
                        serde_json::from_slice::<Value>(&out).is_ok(),
                        "with_model made a body that is not JSON"
                    );
                }
            });
        }
        for (dialect, seed) in [
            (Dialect::Anthropic, anthropic_answer_seed()),
            (
                Dialect::Responses,
                responses_event_seeds()[2].1["response"].clone(),
            ),
            (Dialect::Completions, completion_seed()),
            (
                Dialect::Embeddings,
                json!({"data": [], "usage": {"prompt_tokens": 3}}),
            ),
        ] {
            let body = m.mutated(&seed);
            survives("native::answer", &body, || {
                let _ = native::answer(dialect, &body);
            });
        }
        for (dialect, events) in [
            (
                Dialect::Anthropic,
                anthropic_event_seeds()
                    .into_iter()
                    .map(|e| (e["type"].as_str().unwrap_or("").to_string(), e))
                    .collect::<Vec<_>>(),
            ),
            (
                Dialect::Responses,
                responses_event_seeds()
                    .into_iter()
                    .map(|(n, e)| (n.to_string(), e))
                    .collect(),
            ),
            (
                Dialect::Completions,
                chunk_seeds()
                    .into_iter()
                    .map(|e| (String::new(), e))
                    .collect(),
            ),
        ] {
            let (at, mutated) = m.one_of(&events.iter().map(|e| e.1.clone()).collect::<Vec<_>>());
            survives("native::StreamReader", &mutated, || {
                let mut reader = native::StreamReader::new(dialect);
                for (i, (name, e)) in events.iter().enumerate() {
                    let data = if i == at {
                        mutated.clone()
                    } else {
                        e.to_string().into_bytes()
                    };
                    let name = (!name.is_empty()).then_some(name.as_bytes());
                    if reader.event(name, &data).is_err() {
                        break;
                    }
                }
            });
        }
    }
}

/// A provider's answer (JSON or stream) translated into each client's dialect.
#[test]
fn provider_answers_never_panic_a_translator() {
    let mut m = Mutator::new(3);
    let (_, responses_inbound) =
        responses::to_chat(&serde_json::to_vec(&responses_seed()).unwrap())
            .expect("the seed reads");
    let (_, completions_inbound) =
        completions::to_chat(&serde_json::to_vec(&completions_seed()).unwrap())
            .expect("the seed reads");
    for _ in 0..rounds() {
        let body = m.mutated(&completion_seed());
        survives("chat answer translators", &body, || {
            let _ = responses::from_completion(&body, &responses_inbound);
            let _ = anthropic::from_completion(&body, "auto");
            let _ = completions::from_completion(&body, &completions_inbound);
        });

        let body = m.mutated(&anthropic_answer_seed());
        survives("anthropic_upstream::to_completion", &body, || {
            if let Ok(chat) = anthropic_upstream::to_completion(&body, "claude") {
                let _ = responses::from_completion(&chat, &responses_inbound);
                let _ = anthropic::from_completion(&chat, "auto");
            }
        });

        let chunks = chunk_seeds();
        let (at, mutated) = m.one_of(&chunks);
        survives("chat stream translators", &mutated, || {
            let mut to_responses = responses::StreamTranslator::new(&responses_inbound);
            let mut to_anthropic = anthropic::StreamTranslator::new("auto", 5);
            let mut to_completions = completions::StreamTranslator::new(&completions_inbound);
            let mut out = bytes::BytesMut::new();
            for (i, c) in chunks.iter().enumerate() {
                let data = if i == at {
                    mutated.clone()
                } else {
                    c.to_string().into_bytes()
                };
                let _ = switchyard::api::chat_chunk::read(&data);
                to_responses.event(&data, &mut out);
                to_anthropic.event(&data, &mut out);
                to_completions.event(&data, &mut out);
            }
            to_responses.end(&mut out);
            to_anthropic.end(&mut out);
            to_completions.end(&mut out);
        });

        let events = anthropic_event_seeds();
        let (at, mutated) = m.one_of(&events);
        survives("StreamFromAnthropic", &mutated, || {
            let mut from = StreamFromAnthropic::new("claude");
            for (i, e) in events.iter().enumerate() {
                let data = if i == at {
                    mutated.clone()
                } else {
                    e.to_string().into_bytes()
                };
                let _ = from.event(&data);
            }
            let _ = from.take_prompt_usage();
        });
    }
}

/// The private-data scan over mutated text: any string, any characters.
#[test]
fn the_private_data_scan_reads_any_text() {
    let mut m = Mutator::new(4);
    let texts = [
        "card 4111 1111 1111 1111, iban GB82 WEST 1234 5698 7654 32, mail a.b@example.com",
        "call +44 20 7946 0958 or (415) 555-0100; ssn 123-45-6789; ip 192.168.1.20 or ::1",
        "key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 and AKIAIOSFODNN7EXAMPLE",
        "order 1234-5678, isbn 978-3-16-148410-0, v1.2.3, uuid 123e4567-e89b-12d3-a456-426614174000",
    ];
    for _ in 0..rounds() * 4 {
        let pick = m.index(texts.len());
        let text = m.text(texts[pick]);
        survives("pii::find", text.as_bytes(), || {
            let found = pii::find(&text);
            for f in &found {
                assert!(
                    text.get(f.range.clone()).is_some(),
                    "a match outside the text's characters in {text:?}"
                );
            }
            let mut p = Placeholders::default();
            let _ = p.redact(&text, Kinds::ALL);
        });
    }
    let mut obj: Map<String, Value> = Map::new();
    obj.insert("x".into(), json!(1));
    let _ = pii::request::scan(&obj);
}

/// A function making a valid body.
type Seed = fn() -> Value;

const ANTHROPIC_KEY: &str = "sk-ant-mutation-upstream";
const OPENAI_KEY: &str = "sk-openai-mutation-upstream";

/// A gateway whose tag picks the route: `claude` (Anthropic, Messages passed through), `gpt`
/// (OpenAI serving the Responses API, completions and embeddings as they came), `plain` (an
/// OpenAI-compatible model that gets chat only: every other dialect translated), `local` (the
/// box). The default route is `plain`.
async fn routes_of_every_kind(up: &FakeUpstream) -> TestGateway {
    let p = PolicyBuilder::new().local("local-echo").model(
        "claude",
        &[
            ("kind", "anthropic"),
            (
                "base_url",
                &quoted(&format!("http://{}/anthropic", up.addr)),
            ),
            ("api_key", &quoted("${ANTHROPIC_KEY}")),
            ("upstream_model", "claude-up"),
            ("retries", "{ max_retries: 0 }"),
        ],
    );
    let mut p = p;
    for (name, serves) in [("gpt", "true"), ("plain", "false")] {
        p = p.model(
            name,
            &[
                ("kind", "openai"),
                ("base_url", &quoted(&up.base("ok"))),
                ("api_key", &quoted("${OPENAI_KEY}")),
                ("upstream_model", "gpt-up"),
                ("responses", serves),
                ("completions", serves),
                ("embeddings", serves),
                ("retries", "{ max_retries: 0 }"),
            ],
        );
    }
    let policy = p
        .rule("claude", "{ tags: [claude] }", "claude", &[])
        .rule("gpt", "{ tags: [gpt] }", "gpt", &[])
        .rule("local", "{ tags: [local] }", "local-echo", &[])
        .default_route("plain", &[])
        .render();
    start_gateway(
        &policy,
        &[("ANTHROPIC_KEY", ANTHROPIC_KEY), ("OPENAI_KEY", OPENAI_KEY)],
    )
    .await
}

#[tokio::test]
async fn mutated_requests_are_answered_in_their_dialect() {
    let up = FakeUpstream::start().await;
    let gw = routes_of_every_kind(&up).await;
    let mut m = Mutator::new(5);
    let endpoints: [(&str, Seed); 10] = [
        ("/v1/chat/completions", chat_seed),
        ("/v1/chat/completions", portable_chat_seed),
        ("/v1/responses", responses_seed),
        ("/v1/responses", portable_responses_seed),
        ("/v1/messages", portable_anthropic_seed),
        ("/v1/responses/input_tokens", responses_seed),
        ("/v1/messages", anthropic_seed),
        ("/v1/messages/count_tokens", anthropic_seed),
        ("/v1/completions", completions_seed),
        ("/v1/embeddings", embeddings_seed),
    ];
    let post = |path: &str, body: Vec<u8>, tag: &'static str| {
        let url = format!("{}{path}", gw.url);
        async move {
            request(
                "POST",
                &url,
                body,
                &[
                    ("content-type", "application/json"),
                    ("anthropic-version", "2023-06-01"),
                    ("x-switchyard-tags", tag),
                ],
            )
            .await
        }
    };
    // Unmutated, the portable seeds are served on every route: their mutations reach the
    // translations and the engines, not only the refusals.
    for (path, seed) in [
        ("/v1/chat/completions", portable_chat_seed as Seed),
        ("/v1/responses", portable_responses_seed),
        ("/v1/messages", portable_anthropic_seed),
        ("/v1/embeddings", embeddings_seed),
    ] {
        for tag in ["claude", "gpt", "plain", "local"] {
            let r = post(path, serde_json::to_vec(&seed()).expect("JSON"), tag).await;
            assert_eq!(
                r.status,
                200,
                "{path} on {tag}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..rounds() / 30 {
        let tag = ["claude", "gpt", "plain", "local"][round % 4];
        for (path, seed) in &endpoints {
            let body = m.mutated(&seed());
            let r = post(path, body.clone(), tag).await;
            *statuses.entry(r.status.as_u16()).or_default() += 1;
            let shown = || {
                format!(
                    "{path} on the {tag} route answered {}:\n{}\nto:\n{}",
                    r.status,
                    String::from_utf8_lossy(&r.body),
                    String::from_utf8_lossy(&body)
                )
            };
            let text = String::from_utf8_lossy(&r.body);
            assert!(
                !text.contains(ANTHROPIC_KEY) && !text.contains(OPENAI_KEY),
                "a provider key in {}",
                shown()
            );
            assert!(
                r.status.is_success() || r.status.is_client_error(),
                "{}",
                shown()
            );
            if r.status.is_client_error() {
                let v: Value =
                    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{}", shown()));
                if path.starts_with("/v1/messages") {
                    assert_eq!(v["type"], "error", "{}", shown());
                    assert!(v["error"]["type"].is_string(), "{}", shown());
                    assert!(v["error"]["message"].is_string(), "{}", shown());
                } else {
                    assert!(v["error"]["message"].is_string(), "{}", shown());
                    assert!(v["error"]["type"].is_string(), "{}", shown());
                }
            } else {
                assert!(!r.body.is_empty(), "{}", shown());
            }
        }
    }
    eprintln!("statuses: {statuses:?}");
    // Both outcomes were reached: the mutations are neither all harmless nor all refused.
    assert!(statuses.get(&200).is_some_and(|n| *n > 10), "{statuses:?}");
    assert!(statuses.get(&400).is_some_and(|n| *n > 10), "{statuses:?}");
    let r = chat(&gw, ask("auto", "still there?"), &[]).await;
    assert_eq!(r.status, 200);
}

/// Mutated answers and streams from an OpenAI-compatible and an Anthropic upstream, read for
/// chat, Responses and Messages clients, streamed and not: each translated answer reaches its
/// client in its dialect (an object of its type, or a stream that ends with its dialect's last
/// event or an error event) or as a 502 in its dialect's error shape; an answer in the client's
/// own dialect passes as it came; and every request is settled exactly once.
#[tokio::test]
async fn mutated_answers_reach_the_client_in_its_dialect_and_are_settled_once() {
    let up = FakeUpstream::start().await;
    let mut p = PolicyBuilder::new();
    for (name, kind, behaviour) in [
        ("openai", "openai", "mutated"),
        ("claude", "anthropic", "anthropic-mutated"),
    ] {
        p = p.model(
            name,
            &[
                ("kind", kind),
                ("base_url", &quoted(&up.base(behaviour))),
                ("api_key", &quoted("${CLOUD_KEY}")),
                ("retries", "{ max_retries: 0 }"),
                ("circuit_breaker", "{ enabled: false }"),
            ],
        );
    }
    let policy = p
        .rule("claude", "{ tags: [claude] }", "claude", &[])
        .default_route("openai", &[])
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let clients: [(&str, Seed); 3] = [
        ("/v1/chat/completions", portable_chat_seed),
        ("/v1/responses", portable_responses_seed),
        ("/v1/messages", portable_anthropic_seed),
    ];
    let mut sent = 0;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..rounds() / 30 {
        for (path, seed) in &clients {
            let tag = if round % 2 == 0 { "claude" } else { "openai" };
            let stream = round % 4 < 2;
            let mut body = seed();
            body["stream"] = json!(stream);
            if !stream {
                if let Some(o) = body.as_object_mut() {
                    o.remove("stream_options");
                }
            }
            let r = request(
                "POST",
                &format!("{}{path}", gw.url),
                body.to_string(),
                &[
                    ("content-type", "application/json"),
                    ("anthropic-version", "2023-06-01"),
                    ("x-switchyard-tags", tag),
                ],
            )
            .await;
            sent += 1;
            let shown = || {
                format!(
                    "{path} (stream {stream}) on {tag} answered {}:\n{}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )
            };
            let anthropic_client = *path == "/v1/messages";
            if r.status != 200 {
                assert_eq!(r.status, 502, "{}", shown());
                let v: Value =
                    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{}", shown()));
                if anthropic_client {
                    assert_eq!(v["type"], "error", "{}", shown());
                } else {
                    assert!(v["error"]["message"].is_string(), "{}", shown());
                }
                *outcomes.entry("502".into()).or_default() += 1;
                continue;
            }
            // An answer in the client's own dialect goes to it as it came (only its usage is
            // read), as a proxy passes a body on: chat from the OpenAI-compatible model,
            // Messages from the Anthropic one.
            let passed_through = (*path == "/v1/chat/completions" && tag == "openai")
                || (anthropic_client && tag == "claude");
            if passed_through {
                assert!(!r.body.is_empty(), "{}", shown());
                *outcomes.entry("passed through".into()).or_default() += 1;
                continue;
            }
            if !stream {
                let v: Value =
                    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{}", shown()));
                let (field, want) = match *path {
                    "/v1/chat/completions" => ("object", "chat.completion"),
                    "/v1/responses" => ("object", "response"),
                    _ => ("type", "message"),
                };
                assert_eq!(v[field], want, "{}", shown());
                *outcomes.entry("answer".into()).or_default() += 1;
                continue;
            }
            assert!(
                String::from_utf8_lossy(&r.body).ends_with("\n\n"),
                "the stream ends mid-event: {}",
                shown()
            );
            let (name, data) = r.last_event();
            let ended = match *path {
                "/v1/chat/completions" => {
                    if data == "[DONE]" {
                        "done"
                    } else {
                        assert!(data.contains("\"error\""), "{}", shown());
                        "error event"
                    }
                }
                "/v1/responses" => {
                    let kind = serde_json::from_str::<Value>(&data)
                        .unwrap_or_else(|_| panic!("{}", shown()))["type"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    assert!(
                        matches!(
                            kind.as_str(),
                            "response.completed"
                                | "response.incomplete"
                                | "response.failed"
                                | "error"
                        ),
                        "{}",
                        shown()
                    );
                    if kind == "error" || kind == "response.failed" {
                        "error event"
                    } else {
                        "done"
                    }
                }
                _ => {
                    assert!(name == "message_stop" || name == "error", "{}", shown());
                    if name == "error" {
                        "error event"
                    } else {
                        "done"
                    }
                }
            };
            *outcomes.entry(format!("stream {ended}")).or_default() += 1;
        }
    }
    eprintln!("outcomes: {outcomes:?}");
    // Each request was settled once: counted in the requests metric, however it ended.
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let text = metrics_text(&gw.url).await;
        let counted: f64 = text
            .lines()
            .filter(|l| l.starts_with("switchyard_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if counted == sent as f64 {
            break;
        }
        assert!(
            counted < sent as f64 && tokio::time::Instant::now() < deadline,
            "{counted} requests counted for {sent} sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The mutations reached both outcomes: answers read, and answers refused as broken.
    assert!(outcomes.get("502").is_some_and(|n| *n > 0), "{outcomes:?}");
    assert!(
        outcomes.get("answer").is_some_and(|n| *n > 0),
        "{outcomes:?}"
    );
}
