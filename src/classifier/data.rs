//! Training examples for the routing heads, read from a training-data folder (the layout of
//! `../shared/data/train`) plus the project's own category seed prompts. How each source is
//! labelled is documented in docs/router-quality.md.

use super::ClassifierError;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The category label set, in the heads' output order.
pub use crate::policy::CATEGORIES;

/// Prompts written for this project that define the categories the public data lacks.
pub const CATEGORY_SEEDS: &str = include_str!("category_seeds.jsonl");

/// The index of a category name.
pub fn category_index(name: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| *c == name)
}

/// MMLU-Pro models whose answers stand for "a small model" in the strong label.
pub const MMLU_WEAK: [&str; 8] = [
    "Mixtral-8x7B-Instruct-v0.1",
    "Meta-Llama-3_1-8B-Instruct",
    "Mistral-7B-Instruct-v0.2",
    "Qwen1.5-7B-Chat",
    "Yi-6b-Chat",
    "Phi-3-mini-4k-instruct",
    "gemma-7b",
    "Llama-2-13b-hf",
];
/// The pair whose correctness the validation split reports PGR for (as in RouteLLM's benchmark).
pub const MMLU_PAIR: (&str, &str) = ("Mixtral-8x7B-Instruct-v0.1", "gemini-1.5-pro-002");
/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    /// Which data set it came from (for per-source weights and reports).
    pub source: &'static str,
    pub category: Option<usize>,
    /// Strong-score target in [0, 1].
    pub strong: Option<f32>,
    /// (weak correct, strong correct) of [`MMLU_PAIR`], for validation PGR.
    pub pair: Option<(bool, bool)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClassifierError + '_ {
    move |source| ClassifierError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, ClassifierError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// The rows of a JSONL file (blank lines skipped); a bad row names its line.
pub fn jsonl(path: &Path) -> Result<Vec<Value>, ClassifierError> {
    read(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| ClassifierError::Format(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// A CSV of plain fields (no quoting): header names and rows.
fn csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), ClassifierError> {
    let text = read(path)?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| ClassifierError::Format(format!("{}: empty", path.display())))?
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    Ok((header, rows))
}

fn str_field<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// Mean of the named numeric columns of a row (missing cells skipped).
fn mean_of(row: &[String], cols: &HashMap<&str, usize>, names: &[&str]) -> Option<f32> {
    let vals: Vec<f32> = names
        .iter()
        .filter_map(|n| row.get(*cols.get(n)?)?.parse::<f32>().ok())
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum::<f32>() / vals.len() as f32)
}

/// An MMLU-Pro question as a multiple-choice prompt (the layout of RouteLLM's MMLU prompts).
pub fn mmlu_prompt(question: &str, options: &[Value]) -> String {
    let mut s = question.trim().to_string();
    for (i, o) in options.iter().enumerate() {
        let letter = char::from(b'A' + (i as u8 % 26));
        s.push_str(&format!("\n{letter}. {}", o.as_str().unwrap_or("")));
    }
    s.push_str("\nAnswer:");
    s
}

/// MMLU-Pro: category `math` or `knowledge`; strong target = the share of the small models
/// ([`MMLU_WEAK`]) that answer wrong.
fn mmlu_pro(dir: &Path) -> Result<Vec<Example>, ClassifierError> {
    let questions = jsonl(&dir.join("questions.jsonl"))?;
    let (header, rows) = csv(&dir.join("correctness.csv"))?;
    let cols: HashMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    let by_id: HashMap<&str, &Vec<String>> = rows
        .iter()
        .filter_map(|r| Some((r.first()?.as_str(), r)))
        .collect();
    let mut out = vec![];
    for q in &questions {
        let id = match q.get("question_id") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => continue,
        };
        let Some(row) = by_id.get(id.as_str()) else {
            continue;
        };
        let options = q
            .get("options")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let strong = mean_of(row, &cols, &MMLU_WEAK).map(|right| 1.0 - right);
        let one = |name: &str| mean_of(row, &cols, &[name]).map(|v| v >= 0.5);
        let pair = one(MMLU_PAIR.0).zip(one(MMLU_PAIR.1));
        let category = if str_field(q, "category") == "math" {
            "math"
        } else {
            "knowledge"
        };
        out.push(Example {
            text: mmlu_prompt(str_field(q, "question"), &options),
            source: "mmlu_pro",
            category: category_index(category),
            strong,
            pair,
        });
    }
    Ok(out)
}

/// GSM8K: category `math` (its solution steps as a strong label made the score worse on every
/// benchmark; see docs/router-quality.md).
fn gsm8k(path: &Path) -> Result<Vec<Example>, ClassifierError> {
    Ok(jsonl(path)?
        .iter()
        .map(|r| Example {
            text: str_field(r, "question").to_string(),
            source: "gsm8k",
            category: category_index("math"),
            strong: None,
            pair: None,
        })
        .collect())
}

/// HumanEval: category `code`.
fn humaneval(path: &Path) -> Result<Vec<Example>, ClassifierError> {
    Ok(jsonl(path)?
        .iter()
        .map(|r| Example {
            text: str_field(r, "prompt").to_string(),
            source: "humaneval",
            category: category_index("code"),
            strong: None,
            pair: None,
        })
        .collect())
}

/// Synthetic tasks: category from `task_type` where it maps onto ours, strong target from
/// `complexity` (simple 0.1, standard 0.25, complex 0.45, research 0.6).
fn synthetic(path: &Path) -> Result<Vec<Example>, ClassifierError> {
    Ok(jsonl(path)?
        .iter()
        .map(|r| {
            let category = match str_field(r, "task_type") {
                "reasoning" => Some("reasoning"),
                "analyzing" | "translation" => Some("transform"),
                "code_creation" => Some("code"),
                "doc_creation" => Some("writing"),
                "math" => Some("math"),
                "conversation" => Some("knowledge"),
                _ => None,
            };
            let strong = match str_field(r, "complexity") {
                "simple" => Some(0.1),
                "standard" => Some(0.25),
                "complex" => Some(0.45),
                "research" => Some(0.6),
                _ => None,
            };
            Example {
                text: str_field(r, "task").to_string(),
                source: "synthetic_tasks",
                category: category.and_then(category_index),
                strong,
                pair: None,
            }
        })
        .collect())
}

/// The project's category seeds.
fn seeds() -> Result<Vec<Example>, ClassifierError> {
    CATEGORY_SEEDS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .map_err(|e| ClassifierError::Format(format!("category seeds: {e}")))?;
            Ok(Example {
                text: str_field(&v, "prompt").to_string(),
                source: "seeds",
                category: category_index(str_field(&v, "category")),
                strong: None,
                pair: None,
            })
        })
        .collect()
}

/// Refuses a data folder that looks like the evaluation set.
fn check_not_eval(dir: &Path) -> Result<(), ClassifierError> {
    let canon = dir.canonicalize().unwrap_or_else(|_| PathBuf::from(dir));
    if canon.components().any(|c| c.as_os_str() == "eval") || canon.join("routellm").exists() {
        return Err(ClassifierError::Format(format!(
            "{} looks like evaluation data: the heads are trained on training data only",
            dir.display()
        )));
    }
    Ok(())
}

/// Loads every source found in a training-data folder (missing sources are skipped, the seeds
/// are always included).
pub fn load(dir: &Path) -> Result<Vec<Example>, ClassifierError> {
    check_not_eval(dir)?;
    let mut out = vec![];
    let p = |rel: &str| dir.join(rel);
    if p("mmlu_pro/questions.jsonl").exists() {
        out.extend(mmlu_pro(&p("mmlu_pro"))?);
    }
    if p("gsm8k/train.jsonl").exists() {
        out.extend(gsm8k(&p("gsm8k/train.jsonl"))?);
    }
    if p("humaneval/HumanEval.jsonl").exists() {
        out.extend(humaneval(&p("humaneval/HumanEval.jsonl"))?);
    }
    if p("synthetic_tasks/synthetic_tasks.jsonl").exists() {
        out.extend(synthetic(&p("synthetic_tasks/synthetic_tasks.jsonl"))?);
    }
    out.extend(seeds()?);
    out.retain(|e| !e.text.trim().is_empty());
    Ok(out)
}

/// The source name of rows from `switchyard label`.
pub const LABELS_SOURCE: &str = "labels";

/// The on-box model a label file was made for: its first row's `model` (the policy's name for
/// it) and `model_file` (the file name of its weights; `None` in files written before rows
/// carried it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelledModel {
    pub name: String,
    pub file: Option<String>,
}

/// SHA-256 (hex) of a file's bytes: which label file a heads folder's held-out split is of.
///
/// Errors: the file cannot be read.
pub fn file_sha256(path: &Path) -> Result<String, ClassifierError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|source| ClassifierError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Rows of a `switchyard label` file as strong-score examples (no category): the text is the
/// row's `prompt`, the target its `strong_label`, and its validation pair (on-box right when
/// the label is below 0.5, cloud right). Returns the examples and the on-box model they were
/// labelled for.
///
/// Errors: a file that cannot be read, or a row without `prompt` and `strong_label` in [0, 1].
pub fn load_labels(path: &Path) -> Result<(Vec<Example>, LabelledModel), ClassifierError> {
    let rows = jsonl(path)?;
    let mut out = vec![];
    for (i, r) in rows.iter().enumerate() {
        let (Some(text), Some(label)) = (
            r.get("prompt").and_then(Value::as_str),
            r.get("strong_label").and_then(Value::as_f64),
        ) else {
            return Err(ClassifierError::Format(format!(
                "{}: row {} needs `prompt` and `strong_label`",
                path.display(),
                i + 1
            )));
        };
        if !(0.0..=1.0).contains(&label) {
            return Err(ClassifierError::Format(format!(
                "{}: row {}: strong_label {label} is not in [0, 1]",
                path.display(),
                i + 1
            )));
        }
        out.push(Example {
            text: text.to_string(),
            source: LABELS_SOURCE,
            category: None,
            strong: Some(label as f32),
            pair: Some((label < 0.5, true)),
        });
    }
    let field = |name: &str| {
        rows.first()
            .and_then(|r| r.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let model = LabelledModel {
        name: field("model").unwrap_or_default(),
        file: field("model_file"),
    };
    Ok((out, model))
}

/// MMLU-Pro prompts with the 0/1 label "`model` answered wrong" (for the baseline router).
pub fn load_mmlu_pro_label(dir: &Path, model: &str) -> Result<Vec<(String, f32)>, ClassifierError> {
    check_not_eval(dir)?;
    let d = dir.join("mmlu_pro");
    let questions = jsonl(&d.join("questions.jsonl"))?;
    let (header, rows) = csv(&d.join("correctness.csv"))?;
    let col = header
        .iter()
        .position(|h| h == model)
        .ok_or_else(|| ClassifierError::Format(format!("no column {model} in correctness.csv")))?;
    let by_id: HashMap<&str, &Vec<String>> = rows
        .iter()
        .filter_map(|r| Some((r.first()?.as_str(), r)))
        .collect();
    Ok(questions
        .iter()
        .filter_map(|q| {
            let id = match q.get("question_id")? {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let right: f32 = by_id.get(id.as_str())?.get(col)?.parse().ok()?;
            let options = q
                .get("options")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            Some((mmlu_prompt(str_field(q, "question"), &options), 1.0 - right))
        })
        .collect())
}
