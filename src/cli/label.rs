//! `switchyard label`: routing labels from the on-box model a policy runs. Each row's question is
//! answered by that model; the answer is graded against the row's gold answer (numbers and
//! multiple choice, extracted as `eval-local` does), or, for a row without one, compared by a
//! cloud judge with the judge's own answer. The label is `strong_label` in [0, 1]: 1 when the
//! on-box answer is worse than the cloud's.
//!
//! Rows are written as they finish (JSONL, one per input row), so an interrupted run resumes
//! where it stopped: rows already in `--out` are skipped. Cloud calls are priced at the policy's
//! prices; an estimate is printed before the first one, and no new row starts once what was
//! spent, with the estimated cost of the rows in flight, reaches `--max-usd`.

use super::classifier_args::progress;
use crate::api::ChatRequest;
use crate::classifier::heads::model_file_name;
use crate::engines::{ChatEngine, EngineRequest};
use crate::policy::{self, Policy};
use crate::tuning::answers::{self, Question, Task};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// The policy that names the models.
    #[arg(long, default_value = "policies/default.yaml")]
    pub policy: PathBuf,
    /// The on-box model to label for (a `local` model of the policy with a `path`).
    #[arg(long)]
    pub model: String,
    /// Rows (JSONL: `{"id", "prompt", "answer"?, "task"?}` or chat requests with an `id`), or a
    /// training-data folder, whose GSM8K and MMLU-Pro questions are labelled with their gold answers.
    /// A row without `id` is named by a hash of its messages (`sha256:` and 16 hex digits).
    #[arg(long)]
    pub input: PathBuf,
    /// Where the labels go (JSONL; rows already there are kept and not labelled again).
    #[arg(long)]
    pub out: PathBuf,
    /// A cloud model of the policy that answers and judges the rows without a gold answer.
    #[arg(long)]
    pub judge: Option<String>,
    /// Rows labelled at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Stop starting judged rows once the cloud calls have cost this many USD, counting the
    /// estimated cost of the rows in flight.
    #[arg(long)]
    pub max_usd: Option<f64>,
    /// Most tokens of each answer (greedy decoding).
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u64,
    /// With a training-data folder: questions of each task, sampled by `--seed`.
    #[arg(long, default_value_t = 200)]
    pub per_task: usize,
    /// With a training-data folder: label only this task's questions (`gsm8k` or `mmlu_pro`;
    /// default: both).
    #[arg(long, value_parser = ["gsm8k", "mmlu_pro"])]
    pub task: Option<String>,
    /// With a training-data folder: the sample's seed (the same seed gives every model the same questions).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// A row whose on-box answer stopped at --max-tokens: label it as it is (`wrong`: graded or
    /// judged cut, which for a gold row usually means wrong) or leave it out of --out (`skip`),
    /// so that a rerun with a higher --max-tokens labels it.
    #[arg(long, value_enum, default_value_t = Unfinished::Wrong)]
    pub unfinished: Unfinished,
    /// Private data replaced by typed placeholders (`[EMAIL_1]`) in what the --judge is sent:
    /// the row's conversation and the on-box answer it rates (`all`, or kinds: email, phone,
    /// credit_card, iban, national_id, ip_address, secret). The on-box model and --out see the
    /// rows as they are. Default: nothing replaced.
    #[arg(long, value_delimiter = ',')]
    pub redact: Vec<String>,
}

/// What `--unfinished` does with an on-box answer cut at `--max-tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Unfinished {
    /// Grade it as it is (a gold row's answer is then usually wrong).
    Wrong,
    /// Leave the row unlabelled (not written; a rerun tries it again).
    Skip,
}

/// One row to label.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    /// The conversation, as OpenAI messages.
    pub messages: Vec<Value>,
    /// The gold answer and how to read it, when the row has one.
    pub gold: Option<(Task, String)>,
    /// The text the router reads, where it is not the last user message: a training-folder
    /// question without the answer-format instruction the on-box model is given.
    pub text: Option<String>,
}

impl Item {
    /// The text the classifier reads of the row: [`Item::text`], else its last user message.
    fn prompt(&self) -> String {
        if let Some(text) = &self.text {
            return text.clone();
        }
        self.messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| crate::api::content_text(m.get("content")))
            .unwrap_or_default()
    }
}

/// A row's gold answer as the grader compares it: a letter A-J (multiple choice, or `task:
/// mmlu_pro`), else a number as GSM8K writes it (`#### 18` or `18`).
///
/// A letter may be written `B`, `b`, `(B)` or `B.`; a number with `$`, thousands separators or
/// a trailing `.`. Anything else (a word, an empty string, `#### ` with no number) is no gold
/// answer: `None`, which the caller refuses with the row's line.
fn gold_of(answer: &Value, task: Option<&str>) -> Option<(Task, String)> {
    let text = match answer {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let bare = text
        .trim_start_matches('(')
        .trim_end_matches(['.', ')'])
        .to_ascii_uppercase();
    let letter = bare.len() == 1 && bare.chars().all(|c| ('A'..='J').contains(&c));
    match task {
        Some("mmlu_pro") | None if letter => Some((Task::MmluPro, bare)),
        Some("mmlu_pro") => None,
        _ => {
            let number = answers::normalise_number(text.rsplit("####").next().unwrap_or(""));
            answers::parse_number(&number)
                .is_some()
                .then_some((Task::Gsm8k, number))
        }
    }
}

/// The rows of a JSONL file. Errors: a line that is not a row, naming it.
pub fn load_rows(path: &Path) -> Result<Vec<Item>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut items = vec![];
    let mut unnamed = std::collections::HashMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
        let messages = match (&v["messages"], &v["prompt"]) {
            (Value::Array(m), _) => m.clone(),
            (_, Value::String(p)) => vec![json!({"role": "user", "content": p})],
            _ => return Err(format!("{}: a row needs `prompt` or `messages`", at())),
        };
        let id = match &v["id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => content_id(&messages, &v, &mut unnamed),
        };
        let gold =
            match v.get("answer") {
                None | Some(Value::Null) => None,
                Some(a) => Some(gold_of(a, v["task"].as_str()).ok_or_else(|| {
                    format!("{}: `answer` must be a number or a letter A-J", at())
                })?),
            };
        items.push(Item {
            id,
            messages,
            gold,
            text: None,
        });
    }
    Ok(items)
}

/// The id of a row that has none: `sha256:` and the first 16 hex digits of the SHA-256 of its
/// messages, `answer` and `task` (as JSON with every object's keys sorted), so that a resumed run
/// finds the rows it labelled however the input file was reordered, edited or re-serialised
/// since; the second and later rows with all three the same get `#2`, `#3`... (`seen` counts
/// them).
fn content_id(
    messages: &[Value],
    row: &Value,
    seen: &mut std::collections::HashMap<String, usize>,
) -> String {
    use sha2::{Digest, Sha256};
    let named = json!([messages, row.get("answer"), row.get("task")]);
    let digest = Sha256::digest(sorted_keys(&named).to_string().as_bytes());
    let id = format!("sha256:{}", &hex::encode(digest)[..16]);
    let n = seen.entry(id.clone()).or_insert(0);
    *n += 1;
    match *n {
        1 => id,
        n => format!("{id}#{n}"),
    }
}

/// `v` with every object's keys in sorted order (serde_json keeps insertion order here).
fn sorted_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted_keys(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted_keys).collect()),
        other => other.clone(),
    }
}

/// The GSM8K and MMLU-Pro questions of a training-data folder, with their gold answers.
fn load_training(
    dir: &Path,
    per_task: usize,
    seed: u64,
    only: Option<&str>,
) -> Result<Vec<Item>, String> {
    let mut items = vec![];
    for task in [Task::Gsm8k, Task::MmluPro] {
        if only.is_some_and(|t| t != task.name()) {
            continue;
        }
        for q in answers::load_sample(dir, task, per_task, seed)? {
            items.push(Item {
                id: format!("{}-{}", task.name(), q.id),
                messages: vec![json!({"role": "user", "content": q.prompt})],
                gold: Some((task, q.gold)),
                text: Some(q.question),
            });
        }
    }
    Ok(items)
}

/// What `out` holds already: the ids labelled, and the prompts of rows whose id is a line
/// number (files written before rows without an id were named by their content). A last line
/// cut short by an interruption is removed.
///
/// Errors: a row labelled by another model file than `model_file` (labels of two models in one
/// file would teach heads neither model's failures).
fn done_ids(out: &Path, model_file: &str) -> Result<Done, String> {
    let Ok(text) = std::fs::read_to_string(out) else {
        return Ok(Default::default());
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    if complete.len() != text.len() {
        std::fs::write(out, complete).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    let rows: Vec<Value> = complete
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    if let Some(other) = rows
        .iter()
        .filter_map(|v| v["model_file"].as_str())
        .find(|f| *f != model_file)
    {
        return Err(format!(
            "{} holds labels earned by {other}, and this run loads {model_file}: give another --out",
            out.display()
        ));
    }
    Ok(Done {
        ids: rows
            .iter()
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect(),
        numbered: rows
            .iter()
            .filter(|v| {
                v["id"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            })
            .filter_map(|v| v["prompt"].as_str().map(str::to_string))
            .collect(),
    })
}

/// The rows an output file holds already ([`done_ids`]).
#[derive(Default)]
struct Done {
    ids: std::collections::HashSet<String>,
    /// Prompts of rows whose id was a line number.
    numbered: std::collections::HashSet<String>,
}

impl Done {
    /// Whether `item` was labelled: by its id, or, for a row without an id of its own, by its
    /// prompt in a row that a line number named.
    fn contains(&self, item: &Item) -> bool {
        self.ids.contains(&item.id)
            || (item.id.starts_with("sha256:") && self.numbered.contains(&item.prompt()))
    }
}

/// The judge's instructions: the question, the reference (cloud) answer and the answer to rate
/// (the on-box one), and a rating from 1 to 5 in double brackets.
pub fn judge_prompt(question: &str, reference: &str, candidate: &str) -> String {
    format!(
        "You compare two answers to the same question. The reference answer comes from a strong model; \
the candidate answer comes from a small model. Rate the candidate against the reference:\n\
5: as good as the reference or better (correct, complete, as helpful)\n\
4: slightly worse (a small omission or imprecision, still correct)\n\
3: noticeably worse, but partly correct or usable\n\
2: mostly wrong, off-topic or unhelpful\n\
1: wrong, harmful or empty\n\
Judge correctness first, then completeness and helpfulness; ignore length and style. \
Reply with the rating only, in the form [[N]].\n\n\
[Question]\n{question}\n\n[Reference answer]\n{reference}\n\n[Candidate answer]\n{candidate}"
    )
}

static RATING: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\[\[\s*([1-5])\s*(?:/\s*5\s*)?\]\]").expect("the rating pattern compiles")
});

/// The rating in a judge's reply: the last `[[N]]` (N from 1 to 5; `[[ 4 ]]` and `[[4/5]]`
/// too, as judges write them).
pub fn rating(reply: &str) -> Option<u8> {
    let last = RATING.captures_iter(reply).last()?;
    last[1].parse().ok()
}

/// What one call gave: the answer's text and whether it stopped at `max_tokens`. Its cost in
/// USD goes to `pay` as soon as it returns, a failed call's too when the provider bills it.
async fn ask(
    policy: &Policy,
    engine: &Arc<dyn ChatEngine>,
    model: &str,
    messages: &[Value],
    max_tokens: u64,
    pay: &(dyn Fn(f64) + Sync),
) -> Result<(String, bool), String> {
    let body =
        json!({"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0});
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let req = ChatRequest::parse(&bytes).map_err(|e| format!("{model}: {e}"))?;
    let headers = http::HeaderMap::new();
    let done = engine
        .infer(EngineRequest {
            request: &req,
            headers: &headers,
            native: None,
            redacted: None,
        })
        .await
        .map_err(|e| {
            if let Some(usage) = e.billed() {
                pay(crate::accounting::bill(policy, model, usage).cost_usd);
            }
            format!("{model}: {e}")
        })?;
    pay(crate::accounting::bill(policy, model, done.usage).cost_usd);
    let v: Value = serde_json::from_slice(&done.body).map_err(|e| format!("{model}: {e}"))?;
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cut = v["choices"][0]["finish_reason"] == "length";
    Ok((text, cut))
}

struct Run<'a> {
    policy: &'a Policy,
    args: &'a LabelArgs,
    /// The file name of the on-box model's weights (each row's `model_file`).
    model_file: String,
    local: Arc<dyn ChatEngine>,
    judge: Option<(String, Arc<dyn ChatEngine>)>,
    /// What the judge is not sent (`--redact`).
    redact: crate::pii::Kinds,
    /// USD the cloud calls cost so far, each added as soon as its call returns (a row that
    /// fails after a paid call still counts it).
    spent: Mutex<f64>,
}

impl Run<'_> {
    fn pay(&self, usd: f64) {
        *self.spent.lock().unwrap_or_else(|e| e.into_inner()) += usd;
    }

    fn spent(&self) -> f64 {
        *self.spent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Labels one row: its output row (`None`: skipped, `--unfinished skip`). The cloud calls'
/// cost goes into `run.spent` as each returns.
async fn label(run: &Run<'_>, item: &Item) -> Result<Option<Value>, String> {
    let args = run.args;
    let (answer, cut) = ask(
        run.policy,
        &run.local,
        &args.model,
        &item.messages,
        args.max_tokens,
        &|_| {},
    )
    .await?;
    if cut && args.unfinished == Unfinished::Skip {
        return Ok(None);
    }
    let prompt = item.prompt();
    if let Some((task, gold)) = &item.gold {
        let q = Question {
            task: *task,
            id: item.id.clone(),
            prompt: prompt.clone(),
            question: prompt.clone(),
            gold: gold.clone(),
        };
        let extracted = answers::extract(&q, &answer);
        let correct = answers::is_correct(&q, &answer);
        let row = json!({"id": item.id, "prompt": prompt, "model": args.model,
            "model_file": run.model_file, "strong_label": if correct { 0.0 } else { 1.0 }, "graded": "gold",
            "task": task.name(), "gold": gold, "extracted": extracted});
        return Ok(Some(row));
    }
    let Some((judge, engine)) = &run.judge else {
        return Err(format!(
            "row {} has no gold `answer`, and no --judge was given",
            item.id
        ));
    };
    let pay = |usd| run.pay(usd);
    // One set of placeholders for the row, so that the judge sees the same value as the same
    // placeholder in the question and in the answers.
    // With no kinds to redact, nothing is replaced.
    let mut placeholders = crate::pii::Placeholders::default();
    let mut conversation = serde_json::Map::new();
    conversation.insert("messages".into(), Value::Array(item.messages.clone()));
    crate::pii::request::redact(&mut conversation, run.redact, &mut placeholders);
    let Some(Value::Array(sent)) = conversation.remove("messages") else {
        return Err(format!("row {}: its messages cannot be redacted", item.id));
    };
    let (reference, _) = ask(run.policy, engine, judge, &sent, args.max_tokens, &pay).await?;
    let mut redact = |text: &str| {
        placeholders
            .redact(text, run.redact)
            .unwrap_or_else(|| text.to_string())
    };
    let (prompt_sent, answer_sent) = (redact(&prompt), redact(&answer));
    let verdict =
        [json!({"role": "user", "content": judge_prompt(&prompt_sent, &reference, &answer_sent)})];
    let (reply, _) = ask(run.policy, engine, judge, &verdict, VERDICT_TOKENS, &pay).await?;
    let r = rating(&reply)
        .ok_or_else(|| format!("row {}: the judge gave no rating ([[1]] to [[5]])", item.id))?;
    let row = json!({"id": item.id, "prompt": prompt, "model": args.model,
        "model_file": run.model_file, "strong_label": f64::from(5 - r) / 4.0, "graded": "judge", "judge": judge, "rating": r,
        "local_answer": answer, "cloud_answer": reference});
    Ok(Some(row))
}

/// Tokens the judge may write for its verdict (`[[N]]`, with room for a few words before it).
const VERDICT_TOKENS: u64 = 32;

/// Estimated cloud cost of judging `items`: the reference answer (prompt and `max_tokens`) and
/// the verdict (prompt, both answers and the instructions in, [`VERDICT_TOKENS`] out), at the
/// gateway's estimate of 4 bytes a token (text that takes more tokens, such as CJK, costs more).
fn estimate(policy: &Policy, judge: &str, items: &[&Item], max_tokens: u64) -> f64 {
    items
        .iter()
        .map(|i| {
            let text: u64 = i
                .messages
                .iter()
                .map(|m| crate::api::content_text(m.get("content")).len() as u64)
                .sum();
            let prompt =
                crate::features::estimate_prompt_tokens(text, i.messages.len() as u64, 0, 0);
            let answer = crate::accounting::bill(
                policy,
                judge,
                crate::api::Usage {
                    prompt_tokens: prompt,
                    completion_tokens: max_tokens,
                    ..Default::default()
                },
            );
            let verdict = crate::accounting::bill(
                policy,
                judge,
                crate::api::Usage {
                    prompt_tokens: prompt + 2 * max_tokens + 200,
                    completion_tokens: VERDICT_TOKENS,
                    ..Default::default()
                },
            );
            answer.cost_usd + verdict.cost_usd
        })
        .sum()
}

pub fn run(args: LabelArgs) -> i32 {
    match try_run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn try_run(args: &LabelArgs) -> Result<i32, String> {
    let policy = policy::load(&args.policy).map_err(|e| e.to_string())?;
    let model_file = match policy.models.get(&args.model) {
        Some(m) => match m.local.as_ref().and_then(|l| l.path.as_ref()) {
            Some(path) => model_file_name(path),
            None => {
                return Err(format!(
                    "`{}` is not a local model with a `path`",
                    args.model
                ))
            }
        },
        None => {
            return Err(format!(
                "no model `{}` in {}",
                args.model,
                args.policy.display()
            ))
        }
    };
    let redact = match args.redact.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["all"] => crate::pii::Kinds::ALL,
        ref names => crate::pii::Kinds::parse(names.iter().copied()).map_err(|k| {
            format!(
                "--redact: unknown kind `{k}` (all, or {})",
                crate::pii::Kind::names()
            )
        })?,
    };
    if let Some(j) = &args.judge {
        if !policy.models.get(j).is_some_and(|m| m.kind.is_cloud()) {
            return Err(format!(
                "--judge `{j}` is not a cloud model of {}",
                args.policy.display()
            ));
        }
    }
    let items = if args.input.is_dir() {
        load_training(&args.input, args.per_task, args.seed, args.task.as_deref())?
    } else {
        load_rows(&args.input)?
    };
    let done = done_ids(&args.out, &model_file)?;
    let todo: Vec<&Item> = items.iter().filter(|i| !done.contains(i)).collect();
    let judged: Vec<&Item> = todo.iter().copied().filter(|i| i.gold.is_none()).collect();
    eprintln!(
        "{} rows: {} labelled already, {} to label ({} with a gold answer, {} to judge)",
        items.len(),
        items.len() - todo.len(),
        todo.len(),
        todo.len() - judged.len(),
        judged.len()
    );
    let judge = match (&args.judge, judged.is_empty()) {
        (_, true) => None,
        (None, false) => {
            return Err(format!(
                "{} rows have no gold `answer`: give --judge CLOUD_MODEL to label them",
                judged.len()
            ))
        }
        (Some(j), false) => {
            let usd = estimate(&policy, j, &judged, args.max_tokens);
            eprintln!(
                "cloud cost estimate: at most ${usd:.4} for {} rows judged by {j} (two calls each){}",
                judged.len(),
                args.max_usd.map(|m| format!("; stopping at ${m}")).unwrap_or_default()
            );
            Some(j.clone())
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let policy = Arc::new(policy);
        let gateway = crate::server::Gateway::build((*policy).clone(), Default::default(), None)?;
        let engine = |name: &str| {
            gateway
                .engines
                .get(name)
                .cloned()
                .ok_or_else(|| format!("model `{name}` has no engine"))
        };
        let run = Run {
            policy: &policy,
            args,
            model_file,
            local: engine(&args.model)?,
            judge: match judge {
                Some(j) => Some((j.clone(), engine(&j)?)),
                None => None,
            },
            redact,
            spent: Mutex::new(0.0),
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.out)
            .map_err(|e| format!("{}: {e}", args.out.display()))?;
        let out = Mutex::new(out);
        // Estimated cost of the judged rows in flight: a row starts only while what was spent
        // and what the rows in flight may spend stay under the cap, so concurrent rows cannot
        // all start at $0 and pass it together (the last row started may still pass it).
        let in_flight = Mutex::new(0.0f64);
        let finished = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        let capped = AtomicUsize::new(0);
        let skipped = AtomicUsize::new(0);
        let total = todo.len();
        progress("labelling", 0, total);
        futures_util::stream::iter(todo)
            .map(|item| async {
                let judged = match (&run.judge, &item.gold) {
                    (Some((judge, _)), None) => estimate(&policy, judge, &[item], args.max_tokens),
                    _ => 0.0,
                };
                if let (Some(cap), true) = (args.max_usd, item.gold.is_none()) {
                    let mut flight = in_flight.lock().unwrap_or_else(|e| e.into_inner());
                    if run.spent() + *flight >= cap {
                        drop(flight);
                        capped.fetch_add(1, Ordering::Relaxed);
                        let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
                        progress("labelling", n, total);
                        return;
                    }
                    *flight += judged;
                }
                let labelled = label(&run, item).await;
                if args.max_usd.is_some() && item.gold.is_none() {
                    *in_flight.lock().unwrap_or_else(|e| e.into_inner()) -= judged;
                }
                match labelled {
                    Ok(None) => {
                        skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(row)) => {
                        let mut f = out.lock().unwrap_or_else(|e| e.into_inner());
                        if let Err(e) = writeln!(f, "{row}").and_then(|_| f.flush()) {
                            eprintln!("\nerror: {}: {e}", args.out.display());
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        eprintln!("\n{e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
                progress("labelling", n, total);
            })
            .buffer_unordered(args.concurrency.max(1))
            .collect::<Vec<()>>()
            .await;
        let spent = run.spent();
        let (failed, capped) = (failed.into_inner(), capped.into_inner());
        let skipped = skipped.into_inner();
        eprintln!(
            "labelled {} rows into {}; cloud calls cost ${spent:.4}",
            total - failed - capped - skipped,
            args.out.display()
        );
        if skipped > 0 {
            eprintln!(
                "{skipped} rows skipped: the on-box answer stopped at --max-tokens {} (--unfinished skip; run again with a higher --max-tokens to label them)",
                args.max_tokens
            );
        }
        if capped > 0 {
            eprintln!("{capped} rows not started: the --max-usd cap was reached (what was spent and the estimate of the rows in flight; run again with a higher cap to go on)");
        }
        if failed > 0 {
            eprintln!("{failed} rows failed (run again to retry them)");
        }
        Ok(if failed > 0 { 1 } else { 0 })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gold_answers_are_letters_or_numbers() {
        assert_eq!(
            gold_of(&json!("C"), None),
            Some((Task::MmluPro, "C".into()))
        );
        assert_eq!(
            gold_of(&json!("#### 1,200"), None),
            Some((Task::Gsm8k, "1200".into()))
        );
        assert_eq!(
            gold_of(&json!(18), Some("gsm8k")),
            Some((Task::Gsm8k, "18".into()))
        );
        assert_eq!(gold_of(&json!("42"), Some("mmlu_pro")), None);
        // Letters as people write them; numbers with their decoration; no word is an answer.
        for written in ["b", "(B)", "B.", " B "] {
            assert_eq!(
                gold_of(&json!(written), None),
                Some((Task::MmluPro, "B".into())),
                "{written}"
            );
        }
        assert_eq!(
            gold_of(&json!("$1,200."), None),
            Some((Task::Gsm8k, "1200".into()))
        );
        assert_eq!(
            gold_of(&json!(18.0), Some("gsm8k")),
            Some((Task::Gsm8k, "18.0".into()))
        );
        for not_an_answer in ["Paris", "", "#### ", "1/2"] {
            assert_eq!(
                gold_of(&json!(not_an_answer), None),
                None,
                "{not_an_answer}"
            );
        }
    }

    #[test]
    fn ratings_are_read_from_double_brackets() {
        assert_eq!(rating("[[4]]"), Some(4));
        assert_eq!(rating("Rating: [[1]]."), Some(1));
        assert_eq!(rating("[[7]]"), None);
        assert_eq!(rating("4"), None);
        assert_eq!(rating("[[ 4 ]]"), Some(4));
        assert_eq!(rating("[[3/5]]"), Some(3));
        // The verdict, not an example quoted before it.
        assert_eq!(rating("Ratings look like [[1]]; mine: [[5]]"), Some(5));
    }

    /// Rows without an id keep theirs when the input file is reordered or edited, so a resumed
    /// run skips exactly the rows it labelled; repeated rows are told apart.
    #[test]
    fn rows_without_an_id_are_named_by_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("rows.jsonl");
        let ids = |lines: &[&str]| {
            std::fs::write(&input, lines.join("\n")).unwrap();
            load_rows(&input)
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        };
        let a = r#"{"prompt": "What is 2 + 2?"}"#;
        let b = r#"{"messages": [{"role": "user", "content": "Name a colour."}]}"#;
        let first = ids(&[a, b]);
        assert!(
            first[0].starts_with("sha256:") && first[0].len() == 23,
            "{first:?}"
        );
        assert_ne!(first[0], first[1]);
        // Another row inserted before them and the two swapped: the same ids.
        let c = r#"{"id": "q7", "prompt": "Why is the sky blue?"}"#;
        assert_eq!(
            ids(&[c, b, a]),
            vec!["q7".to_string(), first[1].clone(), first[0].clone()]
        );
        // A repeated row is a second row.
        assert_eq!(
            ids(&[a, a]),
            vec![first[0].clone(), format!("{}#2", first[0])]
        );
        // Keys written in another order name the same row; another gold answer, another row.
        let b_sorted = r#"{"messages": [{"content": "Name a colour.", "role": "user"}]}"#;
        assert_eq!(ids(&[b_sorted])[0], first[1]);
        let a_gold = r#"{"prompt": "What is 2 + 2?", "answer": 4}"#;
        assert_ne!(ids(&[a_gold])[0], first[0]);
        // An output file written when such rows were named by their line number resumes too.
        let out = dir.path().join("labels.jsonl");
        std::fs::write(
            &out,
            "{\"id\":\"1\",\"prompt\":\"What is 2 + 2?\",\"model_file\":\"m.gguf\"}\n",
        )
        .unwrap();
        let done = done_ids(&out, "m.gguf").unwrap();
        std::fs::write(&input, [a, b].join("\n")).unwrap();
        let rows = load_rows(&input).unwrap();
        assert!(done.contains(&rows[0]) && !done.contains(&rows[1]));
    }

    #[test]
    fn an_interrupted_file_resumes_after_its_last_whole_row() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("labels.jsonl");
        std::fs::write(&out, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\",\"stro").unwrap();
        let done = done_ids(&out, "m.gguf").unwrap().ids;
        assert!(done.contains("a") && done.contains("b") && !done.contains("c"));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"a\"}\n{\"id\":\"b\"}\n"
        );
    }
}
