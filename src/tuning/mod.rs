//! Policy tuning without calling any model: replay a policy over recorded or benchmark traffic,
//! calibrate a strong-score threshold, and plot the cost/quality trade-off.

pub mod answers;
pub mod calibrate;
pub mod plot;
pub mod replay;
pub mod traffic;

use crate::classifier::{input, ClassifierError, RouterModel};
use crate::policy::{self, Policy};
use traffic::Row;

/// Texts per call of the router model.
const BATCH: usize = 32;

/// Classifies, in batches, the rows whose decision the classifier can change, with the same
/// [`RouterModel`] seam the gateway uses; `progress` is told how many of those are done.
pub fn classify_rows(
    policy: &Policy,
    classifier: &dyn RouterModel,
    rows: &mut [Row],
    mut progress: impl FnMut(usize, usize),
) -> Result<(), ClassifierError> {
    let need: Vec<usize> = (0..rows.len())
        .filter(|&i| policy::needs_classifier(policy, &rows[i].features))
        .collect();
    let total = need.len();
    let harness = input::HarnessFilter::of(&policy.classifier).unwrap_or_default();
    progress(0, total);
    for (n, chunk) in need.chunks(BATCH).enumerate() {
        let texts: Vec<String> = chunk
            .iter()
            .map(|&i| input::text_of(&rows[i].request.messages(), &harness))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (&i, c) in chunk.iter().zip(classifier.classify(&refs)?) {
            rows[i].features.classifier = Some(c.output());
        }
        progress((n * BATCH + chunk.len()).min(total), total);
    }
    Ok(())
}
