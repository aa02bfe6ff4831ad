//! `switchyard label` as a user runs it: SmolLM2 (a real on-box model) answers rows, graded
//! against their gold answers, or compared by a cloud judge (the fake upstream of
//! `tests/common`, rating every candidate 2); the run resumes where an earlier one stopped,
//! stops starting judged rows at `--max-usd`, and sends the judge placeholders with `--redact`.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

fn label(policy: &Path, input: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "label",
            "--model",
            "smollm2-135m",
            "--max-tokens",
            "48",
            "--policy",
        ])
        .arg(policy)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("label");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A policy in `dir` whose one model is SmolLM2, on the box.
fn smollm2_only_policy(dir: &Path) -> std::path::PathBuf {
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nmodels:\n  smollm2-135m: {{ kind: local, path: \"{}\" }}\ndefault: {{ route: smollm2-135m }}\n",
            smollm2_path().display()
        ),
    )
    .expect("write");
    policy
}

fn rows(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

/// A fake judge, a temporary folder with [`judge_policy`] in it, and `rows` written to its
/// `rows.jsonl`: (judge, folder, policy, rows).
async fn judged_rows(
    rows: &str,
) -> (
    FakeUpstream,
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let policy = judge_policy(tmp.path(), &up);
    let input = tmp.path().join("rows.jsonl");
    std::fs::write(&input, rows).expect("write");
    (up, tmp, policy, input)
}

/// A policy in `dir` with SmolLM2 on the box and `judge`, the fake upstream rating 2 of 5.
fn judge_policy(dir: &Path, up: &FakeUpstream) -> std::path::PathBuf {
    let policy = dir.join("policy.yaml");
    let text = format!(
        r#"version: 1
models:
  smollm2-135m: {{ kind: local, path: "{}" }}
  judge:
    kind: openai
    base_url: "{}"
    api_key: sk-test
    price: {{ input_per_million: 1000, output_per_million: 1000 }}
default: {{ route: smollm2-135m }}
"#,
        smollm2_path().display(),
        up.base("judge-2")
    );
    std::fs::write(&policy, text).expect("write");
    policy
}

/// `--redact`: the judge is sent placeholders where the row holds private data, the same value
/// the same placeholder in the question and the answers; the labels file keeps the row as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judge_can_be_sent_placeholders_instead_of_private_data() {
    let (up, tmp, policy, input) = judged_rows(
        "{\"id\": \"mail\", \"messages\": [{\"role\": \"user\", \"content\": \"Repeat this address: dana.okafor@example.com\"}]}\n",
    )
    .await;
    let out = tmp.path().join("labels.jsonl");
    let (ok, err) = label(
        &policy,
        &input,
        &out,
        &["--judge", "judge", "--redact", "pii"],
    );
    assert!(!ok && err.contains("unknown kind `pii`"), "{err}");
    let (ok, err) = label(
        &policy,
        &input,
        &out,
        &["--judge", "judge", "--redact", "email,phone"],
    );
    assert!(ok, "{err}");
    let sent = up.recorded();
    assert_eq!(sent.len(), 2, "one answer and one verdict");
    for r in &sent {
        let body = String::from_utf8_lossy(&r.raw);
        assert!(!body.contains("dana.okafor@example.com"), "{body}");
    }
    assert_eq!(
        sent[0].body["messages"][0]["content"],
        "Repeat this address: [EMAIL_1]"
    );
    let verdict = sent[1].body["messages"][0]["content"]
        .as_str()
        .unwrap_or("");
    assert!(
        verdict.contains("Repeat this address: [EMAIL_1]"),
        "{verdict}"
    );
    let got = rows(&out);
    assert_eq!(
        got[0]["prompt"],
        "Repeat this address: dana.okafor@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gold_rows_are_graded_judged_rows_are_rated_and_a_rerun_resumes() {
    let (up, tmp, policy, input) = judged_rows(concat!(
            "{\"id\": \"math\", \"prompt\": \"What is 2 + 3? End with \\\"The answer is N.\\\"\", \"answer\": \"#### 5\"}\n",
            "{\"id\": \"choice\", \"prompt\": \"Which is a colour? (A) red (B) seven. End with \\\"The answer is (X)\\\".\", \"answer\": \"A\"}\n",
            "{\"id\": \"open\", \"messages\": [{\"role\": \"user\", \"content\": \"Write a haiku about rain.\"}]}\n",
        ))
    .await;
    let out = tmp.path().join("labels.jsonl");

    // Without a judge, the row with no gold answer cannot be labelled.
    let (ok, err) = label(&policy, &input, &out, &[]);
    assert!(!ok && err.contains("1 rows have no gold `answer`"), "{err}");

    let (ok, err) = label(&policy, &input, &out, &["--judge", "judge"]);
    assert!(ok, "{err}");
    assert!(err.contains("cloud cost estimate: at most $"), "{err}");
    let got = rows(&out);
    assert_eq!(got.len(), 3, "{got:?}");
    for r in &got {
        let l = r["strong_label"].as_f64().expect("a label");
        assert!((0.0..=1.0).contains(&l), "{r}");
        assert_eq!(r["model"], "smollm2-135m");
        let file = smollm2_path();
        let file = file.file_name().expect("a file").to_string_lossy();
        assert_eq!(
            r["model_file"], *file,
            "the weights' file name, not its folders"
        );
    }
    let by_id = |id: &str| got.iter().find(|r| r["id"] == id).cloned().expect("row");
    let math = by_id("math");
    assert_eq!(math["graded"], "gold");
    assert_eq!(math["gold"], "5");
    // The label follows the grade of what was extracted from the model's own answer.
    let right = math["extracted"] == "5";
    assert_eq!(
        math["strong_label"].as_f64(),
        Some(if right { 0.0 } else { 1.0 })
    );
    assert_eq!(by_id("choice")["task"], "mmlu_pro");
    let open = by_id("open");
    assert_eq!(open["graded"], "judge");
    assert_eq!(open["rating"], 2);
    assert_eq!(open["strong_label"].as_f64(), Some(0.75));
    assert_eq!(open["cloud_answer"], "Hello from the cloud");
    assert!(open["local_answer"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(up.recorded().len(), 2, "one answer and one verdict");

    // A rerun labels nothing again; an interrupted last row is labelled anew.
    let (ok, err) = label(&policy, &input, &out, &["--judge", "judge"]);
    assert!(
        ok && err.contains("3 labelled already, 0 to label"),
        "{err}"
    );
    let whole = std::fs::read_to_string(&out).expect("read");
    let cut = whole.trim_end().rfind('\n').expect("two lines") + 1;
    std::fs::write(&out, format!("{}{{\"id\": \"half", &whole[..cut])).expect("write");
    let (ok, err) = label(&policy, &input, &out, &["--judge", "judge"]);
    assert!(
        ok && err.contains("2 labelled already, 1 to label"),
        "{err}"
    );
    assert_eq!(rows(&out).len(), 3);

    // Labels another model file earned are not mixed with this one's.
    let foreign = tmp.path().join("foreign.jsonl");
    std::fs::write(
        &foreign,
        "{\"id\": \"math\", \"prompt\": \"x\", \"model\": \"on-box\", \"model_file\": \"other.gguf\", \"strong_label\": 1.0}\n",
    )
    .expect("write");
    let (ok, err) = label(&policy, &input, &foreign, &["--judge", "judge"]);
    assert!(
        !ok && err.contains("holds labels earned by other.gguf") && err.contains("another --out"),
        "{err}"
    );
    assert_eq!(rows(&foreign).len(), 1, "the file is left as it was");

    // At $1000 per million tokens, a cap below one judged row's cost stops after the first.
    let more = tmp.path().join("more.jsonl");
    std::fs::write(
        &more,
        "{\"id\": \"a\", \"prompt\": \"Say hi.\"}\n{\"id\": \"b\", \"prompt\": \"Say bye.\"}\n",
    )
    .expect("write");
    // One at a time, and two at once: there the first row's estimate holds the cap while it
    // runs, so the second does not start beside it.
    for concurrency in ["1", "2"] {
        let capped = tmp.path().join(format!("capped-{concurrency}.jsonl"));
        let args = [
            "--judge",
            "judge",
            "--max-usd",
            "0.001",
            "--concurrency",
            concurrency,
        ];
        let (ok, err) = label(&policy, &more, &capped, &args);
        assert!(ok, "{err}");
        assert!(
            err.contains("1 rows not started: the --max-usd cap was reached"),
            "concurrency {concurrency}: {err}"
        );
        assert_eq!(rows(&capped).len(), 1, "concurrency {concurrency}");
    }
}

#[test]
fn a_training_folder_is_sampled_per_task_and_rows_keep_the_question_alone() {
    let tmp = tempfile::tempdir().expect("tmp");
    let policy = smollm2_only_policy(tmp.path());
    let train = tmp.path().join("train");
    std::fs::create_dir_all(train.join("gsm8k")).expect("mkdir");
    std::fs::create_dir_all(train.join("mmlu_pro")).expect("mkdir");
    let gsm: String = (1..=3)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"question": format!("Tom has {i} apples and buys 2 more. How many apples does he have?"),
                    "answer": format!("{i}+2={}\n#### {}", i + 2, i + 2)})
            )
        })
        .collect();
    std::fs::write(train.join("gsm8k/train.jsonl"), gsm).expect("write");
    std::fs::write(
        train.join("mmlu_pro/questions.jsonl"),
        "{\"question_id\": 1, \"question\": \"Which is a colour?\", \"options\": [\"red\", \"seven\"], \"answer\": \"A\"}\n",
    )
    .expect("write");
    let out = tmp.path().join("labels.jsonl");
    let args = ["--per-task", "2", "--task", "gsm8k"];
    let (ok, err) = label(&policy, &train, &out, &args);
    assert!(ok, "{err}");
    let got = rows(&out);
    assert_eq!(got.len(), 2, "two GSM8K questions, no MMLU-Pro: {got:?}");
    for r in &got {
        assert!(r["id"].as_str().expect("id").starts_with("gsm8k-"), "{r}");
        let prompt = r["prompt"].as_str().expect("prompt");
        assert!(
            prompt.starts_with("Tom has ") && prompt.ends_with("have?"),
            "{prompt}"
        );
        assert_eq!(r["graded"], "gold");
        let label = r["strong_label"].as_f64().expect("label");
        assert!(label == 0.0 || label == 1.0);
    }
    let (ok, _) = label(&policy, &train, &out, &["--task", "gsm8k_typo"]);
    assert!(!ok, "an unknown task is refused");
}

#[test]
fn answers_cut_at_max_tokens_are_graded_or_left_for_a_longer_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let policy = smollm2_only_policy(tmp.path());
    let input = tmp.path().join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"story\", \"prompt\": \"Write a long story about a dragon, then say the number 5.\", \"answer\": \"#### 5\"}\n",
    )
    .expect("write");
    let run = |out: &Path, unfinished: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["label", "--model", "smollm2-135m", "--max-tokens", "2"])
            .args(["--unfinished", unfinished, "--policy"])
            .arg(&policy)
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(out)
            .output()
            .expect("label");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // Two tokens cannot tell a story: graded as it is, the row is wrong.
    let graded = tmp.path().join("graded.jsonl");
    run(&graded, "wrong");
    let got = rows(&graded);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["strong_label"].as_f64(), Some(1.0), "{}", got[0]);
    // Skipped, it is not written, so a rerun (with more tokens) labels it.
    let skipped = tmp.path().join("skipped.jsonl");
    let err = run(&skipped, "skip");
    assert!(
        err.contains("1 rows skipped: the on-box answer stopped at --max-tokens 2"),
        "{err}"
    );
    assert!(rows(&skipped).is_empty());
    let err = run(&skipped, "skip");
    assert!(err.contains("0 labelled already, 1 to label"), "{err}");
}
