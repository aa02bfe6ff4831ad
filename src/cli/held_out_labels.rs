//! Heads scored on the held-out rows of a label file, beside the built-in heads: what
//! `eval-router --labels` prints, and what `train-router --labels` checks at each `--seed`.

use crate::classifier::data::Example;
use crate::classifier::encoder::Encoder;
use crate::classifier::eval::{
    apgr, bootstrap_apgr_difference, cpt, has_gap, percentile, pgr_curve, Outcome,
};
use crate::classifier::heads::Heads;
use crate::classifier::train::held_out;
use crate::classifier::{Classifier, ClassifierError, RouterModel};

/// Bootstrap resamples behind the paired interval.
pub const RESAMPLES: usize = 2000;

/// The rows `train-router --labels --seed S --validation V` holds out, with their outcomes
/// (`data::load_labels`): the on-box answer right when `strong_label` is below 0.5, the
/// cloud's always right.
pub struct HeldOut<'a> {
    pub rows: Vec<&'a Example>,
    pub outcomes: Vec<Outcome>,
}

impl<'a> HeldOut<'a> {
    /// The held-out rows of `labels` (by [`held_out`] on the text, as training splits them).
    ///
    /// Errors: no row is held out (too few labels, or `validation` 0), or on none of them is
    /// the on-box answer worse (no quality gap: APGR is undefined).
    pub fn split(
        labels: &'a [Example],
        seed: u64,
        validation: f64,
    ) -> Result<Self, ClassifierError> {
        let rows: Vec<&Example> = labels
            .iter()
            .filter(|e| held_out(&e.text, seed, validation))
            .collect();
        if rows.is_empty() {
            return Err(ClassifierError::Format(format!(
                "no label row is held out with seed {seed} and validation {validation}"
            )));
        }
        let outcomes: Vec<Outcome> = rows
            .iter()
            .map(|e| {
                let (w, s) = e.pair.unwrap_or((false, true));
                Outcome {
                    weak: f64::from(u8::from(w)),
                    strong: f64::from(u8::from(s)),
                }
            })
            .collect();
        if !has_gap(&outcomes) {
            return Err(ClassifierError::Format(format!(
                "on none of the {} label rows held out with seed {seed} and validation {validation} \
                 is the on-box answer worse: there is no gap to recover, so APGR is undefined \
                 (label more rows, or hold out more with --validation)",
                rows.len()
            )));
        }
        Ok(HeldOut { rows, outcomes })
    }

    /// Rows on which the on-box answer is worse.
    pub fn worse(&self) -> usize {
        self.outcomes.iter().filter(|o| o.weak == 0.0).count()
    }

    /// The strong score `heads` give each row, read through `encoder` at `max_tokens` tokens
    /// (as the gateway reads a request); the encoder comes back for the next heads.
    ///
    /// Errors: the heads read layers the encoder does not have, or encoding fails.
    pub fn strong_scores(
        &self,
        encoder: Encoder,
        heads: Heads,
        max_tokens: usize,
    ) -> Result<(Vec<f64>, Encoder), ClassifierError> {
        let classifier = Classifier::new(encoder, heads, max_tokens)?;
        let texts: Vec<&str> = self.rows.iter().map(|e| e.text.as_str()).collect();
        let mut scores = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(32) {
            let out = classifier.classify(chunk)?;
            scores.extend(out.iter().map(|c| f64::from(c.strong_score)));
        }
        Ok((scores, classifier.encoder))
    }
}

/// APGR and CPT(50%), CPT(80%) of one set of scores (shares in [0, 1]).
pub struct Scored {
    pub apgr: f64,
    pub cpt50: f64,
    pub cpt80: f64,
}

/// Scores `scores` against `outcomes` ([`pgr_curve`]).
pub fn score(scores: &[f64], outcomes: &[Outcome]) -> Scored {
    let curve = pgr_curve(scores, outcomes);
    Scored {
        apgr: apgr(&curve),
        cpt50: cpt(&curve, 0.5),
        cpt80: cpt(&curve, 0.8),
    }
}

/// The paired bootstrap of `APGR(heads) - APGR(built-in)` over the same rows
/// ([`bootstrap_apgr_difference`], [`RESAMPLES`] resamples): its median and its 5th to 95th
/// percentile.
pub struct Difference {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl Difference {
    /// The interval for `heads` against `built_in` scores of the same rows.
    pub fn of(built_in: &[f64], heads: &[f64], outcomes: &[Outcome], seed: u64) -> Difference {
        let diffs = bootstrap_apgr_difference(built_in, heads, outcomes, RESAMPLES, seed);
        Difference {
            median: percentile(&diffs, 0.5),
            low: percentile(&diffs, 0.05),
            high: percentile(&diffs, 0.95),
        }
    }

    /// Whether the whole interval lies above zero: the heads beat the built-in ones by more
    /// than the held-out rows' noise.
    pub fn above_zero(&self) -> bool {
        self.low > 0.0
    }
}
