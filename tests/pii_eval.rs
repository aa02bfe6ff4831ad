//! The private-data detector on its labelled synthetic set (`tests/data/pii.jsonl`), through the
//! `switchyard pii-eval` command a user runs: every kind keeps its precision and recall floor,
//! and the hard negatives (order numbers, ISBNs, versions, UUIDs, hashes, sums) stay unflagged.

use serde_json::Value;

#[test]
fn every_kind_keeps_its_precision_and_recall_floor() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["pii-eval", "--json", "--passes", "0", "--input"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pii.jsonl"))
        .output()
        .expect("pii-eval");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let kinds = report["kinds"].as_object().expect("kinds");
    assert_eq!(kinds.len(), 7, "{report}");
    for (kind, score) in kinds {
        let labelled = score["counts"]["labelled"].as_u64().unwrap_or(0);
        assert!(labelled >= 60, "{kind}: only {labelled} labelled values");
        let precision = score["precision"].as_f64().unwrap_or(0.0);
        let recall = score["recall"].as_f64().unwrap_or(0.0);
        // National phone numbers with no phone word near them are a known gap (docs/privacy.md).
        let recall_floor = if kind == "phone" { 0.7 } else { 0.95 };
        assert!(precision >= 0.95, "{kind}: precision {precision}");
        assert!(recall >= recall_floor, "{kind}: recall {recall}");
    }
    let negatives = report["negatives"].as_u64().unwrap_or(0);
    let flagged = report["flagged_negatives"].as_u64().unwrap_or(u64::MAX);
    assert!(negatives >= 300, "{report}");
    assert!(
        flagged * 100 <= negatives,
        "{flagged} of {negatives} negatives flagged"
    );
}
