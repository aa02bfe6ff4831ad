//! Policy tuning without calling any model: replay a policy over recorded or benchmark traffic,
//! calibrate a strong-score threshold, and plot the cost/quality trade-off.

pub mod calibrate;
pub mod plot;
pub mod replay;
pub mod traffic;

use crate::classifier::{input, Classifier, ClassifierError};
use crate::policy::{self, Policy};
use traffic::Row;

/// Classifies, in batches, the rows whose decision the classifier can change; `progress` is
/// told how many of those are done.
pub fn classify_rows(
    policy: &Policy,
    classifier: &Classifier,
    rows: &mut [Row],
    mut progress: impl FnMut(usize, usize),
) -> Result<(), ClassifierError> {
    let need: Vec<usize> = (0..rows.len())
        .filter(|&i| policy::needs_classifier(policy, &rows[i].features))
        .collect();
    let total = need.len();
    progress(0, total);
    for (n, chunk) in need.chunks(256).enumerate() {
        let texts: Vec<String> = chunk
            .iter()
            .map(|&i| input::text_of(&rows[i].request.messages()).to_string())
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embedded = classifier.embed_all(&refs, 32)?;
        for (&i, c) in chunk.iter().zip(classifier.finish(embedded)?) {
            rows[i].features.classifier = Some(c.output());
        }
        progress((n * 256 + chunk.len()).min(total), total);
    }
    Ok(())
}
