//! The classifier's commands, run as a user runs them: `classify` (text and JSONL),
//! `bench-classifier --harness`, and `train-router` / `eval-router` on small fixtures written
//! here.

mod common;

use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn switchyard(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("--encoder")
        .arg(common::encoder_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run switchyard");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `switchyard` and returns its stdout; a failure shows stdout and stderr.
fn switchyard_ok(args: &[&str], stdin: Option<&str>) -> String {
    let o = switchyard(args, stdin);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{args:?}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn classify_prints_the_distribution_and_strong_score() {
    let out = switchyard_ok(
        &[
            "classify",
            "--json",
            "Write a bash script that deletes empty folders.",
        ],
        None,
    );
    let v: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["category"], "code");
    let cats = v["categories"].as_object().expect("categories");
    assert_eq!(cats.len(), 8);
    let sum: f64 = cats.values().map(|p| p.as_f64().unwrap_or(0.0)).sum();
    assert!((sum - 1.0).abs() < 0.01, "probabilities sum to 1: {sum}");
    let s = v["strong_score"].as_f64().expect("strong");
    assert!((0.0..=1.0).contains(&s));
    assert!(v["tokens"].as_u64().expect("tokens") > 5);
    assert_eq!(v["truncated"], false);
    assert!(v["ms"].as_f64().expect("ms") > 0.0);

    let table = switchyard(&["classify", "hello there"], None);
    assert!(table.status.success());
    let t = stdout(&table);
    for label in ["category", "strong score", "tokens", "time"] {
        assert!(t.contains(label), "{t}");
    }
}

/// `bench-classifier --harness` times the harness rules on a chat turn and an agent's turn
/// (the chat turn is read whole, the agent's turn down to its question), the tool-feedback
/// rules on a tool's result (nothing kept) and a rejected call (the reason kept), and a sticky
/// conversation's key on three openings.
#[test]
fn the_harness_benchmark_strips_only_the_agents_text() {
    let out = switchyard_ok(
        &[
            "bench-classifier",
            "--harness",
            "--runs",
            "3",
            "--threads",
            "1",
        ],
        None,
    );
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 7, "{out}");
    for r in &rows {
        assert_eq!(r["bench"], "harness");
        assert!(r["p50_us"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
        assert!(
            r["encoder_128_tokens_p50_ms"].as_f64().unwrap_or(0.0) > 0.0,
            "{r}"
        );
    }
    let rules: Vec<&str> = rows.iter().filter_map(|r| r["rules"].as_str()).collect();
    assert_eq!(
        rules,
        [
            "strip",
            "strip",
            "tool_feedback",
            "tool_feedback",
            "conversation_key",
            "conversation_key",
            "conversation_key"
        ]
    );
    // A key keeps no text: its rows say how big the opening was, not what was kept.
    assert!(rows[4..].iter().all(|r| r["kept_bytes"].is_null()));
    assert!(
        rows[5]["bytes"].as_u64().unwrap_or(0) > 20_000,
        "{}",
        rows[5]
    );
    let bytes = |r: &Value, k: &str| r[k].as_u64().unwrap_or(0);
    assert_eq!(bytes(&rows[0], "kept_bytes"), bytes(&rows[0], "bytes"));
    assert!(bytes(&rows[1], "bytes") > 20_000);
    assert!(bytes(&rows[1], "kept_bytes") < 100, "{}", rows[1]);
    assert!(bytes(&rows[2], "bytes") > 20_000);
    assert_eq!(bytes(&rows[2], "kept_bytes"), 0, "{}", rows[2]);
    assert!(
        (1..100).contains(&bytes(&rows[3], "kept_bytes")),
        "{}",
        rows[3]
    );
}

#[test]
fn classify_reads_jsonl_rows_in_order_with_ids() {
    let rows = [
        json!({"id": "a", "prompt": "Solve 3x + 5 = 20 for x."}),
        json!({"prompt": "hi!"}),
        json!({"id": 7, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Write a haiku about rain."}], "model": "auto"}),
        json!({"id": "bad", "prompt": 42}),
    ];
    let mut input: String = rows.iter().map(|r| format!("{r}\n")).collect();
    input.push_str("{not json\n");
    let o = switchyard(&["classify", "--batch", "2", "-"], Some(&input));
    assert!(
        !o.status.success(),
        "bad rows make the exit status non-zero"
    );
    let out: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(out.len(), 5, "one result per row");
    assert_eq!(out[0]["id"], "a");
    assert_eq!(out[0]["category"], "math");
    assert!(out[1].get("id").is_none());
    assert_eq!(out[1]["category"], "chat");
    assert_eq!(out[2]["id"], 7);
    assert_eq!(out[2]["category"], "writing");
    assert_eq!(out[3]["id"], "bad");
    assert!(out[3]["error"].as_str().expect("error").contains("prompt"));
    assert!(out[4]["error"]
        .as_str()
        .expect("error")
        .contains("invalid JSON"));
}

#[test]
fn classify_can_print_each_rows_embedding() {
    let input = [
        json!({"id": 1, "prompt": "Write a haiku about rain."}),
        json!({"id": 2, "prompt": "Solve 3x + 5 = 20 for x."}),
        json!({"id": 3, "prompt": "Write a haiku about rain."}),
    ]
    .iter()
    .map(|r| format!("{r}\n"))
    .collect::<String>();
    let out = switchyard_ok(&["classify", "--embedding", "-"], Some(&input));
    let vectors: Vec<Vec<f64>> = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            v["embedding"]
                .as_array()
                .expect("embedding array")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        })
        .collect();
    assert_eq!(vectors.len(), 3);
    // One block per layer the built-in heads read.
    let built_in: Value =
        serde_json::from_str(include_str!("../src/classifier/trained/labels.json")).expect("json");
    let blocks = built_in["layers"].as_array().map_or(1, Vec::len);
    for v in &vectors {
        assert_eq!(v.len(), 384 * blocks, "all-MiniLM-L6-v2 is 384 wide");
        for block in v.chunks(384) {
            let norm: f64 = block.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "L2-normalised, got {norm}");
        }
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let blocks = blocks as f64;
    assert!(
        dot(&vectors[0], &vectors[2]) > 0.9999 * blocks,
        "same text, same vector"
    );
    assert!(
        dot(&vectors[0], &vectors[1]) < 0.9 * blocks,
        "different texts differ"
    );
    let plain = switchyard(&["classify", "-"], Some(&input));
    assert!(stdout(&plain).lines().all(|l| !l.contains("embedding")));
    let one = switchyard(&["classify", "--embedding", "hello"], None);
    assert!(
        !one.status.success(),
        "a single text has no embedding output"
    );
    assert!(String::from_utf8_lossy(&one.stderr).contains("--embedding needs rows from stdin"));
}

/// `n` label rows of `model` in `path`: the even rows are `hard(i)` (strong_label 1, the
/// on-box answer worse), the odd rows easy ones of the other kind (strong_label 0): a greeting
/// when the hard rows are proofs, a proof when they are greetings.
fn write_labels(path: &Path, model: &str, n: usize, hard: impl Fn(usize) -> String) {
    let rows: String = (0..n)
        .map(|i| {
            let h = i % 2 == 0;
            let prompt = if h {
                hard(i)
            } else if hard(i).starts_with("Prove") {
                format!("Say hello to my friend number {i}.")
            } else {
                format!("Prove the bound on the spectral gap of random regular graph family {i} and derive its constant.")
            };
            format!(
                "{}\n",
                json!({"id": i.to_string(), "prompt": prompt, "model": model,
                    "model_file": format!("{model}.gguf"), "strong_label": if h { 1.0 } else { 0.0 }, "graded": "gold"})
            )
        })
        .collect();
    std::fs::write(path, rows).expect("write labels");
}

/// `eval-router --labels --heads`'s paired interval of the APGR difference over `rows` held-out
/// rows: (5th percentile, median, 95th percentile).
fn difference_interval(out: &str, rows: usize) -> (f64, f64, f64) {
    let line = out
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "APGR of --heads minus the built-in heads', paired over these {rows} rows (2000 bootstrap resamples, seed 7): "
            ))
        })
        .unwrap_or_else(|| panic!("no interval over {rows} rows:\n{out}"));
    let num = |s: &str| -> f64 {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {s:?} in {line}"))
    };
    let (_, rest) = line.split_once("median ").expect("median");
    let (median, rest) = rest
        .split_once(", 5th to 95th percentile ")
        .expect("percentiles");
    let (low, high) = rest.split_once(" to ").expect("to");
    (num(low), num(median), num(high))
}

#[test]
fn heads_can_start_from_the_built_in_ones_and_keep_their_categories() {
    let tmp = tempfile::tempdir().expect("tmp");
    let labels = tmp.path().join("labels.jsonl");
    // The labels say the opposite of the built-in strong score: chat is hard for this model,
    // exam questions are easy.
    write_labels(&labels, "odd-box", 160, |i| {
        format!("hi there, how are you doing today, friend number {i}?")
    });
    let out_dir = tmp.path().join("heads");
    let path = |p: &Path| p.to_str().expect("path").to_string();
    let args = [
        "train-router",
        "--base",
        "builtin",
        "--labels",
        &path(&labels),
        "--out",
        &path(&out_dir),
        "--epochs",
        "60",
        "--no-cache",
    ];
    let log = switchyard_ok(&args, None);
    assert!(log.contains("category head kept from builtin"), "{log}");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("labels.json")).expect("read"))
            .expect("json");
    assert_eq!(meta["model"], "odd-box");
    assert_eq!(
        meta["model_file"], "odd-box.gguf",
        "the labels' weights file"
    );

    let classify = |heads: Option<&Path>, text: &str| {
        let mut a = vec!["classify".to_string(), "--json".into()];
        if let Some(h) = heads {
            a.extend(["--heads".into(), path(h)]);
        }
        a.push(text.into());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = switchyard_ok(&a, None);
        serde_json::from_str::<Value>(out.trim()).expect("json")
    };
    let chat = "hi there, how are you doing today, friend number 7?";
    let exam =
        "A 45-year-old man presents with progressive dyspnea, bilateral hilar lymphadenopathy \
                 and elevated serum ACE. Which of the following is the most likely finding on \
                 transbronchial biopsy? A. caseating granulomas B. non-caseating granulomas \
                 C. Reed-Sternberg cells D. asbestos bodies E. eosinophilic infiltrates";
    for text in [chat, exam] {
        let (built_in, tuned) = (classify(None, text), classify(Some(&out_dir), text));
        assert_eq!(
            built_in["categories"], tuned["categories"],
            "the category head is the base's"
        );
    }
    let (built_in, tuned) = (
        |t| classify(None, t)["strong_score"].as_f64().expect("score"),
        |t| {
            classify(Some(&out_dir), t)["strong_score"]
                .as_f64()
                .expect("score")
        },
    );
    assert!(
        built_in(exam) > built_in(chat),
        "the base ranks the exam question harder"
    );
    assert!(
        tuned(chat) > tuned(exam),
        "the labels turned the order round"
    );

    // eval-router on labels that say the same (small talk hard, exam questions easy): the tuned
    // heads beat the built-in ones by more than the bootstrap's spread.
    let exam_labels = tmp.path().join("exam-labels.jsonl");
    let rows: String = (0..120)
        .map(|i| {
            let (prompt, label) = if i % 2 == 0 {
                (
                    format!("hi there, how are you doing today, friend number {i}?"),
                    1.0,
                )
            } else {
                (
                    exam.replace("45-year-old", &format!("{}-year-old", 20 + i)),
                    0.0,
                )
            };
            format!(
                "{}\n",
                json!({"id": i.to_string(), "prompt": prompt, "model": "odd-box",
                    "strong_label": label, "graded": "gold"})
            )
        })
        .collect();
    std::fs::write(&exam_labels, rows).expect("write labels");
    let out = switchyard_ok(
        &[
            "eval-router",
            "--labels",
            &path(&exam_labels),
            "--validation",
            "0.5",
            "--heads",
            &path(&out_dir),
        ],
        None,
    );
    let held = out
        .split(" of 120 rows")
        .next()
        .and_then(|h| h.rsplit('(').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no held-out count:\n{out}"));
    let (low, median, high) = difference_interval(&out, held);
    assert!(0.0 < low && low <= median && median <= high, "{out}");

    // --base needs labels, reads no training folder, and must name heads that exist.
    let (labels, out, missing) = (
        path(&labels),
        path(&out_dir),
        path(&tmp.path().join("none")),
    );
    let refused = [
        (vec!["--base", "builtin"], "--labels"),
        (
            vec!["--base", "builtin", "--labels", &labels, "--data", "x"],
            "--data",
        ),
        (vec!["--base", &missing, "--labels", &labels], "base heads"),
        (
            vec!["--base", "builtin", "--labels", &labels, "--layers", "1"],
            "differ from the base heads' layers",
        ),
    ];
    for (args, says) in refused {
        let mut all = vec!["train-router", "--out", &out];
        all.extend(args);
        let o = switchyard(&all, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{all:?}: {err}");
    }
}

/// A training folder in the layout of ../shared/data/train, with made-up rows.
fn write_train_fixture(dir: &Path) {
    let w = |rel: &str, text: String| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    let weak = switchyard::classifier::data::MMLU_WEAK;
    let mut header = vec!["question_id", "category", "src"];
    header.extend(weak.iter());
    let mut questions = String::new();
    let mut csv = header.join(",") + "\n";
    for i in 0..40 {
        let hard = i % 2 == 0;
        let category = if i % 4 == 0 { "math" } else { "history" };
        let q = if hard {
            format!("Compute the {i}th derivative of a product of three special functions and simplify.")
        } else {
            format!("In which year did event number {i} happen?")
        };
        questions += &format!(
            "{}\n",
            json!({"question_id": i, "category": category, "question": q, "options": ["1", "2", "3", "4"]})
        );
        let cells: Vec<&str> = weak.iter().map(|_| if hard { "0" } else { "1" }).collect();
        csv += &format!("{i},{category},x,{}\n", cells.join(","));
    }
    w("mmlu_pro/questions.jsonl", questions);
    w("mmlu_pro/correctness.csv", csv);
    let gsm: String = (0..20)
        .map(|i| {
            let steps = "<<1+1=2>>".repeat(i % 5 + 1);
            format!("{}\n", json!({"question": format!("Tom has {i} apples and buys more. How many?"), "answer": steps}))
        })
        .collect();
    w("gsm8k/train.jsonl", gsm);
}

#[test]
fn train_router_is_deterministic_and_refuses_evaluation_data() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = |out: &str| {
        let (o, _) = train_on_fixture(tmp.path(), out, 10, &[]);
        let out_dir = tmp.path().join(out);
        assert!(
            o.status.success(),
            "{}{}",
            stdout(&o),
            String::from_utf8_lossy(&o.stderr)
        );
        (stdout(&o), out_dir)
    };
    let (log, a) = run("a");
    assert!(log.contains("examples: "), "{log}");
    assert!(
        log.contains("epoch   1") && log.contains("epoch  10"),
        "training curve: {log}"
    );
    assert!(log.contains("validation"), "{log}");
    let (_, b) = run("b");
    for f in ["heads.safetensors", "labels.json"] {
        let x = std::fs::read(a.join(f)).expect("read");
        assert!(!x.is_empty());
        assert_eq!(
            x,
            std::fs::read(b.join(f)).expect("read"),
            "{f} differs between runs"
        );
    }
    // The trained heads load and score text.
    let o = switchyard(
        &[
            "classify",
            "--json",
            "--heads",
            a.to_str().expect("path"),
            "What is 2+2?",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let eval = tmp.path().join("eval");
    std::fs::create_dir_all(eval.join("routellm")).expect("mkdir");
    let o = switchyard(
        &[
            "train-router",
            "--data",
            eval.to_str().expect("path"),
            "--out",
            tmp.path().join("c").to_str().expect("path"),
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("evaluation data"));
}

/// `train-router` on [`write_train_fixture`]'s folder under `tmp`, into `tmp/out`, for `epochs`
/// epochs, without the embedding cache: its output and the heads folder.
fn train_on_fixture(tmp: &Path, out: &str, epochs: usize, extra: &[&str]) -> (Output, String) {
    let data = tmp.join("train");
    if !data.exists() {
        write_train_fixture(&data);
    }
    let (data, out) = (
        data.to_str().expect("path").to_string(),
        tmp.join(out).to_str().expect("path").to_string(),
    );
    let epochs = epochs.to_string();
    let mut args = vec![
        "train-router",
        "--data",
        &data,
        "--out",
        &out,
        "--epochs",
        &epochs,
        "--no-cache",
    ];
    args.extend(extra);
    (switchyard(&args, None), out)
}

#[test]
fn train_router_pools_the_layers_asked_for() {
    let tmp = tempfile::tempdir().expect("tmp");
    let train = |extra: &[&str]| train_on_fixture(tmp.path(), "heads", 3, extra).0;
    let out = tmp.path().join("heads").to_str().expect("path").to_string();
    let o = train(&["--layers", "3,6"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("heads/labels.json")).expect("read"))
            .expect("json");
    assert_eq!(meta["layers"], json!([3, 6]));
    // The heads are read with the layers they were trained on.
    let printed = switchyard_ok(
        &["classify", "--heads", &out, "--embedding", "-"],
        Some("{\"prompt\": \"What is 2+2?\"}\n"),
    );
    let row: Value = serde_json::from_str(printed.trim()).expect("json");
    assert_eq!(row["embedding"].as_array().map(Vec::len), Some(2 * 384));
    assert!(row["strong_score"].as_f64().is_some(), "{row}");

    // A strong head on a subset of the layers.
    let o = train(&["--layers", "3,6", "--strong-layers", "6"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("heads/labels.json")).expect("read"))
            .expect("json");
    assert_eq!(meta["strong_layers"], json!([6]));
    let o = switchyard(
        &["classify", "--json", "--heads", &out, "What is 2+2?"],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let refused: [(&[&str], &str); 3] = [
        (&["--layers", "2,9"], "layer 9"),
        (&["--layers", "4,4"], "twice"),
        (
            &["--layers", "2,4", "--strong-layers", "6"],
            "not among the pooled layers",
        ),
    ];
    for (args, says) in refused {
        let o = train(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn train_router_trains_strong_experts_that_mix_by_category() {
    use switchyard::classifier::heads::Heads;
    let tmp = tempfile::tempdir().expect("tmp");
    let path = |p: &Path| p.to_str().expect("path").to_string();
    let train = |out: &str, extra: &[&str]| train_on_fixture(tmp.path(), out, 30, extra);
    // By default, the built-in heads' layout: a maths expert on layers 2, 4 and 6.
    let (o, with) = train("with", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("strong math epoch   1"),
        "{}",
        stdout(&o)
    );
    let experts = Heads::load(Path::new(&with)).expect("load");
    assert_eq!(experts.labels.layers, vec![2, 4, 6]);
    assert_eq!(experts.labels.strong_experts.len(), 1);
    assert_eq!(experts.labels.strong_experts[0].to_string(), "math=2,4,6");
    let (o, without) = train("without", &["--strong-expert", "none"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plain = Heads::load(Path::new(&without)).expect("load");
    assert!(plain.labels.strong_experts.is_empty() && plain.experts.is_empty());
    // Experts train after the other heads, which stay as they were.
    let values = |t: &candle_core::Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
    for (a, b) in [
        (&experts.category.w1, &plain.category.w1),
        (&experts.strong.w1, &plain.strong.w1),
        (&experts.strong.b2, &plain.strong.b2),
    ] {
        assert_eq!(values(a).expect("a"), values(b).expect("b"));
    }

    // The served score is the mixture: the maths expert weighs P(math), the main head the rest.
    let text = "Tom has 7 apples and buys 5 more. How many apples does he have?";
    let row = format!("{}\n", json!({ "prompt": text }));
    let out = switchyard_ok(
        &["classify", "--heads", &with, "--embedding", "-"],
        Some(&row),
    );
    let row: Value = serde_json::from_str(out.trim()).expect("json");
    let embedding: Vec<f32> = serde_json::from_value(row["embedding"].clone()).expect("embedding");
    let served = row["strong_score"].as_f64().expect("score");
    let p_math = row["categories"]["math"].as_f64().expect("p(math)");
    let main = plain
        .apply(std::slice::from_ref(&embedding))
        .expect("apply")[0]
        .strong_score;
    let mut alone = plain.clone();
    alone.strong = experts.experts[0].clone();
    alone.labels.strong_layers = vec![2, 4, 6];
    let expert = alone.apply(&[embedding]).expect("apply")[0].strong_score;
    let mixed = (1.0 - p_math) * f64::from(main) + p_math * f64::from(expert);
    let parts = row["strong_parts"].as_array().expect("strong_parts");
    assert_eq!(parts.len(), 2, "{row}");
    assert_eq!(
        (parts[0]["head"].as_str(), parts[1]["head"].as_str()),
        (Some("strong"), Some("math"))
    );
    assert!(
        (parts[1]["weight"].as_f64().expect("weight") - p_math).abs() < 1e-3,
        "{row}"
    );
    assert!(
        (served - mixed).abs() < 1e-3,
        "served {served}, mixture {mixed} (p_math {p_math}, main {main}, expert {expert})"
    );
    assert!(
        p_math * f64::from((main - expert).abs()) > 2e-3,
        "the expert weighs enough to tell the mixture from the main head alone: p_math {p_math}, \
         main {main}, expert {expert}"
    );

    let refused: [(&[&str], &str); 4] = [
        (&["--strong-expert", "poetry=6"], "no category `poetry`"),
        (
            &["--strong-expert", "math=3"],
            "not among the pooled layers",
        ),
        (&["--strong-expert", "=2"], "CATEGORY"),
        (
            &[
                "--strong-expert",
                "math=6",
                "--strong-expert",
                "code+math=6",
            ],
            "has another expert",
        ),
    ];
    for (args, says) in refused {
        let (o, _) = train("refused", args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    }
    let labels = tmp.path().join("labels.jsonl");
    write_labels(&labels, "box", 20, |i| format!("question {i}"));
    let o = switchyard(
        &[
            "train-router",
            "--base",
            "builtin",
            "--labels",
            &path(&labels),
            "--strong-expert",
            "code=6",
            "--out",
            &path(&tmp.path().join("b")),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("differ from the base heads'"),
        "{err}"
    );
}

#[test]
fn eval_router_reports_apgr_beside_random() {
    let tmp = tempfile::tempdir().expect("tmp");
    let eval = tmp.path().join("eval");
    std::fs::create_dir_all(eval.join("routellm")).expect("mkdir");
    std::fs::create_dir_all(eval.join("categories")).expect("mkdir");
    let bench = |name: &str, rows: Vec<Value>| {
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(eval.join(format!("routellm/{name}.jsonl")), text).expect("write");
    };
    let mc = |i: usize, hard: bool| {
        json!({"prompt": if hard { format!("Evaluate the contour integral number {i} around the unit circle.\nA. 0\nB. 1\nAnswer:") } else { format!("What colour is the sky on a clear day (case {i})?\nA. blue\nB. red\nAnswer:") },
               "weak_correct": !hard, "strong_correct": true})
    };
    bench("mmlu", (0..10).map(|i| mc(i, i % 2 == 0)).collect());
    bench("gsm8k", (0..10).map(|i| mc(i, i % 3 == 0)).collect());
    bench(
        "mt_bench",
        vec![
            json!({"prompt": "Write a haiku about spring.", "weak_score": 8.0, "strong_score": 9.0}),
            json!({"prompt": "Prove that sqrt(2) is irrational.", "weak_score": 3.0, "strong_score": 9.0}),
        ],
    );
    std::fs::write(
        eval.join("categories/mt_vicuna.jsonl"),
        format!(
            "{}\n{}\n",
            json!({"prompt": "Write a poem about cats.", "category": "writing"}),
            json!({"prompt": "Write a C function that reverses a string.", "category": "coding"})
        ),
    )
    .expect("write");
    let out = switchyard_ok(
        &[
            "eval-router",
            "--data",
            eval.to_str().expect("path"),
            "--no-cache",
        ],
        None,
    );
    for b in [
        "| mmlu | 10 | random (expected) | 0.500 | - |",
        "| gsm8k | 10 |",
        "| mt_bench | 2 |",
        "switchyard strong_score",
        "macro-F1",
    ] {
        assert!(out.contains(b), "{b} missing:\n{out}");
    }
    // Each learned router's APGR comes with its bootstrap interval, which holds the APGR.
    let ours = out
        .lines()
        .find(|l| l.starts_with("| mmlu | 10 | switchyard strong_score |"))
        .unwrap_or_else(|| panic!("no mmlu row:\n{out}"));
    let cells: Vec<&str> = ours.split('|').map(str::trim).collect();
    let apgr: f64 = cells[4].parse().expect("apgr");
    let (low, high) = cells[5].split_once(" to ").expect("interval");
    let (low, high): (f64, f64) = (low.parse().expect("low"), high.parse().expect("high"));
    assert!(low <= apgr && apgr <= high && low < high, "{ours}");
    assert!(
        !out.contains("minus the built-in"),
        "no --heads, no pairing:\n{out}"
    );

    // With --heads, each benchmark also gets the paired interval against the built-in heads:
    // the built-in heads' own folder differs from them by nothing on every resample.
    let builtin = concat!(env!("CARGO_MANIFEST_DIR"), "/src/classifier/trained");
    let out = switchyard_ok(
        &[
            "eval-router",
            "--data",
            eval.to_str().expect("path"),
            "--no-cache",
            "--heads",
            builtin,
        ],
        None,
    );
    for b in [
        "mmlu (10 prompts)",
        "gsm8k (10 prompts)",
        "mt_bench (2 prompts)",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(b))
            .unwrap_or_else(|| panic!("{b} missing:\n{out}"));
        assert!(
            line.ends_with("median +0.000, 5th to 95th percentile +0.000 to +0.000"),
            "{line}"
        );
    }
}

/// `SWITCHYARD_KERNEL` lowers the kernel tier of a run (set on the child process, as a user
/// would): every tier this CPU runs gives the same classification, and a value that names no
/// tier is refused before anything runs.
#[test]
fn each_kernel_tier_classifies_alike_and_a_bad_setting_is_refused() {
    let run = |tier: &str| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "classify",
                "--json",
                "Prove that the square root of two is irrational.",
            ])
            .arg("--encoder")
            .arg(common::encoder_path())
            .env("SWITCHYARD_KERNEL", tier)
            .output()
            .expect("run switchyard")
    };
    let mut outputs = vec![];
    switchyard::cpu::for_each_supported_path(|path| {
        let o = run(path.as_str());
        assert!(
            o.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_str(stdout(&o).trim()).expect("json");
        outputs.push((path, v));
    });
    let (_, first) = &outputs[0];
    for (path, v) in &outputs[1..] {
        assert_eq!(v["category"], first["category"], "{path}");
        let (a, b) = (v["strong_score"].as_f64(), first["strong_score"].as_f64());
        assert!(
            (a.unwrap() - b.unwrap()).abs() < 1e-4,
            "{path}: {a:?} vs {b:?}"
        );
    }
    let o = run("sse9");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("SWITCHYARD_KERNEL=`sse9` is not a kernel tier"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `train-router --labels --labels-share` keeps the training folder's strong labels and learns
/// the labels beside them; without it the labels replace them.
#[test]
fn labels_can_be_learned_beside_the_folders_strong_labels() {
    let tmp = tempfile::tempdir().expect("tmp");
    let labels = tmp.path().join("labels.jsonl");
    write_labels(&labels, "box", 60, |i| {
        format!("Prove the bound on the spectral gap of random regular graph family {i} and derive its constant.")
    });
    let labels = labels.to_str().expect("path").to_string();
    let (beside, out) = train_on_fixture(
        tmp.path(),
        "beside",
        5,
        &[
            "--labels",
            &labels,
            "--labels-share",
            "0.5",
            "--validation",
            "0.3",
        ],
    );
    let log = stdout(&beside);
    assert!(
        beside.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&beside.stderr)
    );
    assert!(
        log.contains("\nstrong-score rows: 100 (mmlu_pro 40, labels 60)\n"),
        "the folder's strong labels stay: {log}"
    );
    assert!(
        log.contains("validation APGR on held-out labels: "),
        "{log}"
    );
    let meta: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&out).join("labels.json")).expect("read"))
            .expect("json");
    assert_eq!(meta["model"], "box");
    let said = meta["strong_label"].as_str().expect("strong_label");
    assert!(
        said.starts_with("share of small models") && said.contains("beside it, at share 0.5"),
        "{said}"
    );

    let (replaced, _) = train_on_fixture(
        tmp.path(),
        "replaced",
        5,
        &["--labels", &labels, "--validation", "0.3"],
    );
    let log = stdout(&replaced);
    assert!(replaced.status.success(), "{log}");
    assert!(
        log.contains("\nstrong-score rows: 60 (labels 60)\n"),
        "the labels replace the folder's: {log}"
    );

    for (args, says) in [
        (
            vec!["--labels", &labels, "--labels-share", "0"],
            "not a share above 0",
        ),
        (vec!["--labels-share", "1"], "--labels"),
    ] {
        let (o, _) = train_on_fixture(tmp.path(), "refused", 1, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    }
}

/// `train-router --labels` learns the strong score from `switchyard label` rows (here: the
/// on-box model fails every "hard" question and answers every "easy" one) and records the
/// model in the heads; `eval-router --labels` scores the held-out rows, the trained heads
/// beside the built-in ones.
#[test]
fn heads_trained_on_labels_score_their_held_out_rows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("train");
    write_train_fixture(&data);
    let labels = tmp.path().join("labels.jsonl");
    write_labels(&labels, "tiny-box", 200, |i| {
        format!("Prove the bound on the spectral gap of random regular graph family {i} and derive its constant.")
    });
    let out_dir = tmp.path().join("heads");
    let log = switchyard_ok(
        &[
            "train-router",
            "--data",
            data.to_str().expect("path"),
            "--labels",
            labels.to_str().expect("path"),
            "--out",
            out_dir.to_str().expect("path"),
            "--epochs",
            "30",
            "--no-cache",
        ],
        None,
    );
    assert!(
        log.contains("validation APGR on held-out labels: "),
        "{log}"
    );
    let meta: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("labels.json")).expect("read"))
            .expect("json");
    assert_eq!(meta["model"], "tiny-box");

    let out = switchyard_ok(
        &[
            "eval-router",
            "--labels",
            labels.to_str().expect("path"),
            "--heads",
            out_dir.to_str().expect("path"),
        ],
        None,
    );
    assert!(out.contains("Held-out labels of `tiny-box`"), "{out}");
    assert!(out.contains("| random (expected) | 0.500 |"), "{out}");
    assert!(out.contains("| built-in |"), "{out}");
    // The labels separate by text, so the heads trained on them route the failed questions first:
    // with 5 of 11 held-out rows failed, a perfect order scores 1 - 5/22 = 0.773.
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("| {} |", out_dir.display())))
        .unwrap_or_else(|| panic!("no row for the trained heads:\n{out}"));
    let apgr: f64 = line
        .split('|')
        .nth(2)
        .and_then(|c| c.trim().parse().ok())
        .expect("apgr");
    assert!(apgr > 0.75, "{out}");
    // Both heads order these rows alike, so the paired difference is nil in every resample.
    assert_eq!(difference_interval(&out, 11), (0.0, 0.0, 0.0), "{out}");

    // A policy gives those heads to its on-box model: its rules read that model's score.
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nmodels:\n  tiny-box: {{ kind: local, heads: \"{}\" }}\n  cloud: {{ kind: openai, base_url: \"http://127.0.0.1:9/v1\", api_key: sk-x }}\nrules:\n  - {{ name: hard, when: {{ strong_score: {{ above: 0.5 }} }}, route: cloud }}\ndefault: {{ route: tiny-box }}\n",
            out_dir.display()
        ),
    )
    .expect("write");
    let explain = |text: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["policy", "explain", "--policy"])
            .arg(&policy)
            .arg(text)
            .output()
            .expect("explain");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        stdout(&o)
    };
    let hard = explain("Prove the bound on the spectral gap of random regular graph family 7 and derive its constant.");
    assert!(hard.contains("decision: cloud"), "{hard}");
    let easy = explain("Say hello to my friend number 7.");
    assert!(easy.contains("strong_score (for tiny-box)"), "{easy}");
    assert!(easy.contains("decision: tiny-box"), "{easy}");
}

/// A policy's model heads read other encoder layers than the shared heads: one encoder pass pools
/// both, and each heads score exactly what they score alone.
#[test]
fn model_heads_on_other_layers_score_as_they_do_alone() {
    use switchyard::classifier::{Classifier, RouterModel};
    use switchyard::policy::ClassifierSettings;
    let tmp = tempfile::tempdir().expect("tmp");
    let encoder = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let texts = [
        "What is 2+2?",
        "Write a sonnet about the sea at night.",
        "Summarise this paragraph in one sentence: the meeting moved to Tuesday because the room was booked.",
    ];
    for layers in ["3", "6", "1,4"] {
        let name = format!("heads-{layers}");
        let (o, _) = train_on_fixture(tmp.path(), &name, 3, &["--layers", layers]);
        let dir = tmp.path().join(name);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let settings = |heads: Option<&Path>, model: Option<&Path>| ClassifierSettings {
            encoder: encoder.clone(),
            heads: heads.map(Path::to_path_buf),
            model_heads: model
                .map(|m| vec![("box".to_string(), m.to_path_buf())])
                .unwrap_or_default(),
            ..ClassifierSettings::default()
        };
        let load = |s: ClassifierSettings| Classifier::from_settings(&s).expect("classifier");
        let both = load(settings(None, Some(&dir)));
        let shared_alone = load(settings(None, None));
        let model_alone = load(settings(Some(&dir), None));
        for text in texts {
            let b = both.classify(&[text]).expect("both").remove(0);
            let s = shared_alone.classify(&[text]).expect("shared").remove(0);
            let m = model_alone.classify(&[text]).expect("model").remove(0);
            let close = |x: f32, y: f32| (x - y).abs() < 1e-5;
            assert!(close(b.strong_score, s.strong_score), "{layers}: {text}");
            assert_eq!(b.categories.len(), s.categories.len());
            for ((c1, p1), (c2, p2)) in b.categories.iter().zip(&s.categories) {
                assert!(
                    c1 == c2 && close(*p1, *p2),
                    "{layers}: {text}: {c1} {p1} / {c2} {p2}"
                );
            }
            assert_eq!(b.strong_by_model.len(), 1);
            assert!(
                close(b.strong_by_model[0].1, m.strong_score),
                "{layers}: {text}: {} vs {}",
                b.strong_by_model[0].1,
                m.strong_score
            );
        }
    }
}

/// The row of `train-router --seed A,B --labels`'s check table for `seed`: (held out, on-box
/// worse, built-in APGR, trained APGR, (5th percentile, median, 95th percentile)).
fn seed_check(log: &str, seed: u64) -> (usize, usize, f64, f64, (f64, f64, f64)) {
    let line = log
        .lines()
        .find(|l| l.starts_with(&format!("| {seed} | ")))
        .unwrap_or_else(|| panic!("no check row for seed {seed}:\n{log}"));
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    let num = |s: &str| -> f64 {
        s.trim_start_matches('+')
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {s:?} in {line}"))
    };
    let (median, interval) = cells[6].split_once(" (").expect("interval");
    let (low, high) = interval
        .trim_end_matches(')')
        .split_once(" to ")
        .expect("to");
    (
        num(cells[2]) as usize,
        num(cells[3]) as usize,
        num(cells[4]),
        num(cells[5]),
        (num(low), num(median), num(high)),
    )
}

/// `train-router --seed 7,1 --labels` trains once per seed, writes the first seed's heads, and
/// checks each seed's heads against the built-in ones on that seed's held-out labels: the rows
/// and numbers `eval-router --labels --seed N` gives, and a verdict that needs every seed.
#[test]
fn train_router_checks_each_seed_against_the_built_in_heads() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = |p: &Path| p.to_str().expect("path").to_string();
    let train = |labels: &Path, out: &Path, validation: &str| {
        switchyard_ok(
            &[
                "train-router",
                "--base",
                "builtin",
                "--labels",
                &path(labels),
                "--seed",
                "7,1",
                "--validation",
                validation,
                "--out",
                &path(out),
                "--epochs",
                "60",
                "--no-cache",
            ],
            None,
        )
    };
    // 160 label rows, half short fact questions and half clinical exam questions (which the
    // built-in heads score far above the fact questions), `exam_hard` saying which half the
    // on-box model fails.
    let write = |file: &str, exam_hard: bool| {
        let rows: String = (0..160)
            .map(|i| {
                let exam = i % 2 == 0;
                let prompt = if exam {
                    format!(
                        "A {}-year-old man presents with progressive dyspnea, bilateral hilar \
                         lymphadenopathy and elevated serum ACE. Which of the following is the \
                         most likely finding on transbronchial biopsy? A. caseating granulomas \
                         B. non-caseating granulomas C. Reed-Sternberg cells D. asbestos bodies",
                        20 + i
                    )
                } else {
                    format!("What is the capital of country number {i}?")
                };
                let label = if exam == exam_hard { 1.0 } else { 0.0 };
                format!(
                    "{}\n",
                    json!({"id": i.to_string(), "prompt": prompt, "model": "odd-box",
                        "strong_label": label, "graded": "gold"})
                )
            })
            .collect();
        let path = tmp.path().join(file);
        std::fs::write(&path, rows).expect("write labels");
        path
    };
    // Labels that turn the built-in order round (fact questions hard for this model, exam
    // questions easy): the calibration wins at both seeds.
    let odd = write("odd.jsonl", false);
    let heads = tmp.path().join("odd-heads");
    let log = train(&odd, &heads, "0.3");
    assert!(
        log.contains("\nseed 7:\n") && log.contains("\nseed 1:\n"),
        "{log}"
    );
    assert_eq!(
        log.matches("wrote ").count(),
        1,
        "one folder written: {log}"
    );
    for seed in [7, 1] {
        let (held, worse, built_in, trained, (low, median, high)) = seed_check(&log, seed);
        assert!(held > 0 && worse > 0 && worse < held, "{log}");
        assert!(trained > built_in, "seed {seed}: {log}");
        assert!(
            0.0 < low && low <= median && median <= high,
            "seed {seed}: {log}"
        );
    }
    assert!(
        log.contains("verdict: better than the built-in heads at every seed (2 splits)"),
        "{log}"
    );
    // The folder holds seed 7's heads: eval-router scores the same rows to the same numbers.
    let out = switchyard_ok(
        &[
            "eval-router",
            "--labels",
            &path(&odd),
            "--seed",
            "7",
            "--validation",
            "0.3",
            "--heads",
            &path(&heads),
        ],
        None,
    );
    let (held, worse, built_in, trained, (low, median, high)) = seed_check(&log, 7);
    assert!(
        out.contains(&format!(
            "({held} of 160 rows, seed 7; the on-box answer is worse on {worse})"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("| built-in | {built_in:.3} |")),
        "{out}"
    );
    assert!(
        out.contains(&format!("| {} | {trained:.3} |", heads.display())),
        "{out}"
    );
    let eval_interval = difference_interval(&out, held);
    assert_eq!(eval_interval, (low, median, high), "{out}\n{log}");
    // The heads record their split: without --seed and --validation, eval-router scores the
    // same rows; with another seed, it refuses (those rows were partly trained on).
    let recorded: Value =
        serde_json::from_slice(&std::fs::read(heads.join("labels.json")).expect("read"))
            .expect("json");
    assert_eq!(recorded["held_out"]["seed"], 7);
    assert_eq!(recorded["held_out"]["validation"], 0.3);
    let again = switchyard_ok(
        &[
            "eval-router",
            "--labels",
            &path(&odd),
            "--heads",
            &path(&heads),
        ],
        None,
    );
    assert_eq!(
        difference_interval(&again, held),
        (low, median, high),
        "{again}"
    );
    let o = switchyard(
        &[
            "eval-router",
            "--labels",
            &path(&odd),
            "--seed",
            "1",
            "--heads",
            &path(&heads),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("trained holding out --seed 7 --validation 0.3"),
        "{err}"
    );

    // Labels the built-in heads already order perfectly (exam questions hard, fact questions
    // easy): no calibration can beat them, and the verdict keeps them.
    let agree = write("agree.jsonl", true);
    let log = train(&agree, &tmp.path().join("agree-heads"), "0.3");
    let (_, _, built_in, _, (low, _, _)) = seed_check(&log, 1);
    assert!(built_in > 0.6 && low <= 0.0, "{log}");
    assert!(
        log.contains("verdict: not better than the built-in heads at seeds 7, 1"),
        "{log}"
    );
    // Heads trained on every label (nothing held out) are written; there is nothing to check.
    let all = tmp.path().join("all-heads");
    let log = train(&agree, &all, "0");
    assert!(all.join("heads.safetensors").exists(), "{log}");
    assert!(
        log.contains("no label row is held out with seed 1 and validation 0")
            && !log.contains("verdict"),
        "{log}"
    );
}

/// The heads shipped for `scripts/serve.sh`'s default model (policies/heads/, trained by
/// `train-router --base builtin --labels` on the labels beside them, seed 7) beat the built-in
/// heads on the labels that training held out, by a paired interval above zero; and the default
/// policy gives them to its on-box model only when `SWITCHYARD_LOCAL_HEADS` names them.
#[test]
fn the_default_models_shipped_heads_beat_the_built_in_ones_on_their_held_out_labels() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let heads = repo.join("policies/heads/qwen2.5-coder-1.5b-instruct-q4_k_m");
    let labels = heads.join("gsm8k-labels.jsonl");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(heads.join("labels.json")).expect("read"))
            .expect("json");
    assert_eq!(meta["model"], "on-box");
    let file = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";
    assert_eq!(meta["model_file"], file);
    // They record the split of these very rows that training held out.
    assert_eq!(
        meta["held_out"]["labels_sha256"],
        switchyard::classifier::data::file_sha256(&labels).expect("sha256")
    );
    let rows = std::fs::read_to_string(&labels).expect("labels");
    let rows: Vec<Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).expect("label row"))
        .collect();
    assert!(
        rows.iter()
            .all(|r| r["model"] == "on-box" && r["model_file"] == file && r["graded"] == "gold"),
        "every row gold-graded for the on-box model"
    );

    let out = switchyard_ok(
        &[
            "eval-router",
            "--labels",
            labels.to_str().expect("path"),
            "--validation",
            "0.3",
            "--seed",
            "7",
            "--heads",
            heads.to_str().expect("path"),
            "--no-cache",
        ],
        None,
    );
    // Seed 7 holds out 949 of the 3,000 rows, as train-router did.
    let (low, median, high) = difference_interval(&out, 949);
    assert!(low > 0.0 && median > low && high > median, "{out}");

    // The default policy reads the on-box model's own score only with the heads named.
    let policy = repo.join("policies/default.yaml");
    let explain = |heads_env: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        c.args(["policy", "explain", "--policy"])
            .arg(&policy)
            .arg("Tell me about the history of the Roman senate and how it lost power.")
            .env_remove("SWITCHYARD_LOCAL_HEADS");
        if let Some(h) = heads_env {
            c.env("SWITCHYARD_LOCAL_HEADS", h);
        }
        let o = c.output().expect("explain");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        stdout(&o)
    };
    let shared = explain(None);
    let calibrated = explain(Some(&heads));
    // The rule the classifier decides on reads the shared score, or the on-box model's own.
    assert!(shared.contains("hard-for-small-model"), "{shared}");
    assert!(!shared.contains("(for on-box)"), "{shared}");
    assert!(!shared.contains("its own heads"), "{shared}");
    assert!(
        calibrated.contains("strong_score for on-box (its own heads): 0."),
        "{calibrated}"
    );
    assert!(
        calibrated.contains("strong_score (for on-box)"),
        "{calibrated}"
    );
}
