//! OpenAI's embeddings (`POST /v1/embeddings`: text in, vectors out). The request is read into
//! the gateway's one internal request, so the policy, the private-data scan, the client limits,
//! rate limits and budgets see it as they see a chat request, and it is passed on as it came
//! (only `model` replaced) to an OpenAI-compatible model that declares `embeddings: true`; only
//! an embeddings API writes the answer, so nothing translates it back. Source: OpenAI's
//! embeddings API reference (the request's `input`, `model`, `encoding_format`, `dimensions`
//! and `user`; the answer, a `list` of `embedding` objects with `usage.prompt_tokens`).

use super::dialect::{self, bad, Renamed};
use super::ApiError;
use serde_json::{json, Map, Value};

/// Most inputs in one request (OpenAI's limit: "2048 dimensions or less" in its reference is
/// the array's length).
pub const MAX_INPUTS: usize = 2048;

/// What an embeddings request asks for, as an on-box encoder reads it ([`read`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// The inputs' strings, in order; empty when the input is token ids.
    pub texts: Vec<String>,
    /// The input is token ids (of the client's tokenizer, not the model's).
    pub token_ids: bool,
    /// `encoding_format: "base64"`: each vector as its little-endian f32 bytes in base64.
    pub base64: bool,
    /// `dimensions`, when asked.
    pub dimensions: Option<u64>,
}

/// Reads an embeddings request body; the errors of [`to_chat`].
pub fn read(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    checked(&dialect::request_object(body)?)
}

/// The request object's fields, checked.
fn checked(obj: &Map<String, Value>) -> Result<EmbeddingsRequest, ApiError> {
    dialect::model(obj)?;
    let texts = input_texts(obj.get("input"))?;
    let base64 = match obj.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" || f == "base64" => f == "base64",
        Some(_) => {
            return Err(bad(
                "`encoding_format` must be \"float\" or \"base64\"",
                "encoding_format",
            ))
        }
    };
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(d) => match d.as_u64().filter(|d| *d > 0) {
            Some(d) => Some(d),
            None => return Err(bad("`dimensions` must be a positive integer", "dimensions")),
        },
    };
    if !matches!(obj.get("user"), None | Some(Value::Null | Value::String(_))) {
        return Err(bad("`user` must be a string", "user"));
    }
    Ok(EmbeddingsRequest {
        token_ids: texts.is_empty(),
        texts: texts.into_iter().map(str::to_string).collect(),
        base64,
        dimensions,
    })
}

/// The answer to an embeddings request: a `list` of `embedding` objects (`index` in input
/// order, the vector as floats or, with `base64`, its little-endian f32 bytes in base64, as
/// OpenAI's API writes it), `model`, and `usage` (`prompt_tokens` = `total_tokens` =
/// `prompt_tokens`).
pub fn list_body(model: &str, vectors: &[Vec<f32>], base64: bool, prompt_tokens: u64) -> Vec<u8> {
    use base64::Engine as _;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let body = json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}});
    body.to_string().into_bytes()
}

/// What [`to_chat`] kept of an embeddings request besides the chat body.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// Where the chat body's fields came from (`messages` is the request's `input`), for errors.
    pub renamed: Renamed,
    /// How many token ids the input holds (0 for strings): they carry no text for the chat
    /// body, so the gateway counts them one token each in its prompt estimate
    /// ([`crate::api::ChatRequest::token_ids`]).
    pub token_ids: u64,
}

/// Reads an embeddings request into a chat request body: one user message whose text parts
/// are the input's strings, in order (a token-id input has no text: its message is empty and
/// [`Inbound::token_ids`] counts its tokens). The request always needs the `embeddings`
/// capability, named by `input`. Fields besides those checked here (a provider's own, such
/// as `input_type`) go on as they came.
///
/// Errors: a 400 naming the field: `model` missing or not a string; `input` missing, empty,
/// of more than [`MAX_INPUTS`] items, or not a string, an array of strings, an array of token
/// ids or an array of arrays of token ids (an empty string or token list counts as empty);
/// `encoding_format` not `float` or `base64`; `dimensions` not a positive integer; `user` not
/// a string.
pub fn to_chat(body: &[u8]) -> Result<(Vec<u8>, Inbound), ApiError> {
    let obj = dialect::request_object(body)?;
    let request = checked(&obj)?;
    let mut out = Map::new();
    out.insert("model".into(), json!(dialect::model(&obj)?));
    let content: Value = if request.texts.is_empty() {
        json!("")
    } else {
        request
            .texts
            .into_iter()
            .map(|t| json!({"type": "text", "text": t}))
            .collect()
    };
    out.insert(
        "messages".into(),
        json!([{"role": "user", "content": content}]),
    );
    if let Some(user) = obj.get("user").filter(|u| u.is_string()) {
        out.insert("user".into(), user.clone());
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|_| ApiError::Internal)?;
    let token_ids = if request.token_ids {
        token_count(obj.get("input"))
    } else {
        0
    };
    Ok((
        body,
        Inbound {
            renamed: dialect::renamed(&[("messages", "input")]),
            token_ids,
        },
    ))
}

/// The token ids in an `input` of token ids or of token-id arrays ([`input_texts`] checked
/// its shape); 0 for anything else.
fn token_count(input: Option<&Value>) -> u64 {
    match input {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Array(tokens) => tokens.len() as u64,
                Value::Number(_) => 1,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// The strings of `input` (none for token ids), after checking its shape.
fn input_texts(input: Option<&Value>) -> Result<Vec<&str>, ApiError> {
    const SHAPE: &str = "`input` must be a string, an array of strings, an array of token ids or an array of arrays of token ids";
    let is_token = |v: &Value| v.as_u64().is_some_and(|t| t <= u64::from(u32::MAX));
    match input {
        Some(Value::String(s)) if s.is_empty() => {
            Err(bad("`input` must not be an empty string", "input"))
        }
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(bad("`input` must not be an empty array", "input"));
            }
            if items.len() > MAX_INPUTS {
                return Err(bad(
                    format!(
                        "`input` has {} items; at most {MAX_INPUTS} are allowed",
                        items.len()
                    ),
                    "input",
                ));
            }
            if items.iter().all(is_token) {
                return Ok(Vec::new());
            }
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let param = format!("input[{i}]");
                match item {
                    Value::String(s) if s.is_empty() => {
                        return Err(bad(format!("`{param}` must not be empty"), &param))
                    }
                    Value::String(s) => texts.push(s.as_str()),
                    Value::Array(tokens) if !tokens.is_empty() && tokens.iter().all(is_token) => {}
                    Value::Array(tokens) if tokens.is_empty() => {
                        return Err(bad(format!("`{param}` must not be empty"), &param))
                    }
                    _ => return Err(bad(SHAPE, &param)),
                }
            }
            let strings = texts.len();
            if strings != 0 && strings != items.len() {
                return Err(bad(
                    "`input` must hold strings or token lists, not both",
                    "input",
                ));
            }
            Ok(texts)
        }
        Some(Value::Null) | None => Err(bad("`input` is required", "input")),
        Some(_) => Err(bad(SHAPE, "input")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(v: Value) -> Value {
        match to_chat(v.to_string().as_bytes()) {
            Ok(_) => Value::Null,
            Err(e) => e.body_json()["error"]["param"].clone(),
        }
    }

    #[test]
    fn every_input_string_is_a_text_part_of_one_user_message() {
        let (body, inbound) = to_chat(
            json!({"model": "text-embedding-3-small", "input": ["one", "two"],
                "encoding_format": "base64", "dimensions": 256, "user": "u-1", "input_type": "query"})
            .to_string()
            .as_bytes(),
        )
        .expect("read");
        let chat: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            chat,
            json!({"model": "text-embedding-3-small", "user": "u-1", "messages": [{"role": "user",
                "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}]})
        );
        assert_eq!(inbound.renamed[0].1, "input");
        assert_eq!(inbound.token_ids, 0);
        let (body, inbound) =
            to_chat(br#"{"model": "m", "input": [[1, 2], [3]]}"#).expect("tokens");
        let chat: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(chat["messages"][0]["content"], "");
        assert_eq!(inbound.token_ids, 3, "the ids are counted for the estimate");
        let (_, inbound) = to_chat(br#"{"model": "m", "input": [5, 6, 7, 8]}"#).expect("one list");
        assert_eq!(inbound.token_ids, 4);
        let (body, _) = to_chat(br#"{"model": "m", "input": "Hello"}"#).expect("one string");
        let chat: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(chat["messages"][0]["content"][0]["text"], "Hello");
    }

    #[test]
    fn a_malformed_request_is_a_400_naming_its_field() {
        for (request, named) in [
            (json!({"input": "x"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": ""}), "input"),
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": 7.5}), "input"),
            (json!({"model": "m", "input": ["a", ""]}), "input[1]"),
            (
                json!({"model": "m", "input": ["a", {"text": "b"}]}),
                "input[1]",
            ),
            (json!({"model": "m", "input": [[1], []]}), "input[1]"),
            (json!({"model": "m", "input": [[1], [-2]]}), "input[1]"),
            (json!({"model": "m", "input": ["a", [1]]}), "input"),
            (
                json!({"model": "m", "input": vec!["a"; MAX_INPUTS + 1]}),
                "input",
            ),
            (
                json!({"model": "m", "input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": 0}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": "64"}),
                "dimensions",
            ),
            (json!({"model": "m", "input": "x", "user": 1}), "user"),
        ] {
            assert_eq!(param(request.clone()), json!(named), "{request}");
        }
        assert_eq!(
            param(json!({"model": "m", "input": vec!["a"; MAX_INPUTS]})),
            Value::Null
        );
        assert_eq!(
            param(json!({"model": "m", "input": [1, 2, 3]})),
            Value::Null
        );
    }
}
