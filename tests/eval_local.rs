//! `switchyard eval-local` on the real on-box model (SmolLM2) over a small folder in the layout
//! of ../shared/data/train: every question graded (extracted answer against gold, as the summary
//! counts it), the same sample for the same seed, and its speed reported.

mod common;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Four GSM8K rows and four MMLU-Pro rows, in the training data's shapes.
fn write_fixture(dir: &Path) {
    let w = |rel: &str, rows: Vec<Value>| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(p, text).expect("write");
    };
    w(
        "gsm8k/train.jsonl",
        (1..=4)
            .map(|i| {
                json!({"question": format!("Tom has {i} apples and buys {i} more. How many apples does he have?"),
                    "answer": format!("{i}+{i}=<<{i}+{i}={}>>{}\n#### {}", 2 * i, 2 * i, 2 * i)})
            })
            .collect(),
    );
    w(
        "mmlu_pro/questions.jsonl",
        (1..=4)
            .map(|i| {
                let letter = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"][i];
                json!({"question_id": 100 + i, "category": "math", "src": "fixture",
                    "question": format!("What is {i} + 1?"),
                    "options": ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
                    "answer": letter, "answer_index": i})
            })
            .collect(),
    );
}

fn eval(data: &Path, seed: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["eval-local", "--model"])
        .arg(common::smollm2_path())
        .arg("--data")
        .arg(data)
        .args([
            "--gsm8k",
            "2",
            "--mmlu-pro",
            "2",
            "--max-tokens",
            "24",
            "--threads",
            "1",
            "--seed",
            seed,
            "--json",
        ])
        .output()
        .expect("run switchyard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn eval_local_grades_every_answer_and_sums_them_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_fixture(dir.path());
    let lines = eval(dir.path(), "7");
    assert_eq!(lines.len(), 5, "{lines:?}");
    let (questions, summary) = lines.split_at(4);
    for q in questions {
        let correct = q["extracted"].is_string() && q["extracted"] == q["gold"];
        assert_eq!(q["correct"], json!(correct), "{q}");
        assert!(q["completion_tokens"].as_u64().unwrap_or(0) <= 24, "{q}");
    }
    let summary = &summary[0];
    assert_eq!(summary["tasks"].as_array().map(Vec::len), Some(2));
    for (i, task) in ["gsm8k", "mmlu_pro"].iter().enumerate() {
        let t = &summary["tasks"][i];
        assert_eq!(t["task"], *task);
        assert_eq!(t["questions"], 2);
        let correct = questions
            .iter()
            .filter(|q| q["task"] == *task && q["correct"] == json!(true))
            .count();
        assert_eq!(t["correct"], correct);
        assert!(
            t["decode_tokens_per_s"].as_f64().unwrap_or(0.0) > 0.0,
            "{t}"
        );
    }
    // The same seed asks the same questions; another seed draws another sample.
    let ids =
        |lines: &[Value]| -> Vec<Value> { lines[..4].iter().map(|q| q["id"].clone()).collect() };
    assert_eq!(ids(&eval(dir.path(), "7")), ids(&lines));
    assert_ne!(ids(&eval(dir.path(), "8")), ids(&lines));
}
