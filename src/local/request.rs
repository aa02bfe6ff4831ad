//! The OpenAI chat completion fields the on-box engine honours, read and validated into one
//! [`LocalRequest`]: sampling (`temperature`, `top_p`, `seed`, `presence_penalty`,
//! `frequency_penalty`, `logit_bias`), `stop`, `max_tokens`, `n`, `logprobs` and
//! `top_logprobs`, `response_format` (JSON object or schema, enforced by a grammar), `tools`
//! with `tool_choice`, and the messages with their tool calls and tool results as the chat
//! template reads them. A value out of OpenAI's range is a 400 naming the field.

use super::generate::Params;
use super::grammar::Constraint;
use super::sampling::SamplingParams;
use super::template::{role_name, TemplateMessage};
use crate::api::{Capabilities, ChatRequest, Role};
use crate::engines::EngineError;
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most choices (`n`) one on-box request may ask for: each decodes beside the others.
pub const MAX_N: usize = 8;

/// The most alternatives `top_logprobs` may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What the on-box engine does for one request.
#[derive(Debug, Clone)]
pub struct LocalRequest {
    pub params: Params,
    /// Choices to generate (`n`).
    pub n: usize,
    /// The conversation, as the chat template reads it.
    pub messages: Vec<TemplateMessage>,
    /// The tools offered to the model (OpenAI's `tools` entries), unless `tool_choice` is
    /// `none`.
    pub tools: Option<Vec<Value>>,
    /// The grammar the output must match: a forced tool call or a JSON response format.
    pub constraint: Option<Constraint>,
    /// Whether `logprobs` were asked for (`params.sampling.logprobs` says how many
    /// alternatives).
    pub logprobs: bool,
}

impl LocalRequest {
    /// The names of the functions the answer is read for calls of, when tools are offered.
    pub fn tool_names(&self) -> Option<Vec<String>> {
        self.tools.as_ref().map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("function")?.get("name")?.as_str())
                .map(str::to_string)
                .collect()
        })
    }
}

fn invalid(message: impl Into<String>, param: &'static str) -> EngineError {
    EngineError::Invalid {
        message: message.into(),
        param,
    }
}

/// A number field within `[lo, hi]`, or `default` when absent or null.
fn number(
    body: &Map<String, Value>,
    name: &'static str,
    lo: f64,
    hi: f64,
    default: f64,
) -> Result<f64, EngineError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(x),
            _ => Err(invalid(
                format!("`{name}` must be between {lo} and {hi}, got {n}"),
                name,
            )),
        },
        Some(_) => Err(invalid(format!("`{name}` must be a number"), name)),
    }
}

/// Reads `req` for an on-box model that can do `capabilities`, has `vocab` tokens and answers
/// at most `max_output` tokens.
///
/// Errors: a need the model lacks, an unreadable content part, or a field out of range (all
/// 400s naming the field).
pub fn read(
    req: &ChatRequest,
    capabilities: Capabilities,
    vocab: usize,
    max_output: usize,
) -> Result<LocalRequest, EngineError> {
    // Routing never sends a request here that needs what this model lacks; a request that
    // still does (a custom dispatch, a test) is refused, never answered without it.
    if let Some(c) = req.needs.first_missing(capabilities) {
        return Err(invalid(
            format!("the on-box model cannot serve requests that need `{c}`"),
            c.param(),
        ));
    }
    if let Some(part) = &req.unknown_part {
        return Err(invalid(
            format!(
                "`{}` is a content part of type `{}`, which the on-box model cannot read (it reads `text` parts)",
                part.param, part.kind
            ),
            "messages",
        ));
    }
    let body = req.body();
    let seed = match body.get("seed") {
        None | Some(Value::Null) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u,
            (None, Some(i)) => i as u64,
            _ => {
                return Err(invalid(
                    format!("`seed` must be an integer, got {n}"),
                    "seed",
                ))
            }
        },
        Some(_) => return Err(invalid("`seed` must be an integer", "seed")),
    };
    let stop = match body.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    };
    if stop.len() > 4 {
        return Err(invalid("`stop` takes at most 4 sequences", "stop"));
    }
    let ignore_eos = match body.get("ignore_eos") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`ignore_eos` must be a boolean", "ignore_eos")),
    };
    let logprobs = match body.get("logprobs") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`logprobs` must be a boolean", "logprobs")),
    };
    let top = match body.get("top_logprobs") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(k) if k as usize <= MAX_TOP_LOGPROBS => k as usize,
            _ => {
                return Err(invalid(
                    format!(
                        "`top_logprobs` must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {n}"
                    ),
                    "top_logprobs",
                ))
            }
        },
        Some(_) => return Err(invalid("`top_logprobs` must be an integer", "top_logprobs")),
    };
    if top > 0 && !logprobs {
        return Err(invalid(
            "`top_logprobs` needs `logprobs: true`",
            "top_logprobs",
        ));
    }
    let n = match body.get("n") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(v)) => match v.as_u64() {
            Some(k) if (1..=MAX_N as u64).contains(&k) => k as usize,
            _ => {
                return Err(invalid(
                    format!(
                        "`n` must be an integer from 1 to {MAX_N} on the on-box model, got {v}"
                    ),
                    "n",
                ))
            }
        },
        Some(_) => return Err(invalid("`n` must be an integer", "n")),
    };
    let sampling = SamplingParams {
        temperature: number(&body, "temperature", 0.0, 2.0, 1.0)?,
        top_p: number(&body, "top_p", 0.0, 1.0, 1.0)?,
        presence_penalty: number(&body, "presence_penalty", -2.0, 2.0, 0.0)? as f32,
        frequency_penalty: number(&body, "frequency_penalty", -2.0, 2.0, 0.0)? as f32,
        logit_bias: logit_bias(body.get("logit_bias"), vocab)?,
        logprobs: logprobs.then_some(top),
    };
    let (tools, forced) = tools(&body)?;
    let constraint = match forced {
        Some(functions) => Some(Constraint::ToolCall(functions)),
        None => response_format(body.get("response_format"))?,
    };
    let max = max_output.max(1);
    Ok(LocalRequest {
        params: Params {
            max_tokens: req.max_tokens.map_or(max, |m| (m as usize).min(max)),
            sampling,
            seed,
            stop,
            ignore_eos,
        },
        n,
        messages: messages(&body),
        tools,
        constraint,
        logprobs,
    })
}

/// `logit_bias`: token ids (as strings) to biases from -100 to 100.
fn logit_bias(v: Option<&Value>, vocab: usize) -> Result<Vec<(u32, f32)>, EngineError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(invalid(
                "`logit_bias` must be an object of token ids to biases",
                "logit_bias",
            ))
        }
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, b) in map {
        let token = k
            .parse::<u32>()
            .ok()
            .filter(|&t| (t as usize) < vocab)
            .ok_or_else(|| {
                invalid(
                    format!(
                        "`logit_bias` key `{k}` is not a token id of this model (0 to {})",
                        vocab.saturating_sub(1)
                    ),
                    "logit_bias",
                )
            })?;
        let bias = b
            .as_f64()
            .filter(|x| (-100.0..=100.0).contains(x))
            .ok_or_else(|| {
                invalid(
                    format!(
                        "`logit_bias` values must be numbers from -100 to 100, got {b} for `{k}`"
                    ),
                    "logit_bias",
                )
            })?;
        out.push((token, bias as f32));
    }
    Ok(out)
}

/// `response_format`: text (no constraint), a JSON object, or a JSON schema.
fn response_format(v: Option<&Value>) -> Result<Option<Constraint>, EngineError> {
    let Some(Value::Object(f)) = v else {
        return Ok(None);
    };
    match f.get("type").and_then(Value::as_str) {
        Some("json_object") => Ok(Some(Constraint::JsonObject)),
        Some("json_schema") => {
            let schema = f
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .cloned()
                .unwrap_or(json!({}));
            if !schema.is_object() && !schema.is_boolean() {
                return Err(invalid(
                    "`response_format.json_schema.schema` must be a JSON schema object",
                    "response_format",
                ));
            }
            Ok(Some(Constraint::JsonSchema(schema)))
        }
        _ => Ok(None),
    }
}

/// The `tools` offered (unless `tool_choice` is `none`), and the functions one of which must
/// be called when `tool_choice` is `required` or names one.
#[allow(clippy::type_complexity)]
fn tools(
    body: &Map<String, Value>,
) -> Result<(Option<Vec<Value>>, Option<Vec<(String, Value)>>), EngineError> {
    let mut list: Vec<Value> = match body.get("tools") {
        Some(Value::Array(a)) => a.clone(),
        _ => vec![],
    };
    // The legacy `functions` list, as tools.
    if let Some(Value::Array(fs)) = body.get("functions") {
        list.extend(
            fs.iter()
                .map(|f| json!({"type": "function", "function": f})),
        );
    }
    let mut functions = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let f = t.get("function");
        let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
        match (t.get("type").and_then(Value::as_str), name) {
            (Some("function"), Some(name)) if !name.is_empty() => {
                let params = f
                    .and_then(|f| f.get("parameters"))
                    .cloned()
                    .unwrap_or(json!({"type": "object", "properties": {}}));
                functions.push((name.to_string(), params));
            }
            _ => {
                return Err(invalid(
                    format!("`tools[{i}]` must be `{{\"type\": \"function\", \"function\": {{\"name\": ...}}}}` (the on-box model calls functions only)"),
                    "tools",
                ))
            }
        }
    }
    let choice = body
        .get("tool_choice")
        .or_else(|| body.get("function_call"));
    if functions.is_empty() {
        return match choice {
            None | Some(Value::Null) => Ok((None, None)),
            Some(Value::String(s)) if s == "none" || s == "auto" => Ok((None, None)),
            Some(_) => Err(invalid("`tool_choice` needs `tools`", "tool_choice")),
        };
    }
    let forced = match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok((None, None)),
            "auto" => None,
            "required" => Some(functions.clone()),
            other => {
                return Err(invalid(
                    format!(
                    "`tool_choice` must be `none`, `auto`, `required` or a function, got `{other}`"
                ),
                    "tool_choice",
                ))
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(f) = functions.iter().find(|(n, _)| n == name) else {
                return Err(invalid(
                    format!("`tool_choice` names function `{name}`, which `tools` does not define"),
                    "tool_choice",
                ));
            };
            Some(vec![f.clone()])
        }
        Some(_) => {
            return Err(invalid(
                "`tool_choice` must be a string or an object",
                "tool_choice",
            ))
        }
    };
    Ok((Some(list), forced))
}

/// The messages as the chat template reads them: an assistant's tool calls with their
/// arguments as objects (templates write them with `tojson`), a tool result with the id it
/// answers.
fn messages(body: &Map<String, Value>) -> Vec<TemplateMessage> {
    let Some(Value::Array(list)) = body.get("messages") else {
        return vec![];
    };
    list.iter()
        .filter_map(|m| {
            let role = Role::parse(m.get("role")?.as_str()?)?;
            let tool_calls = m.get("tool_calls").and_then(Value::as_array).map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        let f = c.get("function").cloned().unwrap_or(json!({}));
                        let args = match f.get("arguments") {
                            Some(Value::String(s)) => {
                                serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
                            }
                            Some(v) => v.clone(),
                            None => json!({}),
                        };
                        json!({"id": c.get("id"), "type": "function",
                               "function": {"name": f.get("name"), "arguments": args}})
                    })
                    .collect()
            });
            Some(TemplateMessage {
                role: role_name(role),
                content: crate::api::content_text(m.get("content")),
                tool_calls,
                tool_call_id: m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                name: m.get("name").and_then(Value::as_str).map(str::to_string),
            })
        })
        .collect()
}
