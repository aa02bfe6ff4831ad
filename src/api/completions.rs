//! OpenAI's legacy completions (`POST /v1/completions`: a prompt in, text out), translated to
//! and from the gateway's one internal request: the prompt becomes the one user message of a
//! chat request marked [`raw_prompt`](super::ChatRequest::raw_prompt), which an on-box model
//! continues as it is (no chat template) and a cloud model answers as a chat. Errors keep
//! OpenAI's shape. Source: OpenAI's completions API reference (`text_completion` objects and
//! their stream chunks).

use super::chat_chunk::ChatEvent;
use super::dialect::{self, bad};
use super::ApiError;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

/// What the translation keeps for the way back.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub model: String,
    pub stream: bool,
}

/// Translates a completions request body into a chat request body (one user message, the
/// prompt). `max_tokens` defaults to 16, as OpenAI's does.
///
/// Errors: a 400 naming the field for what cannot be served: several prompts or token-id
/// prompts, `n` or `best_of` above 1, `echo`, `logprobs`, `suffix`, `logit_bias`.
pub fn to_chat(body: &[u8]) -> Result<(Vec<u8>, Inbound), ApiError> {
    let obj = dialect::request_object(body)?;
    let model = dialect::model(&obj)?;
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(_)) => {
            return Err(bad(
                "only one prompt, as a string, is supported (not several, nor token ids)",
                "prompt",
            ))
        }
        _ => return Err(bad("`prompt` is required and must be a string", "prompt")),
    };
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert(
        "messages".into(),
        json!([{"role": "user", "content": prompt}]),
    );
    let mut stream = false;
    for (key, value) in &obj {
        match key.as_str() {
            "model" | "prompt" => {}
            "max_tokens" => {
                out.insert("max_tokens".into(), value.clone());
            }
            "temperature" | "top_p" | "stop" | "user" | "seed" | "presence_penalty"
            | "frequency_penalty" | "stream_options" => {
                out.insert(key.clone(), value.clone());
            }
            "stream" => {
                stream = value
                    .as_bool()
                    .ok_or_else(|| bad("`stream` must be a boolean", "stream"))?;
                out.insert("stream".into(), json!(stream));
            }
            "n" | "best_of" if value.is_null() || value.as_u64() == Some(1) => {}
            "echo" if value.is_null() || *value == Value::Bool(false) => {}
            "logprobs" | "suffix" | "logit_bias" if value.is_null() => {}
            "n" | "best_of" | "echo" | "logprobs" | "suffix" | "logit_bias" => {
                return Err(bad(
                    format!("`{key}` is not supported on legacy completions"),
                    key,
                ))
            }
            other => {
                return Err(bad(
                    format!("`{other}` is not supported here (docs/api.md lists what is)"),
                    other,
                ))
            }
        }
    }
    if !out.contains_key("max_tokens") {
        out.insert("max_tokens".into(), json!(16));
    }
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|_| ApiError::Internal)?;
    Ok((
        bytes,
        Inbound {
            model: model.to_string(),
            stream,
        },
    ))
}

fn completion_id(id: Option<&str>) -> String {
    let id = id.unwrap_or("");
    format!("cmpl-{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

/// Translates a chat completion body into a `text_completion`.
pub fn from_completion(body: &[u8], inbound: &Inbound) -> Result<Bytes, ApiError> {
    let (v, choice) = dialect::chat_answer(body)?;
    let out = json!({
        "id": completion_id(v.get("id").and_then(Value::as_str)),
        "object": "text_completion",
        "created": v.get("created").cloned().unwrap_or(json!(0)),
        "model": inbound.model,
        "choices": [{"text": choice.pointer("/message/content").and_then(Value::as_str).unwrap_or(""),
            "index": 0, "logprobs": Value::Null, "finish_reason": choice.get("finish_reason").cloned().unwrap_or(Value::Null)}],
        "usage": v.get("usage").cloned().unwrap_or(Value::Null),
    });
    Ok(Bytes::from(out.to_string()))
}

/// Turns chat chunks into `text_completion` chunks, `data: [DONE]` at the end as OpenAI sends.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    ended: bool,
}

impl StreamTranslator {
    pub fn new(inbound: &Inbound) -> StreamTranslator {
        StreamTranslator {
            model: inbound.model.clone(),
            ended: false,
        }
    }

    /// Takes one chat stream event's data (a chunk, an error object or `[DONE]`).
    pub fn event(&mut self, data: &[u8], out: &mut BytesMut) {
        if self.ended {
            return;
        }
        let payload = match super::chat_chunk::read(data) {
            None => return,
            Some(ChatEvent::Done) => return self.end(out),
            Some(ChatEvent::Error(message)) => {
                self.ended = true;
                json!({"error": {"message": message, "type": "server_error", "param": Value::Null, "code": Value::Null}})
            }
            Some(ChatEvent::Chunk(c)) => {
                let c = *c;
                let choices = if c.has_choice {
                    json!([{"text": c.text.unwrap_or_default(), "index": 0, "logprobs": Value::Null,
                        "finish_reason": c.finish}])
                } else {
                    json!([])
                };
                let mut chunk = json!({"id": completion_id(c.id.as_deref()), "object": "text_completion",
                    "created": c.created.unwrap_or(json!(0)), "model": self.model, "choices": choices});
                if let Some(u) = c.usage {
                    chunk["usage"] = u;
                }
                chunk
            }
        };
        super::sse::write_event(out, payload.to_string().as_bytes());
    }

    pub fn end(&mut self, out: &mut BytesMut) {
        if !self.ended {
            out.extend_from_slice(super::sse::DONE);
            self.ended = true;
        }
    }

    pub fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_becomes_one_user_message_and_comes_back_as_text() {
        let (b, inbound) =
            to_chat(br#"{"model":"local","prompt":"Once upon a time","stop":["\n"],"n":1}"#)
                .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v["messages"],
            json!([{"role": "user", "content": "Once upon a time"}])
        );
        assert_eq!(v["max_tokens"], 16);
        assert_eq!(v["stop"], json!(["\n"]));
        let answer = json!({"id": "chatcmpl-7", "created": 5, "choices": [{"message": {"content": " there was"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}});
        let out: Value = serde_json::from_slice(
            &from_completion(answer.to_string().as_bytes(), &inbound).unwrap(),
        )
        .unwrap();
        assert_eq!(out["object"], "text_completion");
        assert_eq!(out["id"], "cmpl-7");
        assert_eq!(out["choices"][0]["text"], " there was");
        assert_eq!(out["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn what_cannot_be_served_is_refused_by_name() {
        for (body, param) in [
            (r#"{"model":"m","prompt":["a","b"]}"#, "prompt"),
            (r#"{"model":"m","prompt":[[1,2]]}"#, "prompt"),
            (r#"{"model":"m","prompt":"x","n":2}"#, "n"),
            (r#"{"model":"m","prompt":"x","echo":true}"#, "echo"),
            (r#"{"model":"m","prompt":"x","logprobs":2}"#, "logprobs"),
            (r#"{"model":"m","prompt":"x","suffix":"y"}"#, "suffix"),
            (r#"{"model":"m"}"#, "prompt"),
        ] {
            let e = to_chat(body.as_bytes()).expect_err(body);
            assert_eq!(e.body_json()["error"]["param"], param, "{body}");
        }
    }
}
