//! The tokenizer of an on-box model: a `tokenizer.json` when one is given, else one built from
//! the GGUF metadata, so that a bare GGUF file is enough: byte-level BPE (`gpt2`: vocabulary,
//! merges, pre-tokenizer, special tokens) or SentencePiece BPE (`llama`: vocabulary and scores,
//! from which the merges are derived as Hugging Face's `SentencePieceExtractor` derives them,
//! with byte fallback).

use super::model::md;
use super::LocalError;
use candle_core::quantized::gguf_file;
use serde_json::{json, Map, Value};
use std::path::Path;
use tokenizers::Tokenizer;

/// GGUF token types (`tokenizer.ggml.token_type`) never split by BPE (control tokens are also
/// special).
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// Split regex of the Qwen2 pre-tokenizer (also GPT-4o-style llama-bpe with `\p{N}{1,3}`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Loads a `tokenizer.json`.
pub fn from_file(path: &Path) -> Result<Tokenizer, LocalError> {
    Tokenizer::from_file(path)
        .map_err(|e| LocalError::Tokenizer(format!("cannot load {}: {e}", path.display())))
}

fn strings<'a>(ct: &'a gguf_file::Content, key: &str) -> Result<Vec<&'a str>, LocalError> {
    md(ct, key)?
        .to_vec()
        .map_err(|e| LocalError::Format(format!("`{key}`: {e}")))?
        .iter()
        .map(|v| {
            v.to_string()
                .map(String::as_str)
                .map_err(|e| LocalError::Format(format!("`{key}`: {e}")))
        })
        .collect()
}

/// Builds the tokenizer described by the GGUF metadata.
pub fn from_gguf(ct: &gguf_file::Content) -> Result<Tokenizer, LocalError> {
    let json = tokenizer_json(ct)?;
    let bytes = serde_json::to_vec(&json).map_err(|e| LocalError::Tokenizer(e.to_string()))?;
    Tokenizer::from_bytes(bytes).map_err(|e| LocalError::Tokenizer(e.to_string()))
}

/// The `tokenizer.json` document equivalent to the GGUF metadata.
fn tokenizer_json(ct: &gguf_file::Content) -> Result<Value, LocalError> {
    let model = md(ct, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| LocalError::Format(e.to_string()))?;
    if model == "llama" {
        return sentencepiece_json(ct);
    }
    if model != "gpt2" {
        return Err(LocalError::Unsupported(format!(
            "tokenizer model `{model}` in the GGUF metadata (built from metadata: byte-level BPE \
             `gpt2` and SentencePiece `llama`): give the model's tokenizer.json"
        )));
    }
    let pre = md(ct, "tokenizer.ggml.pre")
        .ok()
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("default");
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    let (normalizer, pre_tokenizer) = match pre {
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]}),
        ),
        "llama-bpe" | "llama3" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]}),
        ),
        // SmolLM / StarCoder: every digit on its own, then GPT-2's byte-level split.
        "smollm" | "starcoder" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        ),
        "default" | "gpt2" | "gpt-2" => (Value::Null, byte_level(true)),
        other => {
            return Err(LocalError::Unsupported(format!(
                "pre-tokenizer `{other}` in the GGUF metadata (built in: qwen2, llama-bpe, smollm, \
                 starcoder, gpt2): give the model's tokenizer.json"
            )))
        }
    };
    let tokens = strings(ct, "tokenizer.ggml.tokens")?;
    let merges = strings(ct, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match md(ct, "tokenizer.ggml.token_type") {
        Ok(v) => v
            .to_vec()
            .map_err(|e| LocalError::Format(e.to_string()))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        Err(_) => vec![],
    };
    let mut vocab = Map::with_capacity(tokens.len());
    let mut added = vec![];
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert((*tok).to_string(), json!(id));
        // Both kinds are never split; only control tokens are special (left out of decoded
        // text): user-defined ones such as Qwen2.5's `<tool_call>` are text the model writes,
        // as Hugging Face's `tokenizer.json` has them (`"special": false`).
        if matches!(types.get(id), Some(&CONTROL) | Some(&USER_DEFINED)) {
            added.push(
                json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": types.get(id) == Some(&CONTROL)}),
            );
        }
    }
    Ok(document(
        added,
        normalizer,
        pre_tokenizer,
        byte_level(false),
        byte_level(false),
        json!({
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        }),
    ))
}

/// A `tokenizer.json` document of these parts (no truncation, no padding).
fn document(
    added: Vec<Value>,
    normalizer: Value,
    pre_tokenizer: Value,
    post_processor: Value,
    decoder: Value,
    model: Value,
) -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model,
    })
}

/// GGUF token type of ordinary pieces.
const NORMAL: i32 = 1;

/// The `tokenizer.json` document of a SentencePiece BPE vocabulary (`tokenizer.ggml.model:
/// llama`: Gemma, Llama 2, Mistral). The merges are every split of a normal piece into two normal
/// pieces, ordered by the merged piece's score (highest first), then by the parts' ids: the
/// order SentencePiece merges in (Hugging Face's `SentencePieceExtractor`). Spaces become `▁`
/// (a `▁` is prepended when `tokenizer.ggml.add_space_prefix` is true, its default); pieces
/// missing from the vocabulary fall back to byte tokens. Control tokens are special; user-defined
/// ones (Gemma's whitespace runs, ...) are matched as written, before normalisation, as
/// llama.cpp does.
fn sentencepiece_json(ct: &gguf_file::Content) -> Result<Value, LocalError> {
    let tokens = strings(ct, "tokenizer.ggml.tokens")?;
    let numbers = |key: &str| -> Result<Vec<gguf_file::Value>, LocalError> {
        Ok(md(ct, key)?
            .to_vec()
            .map_err(|e| LocalError::Format(format!("`{key}`: {e}")))?
            .clone())
    };
    let scores: Vec<f32> = numbers("tokenizer.ggml.scores")?
        .iter()
        .map(|v| v.to_f32().unwrap_or(f32::NEG_INFINITY))
        .collect();
    let types: Vec<i32> = numbers("tokenizer.ggml.token_type")?
        .iter()
        .map(|t| t.to_i32().unwrap_or(NORMAL))
        .collect();
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(LocalError::Format(
            "tokenizer.ggml.scores and token_type must have one entry per token".into(),
        ));
    }
    let add_space_prefix = md(ct, "tokenizer.ggml.add_space_prefix")
        .ok()
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(true);
    let unk = md(ct, "tokenizer.ggml.unknown_token_id")
        .ok()
        .and_then(|v| v.to_u32().ok())
        .and_then(|id| tokens.get(id as usize).copied());
    let normal: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| types[*id] == NORMAL)
        .map(|(id, t)| (*t, id))
        .collect();
    // (score of the merged piece, left id, right id) for every split into two normal pieces.
    let mut merges: Vec<(f32, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types[id] != NORMAL {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (normal.get(&piece[..at]), normal.get(&piece[at..])) {
                merges.push((scores[id], l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<Value> = merges
        .iter()
        .map(|(_, l, r)| json!([tokens[*l], tokens[*r]]))
        .collect();
    let mut vocab = Map::with_capacity(tokens.len());
    let mut added = vec![];
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert((*tok).to_string(), json!(id));
        let special = match types[id] {
            CONTROL => true,
            USER_DEFINED => false,
            _ => continue,
        };
        added.push(
            json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": special}),
        );
    }
    let replace = |from: &str, to: &str| json!({"type": "Replace", "pattern": {"String": from}, "content": to});
    let (normalizer, strip) = if add_space_prefix {
        (
            json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace(" ", "\u{2581}")]}),
            vec![json!({"type": "Strip", "content": " ", "start": 1, "stop": 0})],
        )
    } else {
        (replace(" ", "\u{2581}"), vec![])
    };
    let mut decoders = vec![
        replace("\u{2581}", " "),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    decoders.extend(strip);
    Ok(document(
        added,
        normalizer,
        Value::Null,
        Value::Null,
        json!({"type": "Sequence", "decoders": decoders}),
        json!({
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        }),
    ))
}

/// Token ids of `text` (special tokens written in it are recognised).
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, LocalError> {
    tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| LocalError::Tokenizer(e.to_string()))
}
