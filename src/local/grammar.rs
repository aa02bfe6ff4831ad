//! Constrained decoding with llguidance (JSON schemas and Lark grammars, masked token by token
//! over a trie of the model's vocabulary; see docs/local-model.md for why this library). A
//! model's [`Grammars`] holds its token trie and llguidance's parser factory, built on the first
//! constrained request; each generation gets a [`Matcher`] that says which tokens may come next
//! and follows the tokens chosen.

use super::LocalError;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{self, TokEnv, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use std::sync::Arc;
use tokenizers::Tokenizer;

/// How JSON is written under a constraint: one space after `,` and `:`, no other whitespace (a
/// small model allowed free whitespace can spend its whole budget on newlines).
fn json_options() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// What a generation's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A value valid under this JSON schema (`response_format` `json_schema`).
    JsonSchema(Value),
    /// One call of one of these functions (name, parameters schema), in the Hermes/Qwen syntax
    /// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`: a forced tool call.
    ToolCall(Vec<(String, Value)>),
}

impl Constraint {
    /// The request field that asks for it (the `param` of its errors).
    pub fn param(&self) -> &'static str {
        match self {
            Constraint::ToolCall(_) => "tools",
            _ => "response_format",
        }
    }

    /// The llguidance grammar of the constraint.
    fn grammar(&self) -> TopLevelGrammar {
        match self {
            Constraint::JsonObject => TopLevelGrammar::from_json_schema(
                json!({"type": "object", "x-guidance": json_options()}),
            ),
            Constraint::JsonSchema(schema) => {
                let mut schema = schema.clone();
                if let Value::Object(m) = &mut schema {
                    m.entry("x-guidance").or_insert_with(json_options);
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Constraint::ToolCall(functions) => {
                let calls: Vec<Value> = functions
                    .iter()
                    .map(|(name, params)| {
                        json!({"type": "object",
                               "properties": {"name": {"const": name}, "arguments": params},
                               "required": ["name", "arguments"],
                               "additionalProperties": false})
                    })
                    .collect();
                let mut schema = json!({"anyOf": calls});
                schema["x-guidance"] = json_options();
                TopLevelGrammar::from_lark(format!(
                    "start: \"<tool_call>\\n\" call \"\\n</tool_call>\"\ncall: %json {schema}\n"
                ))
            }
        }
    }
}

/// The token environment llguidance needs: the vocabulary as bytes in a trie, and the tokenizer
/// for text the grammar forces.
struct TokenEnv {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for TokenEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<toktrie::TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |s| {
            self.tokenizer
                .encode(s, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }
}

/// A model's grammar compiler.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    /// Builds the token trie of `tokenizer` for a model with `vocab` logits, ending with any of
    /// `end_tokens`.
    ///
    /// Errors: a tokenizer whose token bytes cannot be read (neither byte-level BPE nor byte
    /// fallback), or an inconsistent vocabulary.
    pub fn new(
        tokenizer: &Tokenizer,
        vocab: usize,
        end_tokens: &[u32],
    ) -> Result<Self, LocalError> {
        let err = |e: String| LocalError::Tokenizer(format!("constrained decoding: {e}"));
        let doc: Value = tokenizer
            .to_string(false)
            .map_err(|e| err(e.to_string()))
            .and_then(|s| serde_json::from_str(&s).map_err(|e| err(e.to_string())))?;
        let mut words =
            llguidance::token_bytes_from_tokenizer_json(&doc).map_err(|e| err(e.to_string()))?;
        if words.len() > vocab {
            return Err(err(format!(
                "the tokenizer has {} tokens, the model {vocab}",
                words.len()
            )));
        }
        // Logits past the tokenizer's vocabulary (padding) are tokens no grammar allows.
        while words.len() < vocab {
            let mut name = format!(".<[{}]>", words.len()).into_bytes();
            name[0] = TokTrie::SPECIAL_TOKEN_MARKER;
            words.push(name);
        }
        let eos = end_tokens.first().copied().unwrap_or(0);
        let mut trie = TokTrie::from(&toktrie::TokRxInfo::new(vocab as u32, eos), &words);
        if end_tokens.len() > 1 {
            trie = trie.with_eos_tokens(end_tokens);
        }
        let env: TokEnv = Arc::new(TokenEnv {
            trie,
            tokenizer: tokenizer.clone(),
        });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| err(e.to_string()))?;
        factory.quiet();
        Ok(Grammars { factory })
    }

    /// The bytes of `token` (a special token's text without llguidance's marker byte).
    pub fn token_bytes(&self, token: u32) -> Vec<u8> {
        let bytes = self.factory.tok_env().tok_trie().token(token);
        match bytes.split_first() {
            Some((&TokTrie::SPECIAL_TOKEN_MARKER, rest)) => rest.to_vec(),
            _ => bytes.to_vec(),
        }
    }

    /// A matcher for `constraint`, at the start of the output.
    ///
    /// Errors: a grammar llguidance cannot enforce, with its message (for a schema, the
    /// keywords it does not implement, e.g. `Unimplemented keys: ["uniqueItems"]`).
    pub fn matcher(&self, constraint: &Constraint) -> Result<Matcher, String> {
        let what = match constraint {
            Constraint::ToolCall(_) => "function's parameters schema",
            _ => "JSON schema",
        };
        let refused = |e: String| format!("the on-box engine cannot enforce this {what}: {e}");
        let parser = self
            .factory
            .create_parser(constraint.grammar())
            .map_err(|e| refused(e.to_string()))?;
        let m = Matcher::new(Ok(parser));
        match m.get_error() {
            Some(e) => Err(refused(e)),
            None => Ok(m),
        }
    }
}
