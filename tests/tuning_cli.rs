//! `replay`, `calibrate` and `policy explain` as a user runs them, with the real classifier, on
//! small labelled traffic written here.

mod common;

use serde_json::{json, Value};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("run switchyard")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A policy with a classifier rule, and eight labelled prompts.
fn fixtures(dir: &std::path::Path) -> (String, String) {
    let policy = common::PolicyBuilder::new()
        .reference_model("big")
        .model(
            "small",
            &[
                ("kind", "local"),
                ("price", "{ input_per_million: 0, output_per_million: 0 }"),
            ],
        )
        .model(
            "big",
            &[
                ("kind", "openai"),
                ("base_url", &common::quoted("http://127.0.0.1:1/v1")),
                ("price", "{ input_per_million: 10, output_per_million: 30 }"),
            ],
        )
        .classifier(&[])
        .rule("tagged", "{ tags: [premium] }", "big", &[])
        .rule(
            "hard",
            "{ strong_score: { above: 0.5 } }",
            "big",
            &["small"],
        )
        .default_route("small", &[])
        .render();
    let prompts = [
        ("hi there", true, true),
        ("Thanks, that helps!", true, true),
        ("Write a haiku about rain.", true, true),
        ("What is the capital of Italy?", true, true),
        ("Let f(x) = x^3 - 6x^2 + 11x - 6. Find all real x with f(f(x)) = 0.\nA. 3 values\nB. 5 values\nC. 7 values\nD. 9 values\nAnswer:", false, true),
        ("A tank fills in 6 hours with pipe A and 9 hours with pipe B; pipe C empties it in 12 hours. With all three open, how long does it take?", false, true),
        ("Which of the following is a consequence of the Heisenberg uncertainty principle for the ground-state energy of a harmonic oscillator?\nA. zero\nB. nonzero\nC. negative\nD. undefined\nAnswer:", false, true),
        ("Summarize: the meeting moved to Tuesday.", true, true),
    ];
    let mut traffic: String = prompts
        .iter()
        .enumerate()
        .map(|(i, (p, w, s))| {
            format!(
                "{}\n",
                json!({"id": i, "prompt": p, "weak_correct": w, "strong_correct": s})
            )
        })
        .collect();
    traffic += &format!(
        "{}\n",
        json!({"model": "auto", "messages": [{"role": "user", "content": "hello"}], "tags": ["premium"], "weak_correct": true, "strong_correct": true})
    );
    let p = dir.join("policy.yaml");
    let t = dir.join("traffic.jsonl");
    std::fs::write(&p, policy).expect("write policy");
    std::fs::write(&t, traffic).expect("write traffic");
    (p.display().to_string(), t.display().to_string())
}

#[test]
fn replay_reports_routes_costs_savings_and_quality() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (policy, traffic) = fixtures(tmp.path());
    let svg = tmp.path().join("sweep.svg");
    let o = run(&[
        "replay",
        "--policy",
        &policy,
        "--input",
        &traffic,
        "--json",
        "--plot",
        svg.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_str(&out(&o)).expect("json report");
    assert_eq!(r["requests"], 9);
    let local = r["by_route"]["local"]["requests"].as_u64().unwrap_or(0);
    let cloud = r["by_route"]["cloud"]["requests"].as_u64().unwrap_or(0);
    assert_eq!(local + cloud, 9);
    assert_eq!(r["by_rule"]["tagged"]["requests"], 1);
    assert!(cloud >= 1 && local >= 1, "{r}");
    // Savings: what the local share did not cost on the reference model.
    let cost = r["cost_usd"].as_f64().expect("cost");
    let reference = r["reference_cost_usd"].as_f64().expect("reference");
    assert!(reference > cost && cost > 0.0);
    let pct = r["savings_percent"].as_f64().expect("pct");
    assert!((pct - 100.0 * (reference - cost) / reference).abs() < 1e-6);
    let q = &r["quality"];
    assert_eq!(q["labelled"], 9);
    assert!((q["all_strong"].as_f64().expect("strong") - 1.0).abs() < 1e-9);
    assert!((q["all_weak"].as_f64().expect("weak") - 6.0 / 9.0).abs() < 1e-9);
    let svg = std::fs::read_to_string(&svg).expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains("this policy") && svg.contains("quality"));

    let text = run(&["replay", "--policy", &policy, "--input", &traffic]);
    let t = out(&text);
    for part in [
        "by route:",
        "by model:",
        "by rule:",
        "all on big (reference)",
        "PGR",
    ] {
        assert!(t.contains(part), "{part} missing:\n{t}");
    }
}

#[test]
fn calibrate_finds_the_threshold_for_a_cloud_share() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (policy, traffic) = fixtures(tmp.path());
    let o = run(&[
        "calibrate",
        "--policy",
        &policy,
        "--input",
        &traffic,
        "--cloud-share",
        "0.45",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c: Value = serde_json::from_str(&out(&o)).expect("json");
    assert_eq!(c["rule"], "hard");
    assert_eq!(
        c["reaching"], 8,
        "the tagged row is decided before the rule"
    );
    // 1 tagged + 3 of the 8 others = 4/9, the nearest share to 0.45.
    assert!(
        (c["cloud_share"].as_f64().expect("share") - 4.0 / 9.0).abs() < 1e-9,
        "{c}"
    );
    let t = c["threshold"].as_f64().expect("threshold");
    assert!((0.0..=1.0).contains(&t));
    // Replaying with that threshold sends the same share.
    let calibrated = std::fs::read_to_string(&policy)
        .expect("policy")
        .replace("above: 0.5", &format!("above: {t}"));
    let p2 = tmp.path().join("calibrated.yaml");
    std::fs::write(&p2, calibrated).expect("write");
    let r = run(&[
        "replay",
        "--policy",
        p2.to_str().expect("path"),
        "--input",
        &traffic,
        "--json",
    ]);
    let r: Value = serde_json::from_str(&out(&r)).expect("json");
    assert_eq!(r["by_route"]["cloud"]["requests"], 4);

    let text = run(&[
        "calibrate",
        "--policy",
        &policy,
        "--input",
        &traffic,
        "--cloud-share",
        "0.45",
    ]);
    assert!(
        out(&text).contains("strong_score: { above: "),
        "{}",
        out(&text)
    );
    let bad = run(&[
        "calibrate",
        "--policy",
        &policy,
        "--input",
        &traffic,
        "--cloud-share",
        "0.4",
        "--rule",
        "nope",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no rule `nope`"));
    assert!(
        !out(&text).contains("sticky conversations"),
        "{}",
        out(&text)
    );

    // Under sticky routes the share with pins followed is replayed beside the threshold; these
    // rows are one-turn conversations, so it is the same share.
    let sticky = tmp.path().join("sticky.yaml");
    let text = std::fs::read_to_string(&policy).expect("policy") + "sticky: true\n";
    std::fs::write(&sticky, text).expect("write");
    let o = run(&[
        "calibrate",
        "--policy",
        sticky.to_str().expect("path"),
        "--input",
        &traffic,
        "--cloud-share",
        "0.45",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out(&o).contains("with this policy's sticky conversations followed, the threshold sends 44.4% to the cloud"),
        "{}",
        out(&o)
    );
}

#[test]
fn explain_walks_every_rule() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (policy, _) = fixtures(tmp.path());
    let o = run(&["policy", "explain", "--policy", &policy, "hi there"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = out(&o);
    for part in [
        "request features:",
        "classifier: top chat",
        "tagged (line",
        "no: no tag of [premium]",
        "hard (line",
        "decision: small (local) by rule `default`",
        "fallback chain: small",
        "big: $",
    ] {
        assert!(t.contains(part), "{part} missing:\n{t}");
    }

    // The built-in heads' strong score is a mixture with a maths expert: explain shows its
    // terms, and they add up to the score the rules read.
    let o = run(&[
        "policy",
        "explain",
        "--policy",
        &policy,
        "Solve for x: 2x + 3 = 11",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = out(&o);
    let number_after = |line: &str, key: &str| -> f64 {
        let rest = &line[line.find(key).expect("key") + key.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].parse().expect("number")
    };
    let score_line = t
        .lines()
        .find(|l| l.starts_with("classifier: top math"))
        .unwrap_or_else(|| panic!("no maths classification:\n{t}"));
    let score = number_after(score_line, "strong_score ");
    let terms = t
        .lines()
        .find(|l| l.trim_start().starts_with("strong_score = "))
        .unwrap_or_else(|| panic!("no mixture line:\n{t}"));
    let sum: f64 = terms
        .trim_start()
        .trim_start_matches("strong_score = ")
        .split(" + ")
        .map(|term| {
            let (w, rest) = term.split_once(" × ").expect("weight × head score");
            let s = rest.rsplit(' ').next().expect("score");
            w.parse::<f64>().expect("weight") * s.parse::<f64>().expect("score")
        })
        .sum();
    assert!(
        terms.contains("× strong head ") && terms.contains("× math expert "),
        "{terms}"
    );
    assert!(
        (sum - score).abs() < 0.01,
        "{terms} adds up to {sum}, not {score}"
    );
    let req = tmp.path().join("req.json");
    std::fs::write(
        &req,
        json!({"model": "auto", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]}).to_string(),
    )
    .expect("write");
    let o = run(&[
        "policy",
        "explain",
        "--policy",
        &policy,
        "--request",
        req.to_str().expect("path"),
    ]);
    assert!(o.status.success());
    assert!(out(&o).contains("tools true"), "{}", out(&o));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("note:"));
    // The file given as TEXT is explained as the words of its path, and the note says how to
    // explain the request it holds.
    let path = req.to_str().expect("path");
    let o = run(&["policy", "explain", "--policy", &policy, path]);
    assert!(o.status.success());
    assert!(out(&o).contains("tools false"), "{}", out(&o));
    let note = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(note.contains(&format!("pass --request {path}")), "{note}");
}
