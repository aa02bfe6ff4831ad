//! Routing-quality metrics (as in the RouteLLM paper) and category metrics.
//!
//! A prompt goes to the strong model when its score is above the threshold; sweeping the threshold
//! from "all weak" to "all strong" traces quality against the share of strong calls.

/// One benchmark prompt's outcome on each model (correctness 0/1, or a judge score).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub weak: f64,
    pub strong: f64,
}

/// The points (share of strong calls, PGR) of a threshold sweep, from share 0 to share 1.
/// Prompts with equal scores move together (a threshold cannot split them).
pub fn pgr_curve(scores: &[f64], outcomes: &[Outcome]) -> Vec<(f64, f64)> {
    let n = scores.len().min(outcomes.len());
    if n == 0 {
        return vec![];
    }
    let weak: f64 = outcomes[..n].iter().map(|o| o.weak).sum::<f64>() / n as f64;
    let strong: f64 = outcomes[..n].iter().map(|o| o.strong).sum::<f64>() / n as f64;
    let gap = strong - weak;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pgr = |quality: f64| {
        if gap.abs() < 1e-12 {
            1.0
        } else {
            (quality - weak) / gap
        }
    };
    let mut points = vec![(0.0, pgr(weak))];
    let mut quality = weak;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && scores[order[j]] == scores[order[i]] {
            let o = outcomes[order[j]];
            quality += (o.strong - o.weak) / n as f64;
            j += 1;
        }
        points.push((j as f64 / n as f64, pgr(quality)));
        i = j;
    }
    points
}

/// Area under the PGR curve (trapezoids); a random router's expected value is 0.5.
pub fn apgr(curve: &[(f64, f64)]) -> f64 {
    curve
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum()
}

/// The smallest share of strong calls whose PGR reaches `target` (e.g. 0.5 for CPT(50%)).
pub fn cpt(curve: &[(f64, f64)], target: f64) -> f64 {
    curve
        .iter()
        .find(|(_, p)| *p >= target - 1e-12)
        .map(|(share, _)| *share)
        .unwrap_or(1.0)
}

/// Accuracy and macro-F1 (over the classes that occur in `gold`).
pub fn category_scores(gold: &[usize], predicted: &[usize]) -> (f64, f64) {
    let n = gold.len().min(predicted.len());
    if n == 0 {
        return (0.0, 0.0);
    }
    let correct = (0..n).filter(|&i| gold[i] == predicted[i]).count();
    let mut classes: Vec<usize> = gold[..n].to_vec();
    classes.sort_unstable();
    classes.dedup();
    let f1s: Vec<f64> = classes
        .iter()
        .map(|&c| {
            let tp = (0..n)
                .filter(|&i| gold[i] == c && predicted[i] == c)
                .count() as f64;
            let fp = (0..n)
                .filter(|&i| gold[i] != c && predicted[i] == c)
                .count() as f64;
            let fneg = (0..n)
                .filter(|&i| gold[i] == c && predicted[i] != c)
                .count() as f64;
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (2.0 * tp + fp + fneg)
            }
        })
        .collect();
    (
        correct as f64 / n as f64,
        f1s.iter().sum::<f64>() / f1s.len() as f64,
    )
}

/// How the MT-Bench and Vicuna-Bench category labels map onto the classifier's categories.
pub fn map_benchmark_category(label: &str) -> Option<&'static str> {
    Some(match label {
        "writing" | "roleplay" => "writing",
        "reasoning" | "common-sense" | "fermi" | "counterfactual" => "reasoning",
        "math" => "math",
        "coding" => "code",
        "extraction" => "transform",
        "stem" | "humanities" | "knowledge" | "generic" => "knowledge",
        _ => return None,
    })
}

/// A paired bootstrap of the APGR difference between two scores of the same prompts: `resamples`
/// resamples of the prompts (drawn with replacement by `seed`), each scoring `b` and `a` on the
/// same resampled prompts (a resample without a quality gap, whose APGR is undefined, is left
/// out). Returns the differences `APGR(b) - APGR(a)`, sorted ascending; read an
/// interval off them with [`percentile`]. Pairing keeps the prompts' own difficulty out of the
/// spread, so the interval says whether `b` orders these prompts better than `a`, not whether the
/// set is easy (Efron and Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13, the
/// percentile interval).
///
/// `a`, `b` and `outcomes` are per prompt and of the same length; an empty set gives no
/// differences.
pub fn bootstrap_apgr_difference(
    a: &[f64],
    b: &[f64],
    outcomes: &[Outcome],
    resamples: usize,
    seed: u64,
) -> Vec<f64> {
    let n = a.len().min(b.len()).min(outcomes.len());
    let mut diffs: Vec<f64> = draws(n, resamples, seed)
        .filter_map(|picks| {
            let take = |xs: &[f64]| picks.iter().map(|&i| xs[i]).collect::<Vec<f64>>();
            let o: Vec<Outcome> = picks.iter().map(|&i| outcomes[i]).collect();
            has_gap(&o).then(|| apgr(&pgr_curve(&take(b), &o)) - apgr(&pgr_curve(&take(a), &o)))
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    diffs
}

/// A bootstrap of one score's APGR: `resamples` resamples of the prompts (drawn with replacement
/// by `seed`), each scored on its own. Returns the APGRs, sorted ascending; read an interval off
/// them with [`percentile`] (the percentile interval, Efron and Tibshirani 1993, ch. 13). It
/// says how much of an APGR is which prompts the benchmark happened to hold: on MT-Bench's 80
/// prompts, most of the quality gap sits on a handful of them.
///
/// A resample in which the strong model is no better than the weak one on average has no gap
/// to recover (PGR is undefined) and is left out, so fewer than `resamples` values can come
/// back. `scores` and `outcomes` are per prompt and of the same length; an empty set gives
/// none.
pub fn bootstrap_apgr(
    scores: &[f64],
    outcomes: &[Outcome],
    resamples: usize,
    seed: u64,
) -> Vec<f64> {
    let n = scores.len().min(outcomes.len());
    let mut values: Vec<f64> = draws(n, resamples, seed)
        .filter_map(|picks| {
            let o: Vec<Outcome> = picks.iter().map(|&i| outcomes[i]).collect();
            has_gap(&o).then(|| {
                let s: Vec<f64> = picks.iter().map(|&i| scores[i]).collect();
                apgr(&pgr_curve(&s, &o))
            })
        })
        .collect();
    values.sort_by(f64::total_cmp);
    values
}

/// Whether the strong model does better than the weak one on average over `outcomes`: without
/// a gap there is nothing to recover, and PGR (so APGR) is undefined.
pub fn has_gap(outcomes: &[Outcome]) -> bool {
    let gap: f64 = outcomes.iter().map(|o| o.strong - o.weak).sum();
    gap > 1e-12
}

/// `resamples` draws of `n` indices in `0..n` with replacement, from `seed`'s stream (none when
/// `n` is 0).
fn draws(n: usize, resamples: usize, seed: u64) -> impl Iterator<Item = Vec<usize>> {
    let mut rng = crate::classifier::train::Rng::new(seed);
    let count = if n == 0 { 0 } else { resamples };
    (0..count).map(move |_| {
        (0..n)
            .map(|_| (rng.next_u64() % n as u64) as usize)
            .collect()
    })
}

/// The `q`-th quantile (`q` in [0, 1]) of ascending `sorted` values, by the nearest rank; `NaN`
/// for no values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(weak: f64, strong: f64) -> Outcome {
        Outcome { weak, strong }
    }

    #[test]
    fn a_perfect_router_recovers_the_gap_first() {
        // Two prompts only the strong model gets right, two both get right.
        let outcomes = [o(0.0, 1.0), o(0.0, 1.0), o(1.0, 1.0), o(1.0, 1.0)];
        let perfect = pgr_curve(&[0.9, 0.8, 0.2, 0.1], &outcomes);
        assert_eq!(cpt(&perfect, 0.5), 0.25);
        assert_eq!(cpt(&perfect, 1.0), 0.5);
        // Points (0,0) (.25,.5) (.5,1) (.75,1) (1,1).
        assert!((apgr(&perfect) - 0.75).abs() < 1e-9);
        let inverted = pgr_curve(&[0.1, 0.2, 0.8, 0.9], &outcomes);
        assert!(apgr(&inverted) < 0.5 && apgr(&perfect) > 0.5);
        assert_eq!(cpt(&inverted, 1.0), 1.0);
    }

    #[test]
    fn ties_move_together_and_constant_scores_are_random() {
        let outcomes = [o(0.0, 1.0), o(1.0, 1.0)];
        let curve = pgr_curve(&[0.5, 0.5], &outcomes);
        assert_eq!(curve, vec![(0.0, 0.0), (1.0, 1.0)]);
        assert!((apgr(&curve) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn macro_f1_averages_over_gold_classes() {
        let (acc, f1) = category_scores(&[0, 0, 1, 1], &[0, 0, 1, 0]);
        assert_eq!(acc, 0.75);
        let f1_0 = 2.0 * 2.0 / (4.0 + 1.0);
        let f1_1 = 2.0 / (2.0 + 1.0);
        assert!((f1 - (f1_0 + f1_1) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn the_paired_bootstrap_centres_on_the_difference_and_is_zero_for_equal_scores() {
        // 40 prompts, the first 10 only the strong model gets right.
        let outcomes: Vec<Outcome> = (0..40)
            .map(|i| if i < 10 { o(0.0, 1.0) } else { o(1.0, 1.0) })
            .collect();
        let good: Vec<f64> = (0..40).map(|i| 1.0 - f64::from(i) / 40.0).collect();
        let bad: Vec<f64> = (0..40).map(|i| f64::from(i) / 40.0).collect();
        let same = bootstrap_apgr_difference(&good, &good, &outcomes, 200, 7);
        assert_eq!(same.len(), 200);
        assert!(same.iter().all(|d| *d == 0.0), "{same:?}");
        let diffs = bootstrap_apgr_difference(&bad, &good, &outcomes, 200, 7);
        assert!(diffs.windows(2).all(|w| w[0] <= w[1]), "sorted");
        let full = apgr(&pgr_curve(&good, &outcomes)) - apgr(&pgr_curve(&bad, &outcomes));
        let (low, mid, high) = (
            percentile(&diffs, 0.05),
            percentile(&diffs, 0.5),
            percentile(&diffs, 0.95),
        );
        assert!(low > 0.0 && low <= mid && mid <= high, "{low} {mid} {high}");
        assert!((mid - full).abs() < 0.1, "{mid} vs {full}");
        // The same seed draws the same resamples.
        assert_eq!(
            diffs,
            bootstrap_apgr_difference(&bad, &good, &outcomes, 200, 7)
        );
        assert!(bootstrap_apgr_difference(&[], &[], &[], 10, 7).is_empty());
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 1.0), 3.0);
    }

    #[test]
    fn one_scores_bootstrap_brackets_its_apgr_and_widens_on_fewer_prompts() {
        // The strong model alone gets every fourth prompt right; the score finds most of them.
        let set = |n: usize| -> (Vec<f64>, Vec<Outcome>) {
            let outcomes = (0..n)
                .map(|i| if i % 4 == 0 { o(0.0, 1.0) } else { o(1.0, 1.0) })
                .collect();
            let scores = (0..n)
                .map(|i| if i % 4 == 0 { 0.6 } else { 0.4 } + ((i * 7) % 10) as f64 / 40.0)
                .collect();
            (scores, outcomes)
        };
        let width = |n: usize| {
            let (scores, outcomes) = set(n);
            let full = apgr(&pgr_curve(&scores, &outcomes));
            let values = bootstrap_apgr(&scores, &outcomes, 500, 7);
            assert_eq!(values.len(), 500, "every resample has a gap");
            assert!(values.windows(2).all(|w| w[0] <= w[1]), "sorted");
            let (low, high) = (percentile(&values, 0.05), percentile(&values, 0.95));
            assert!(low < full && full < high, "{low} {full} {high}");
            assert_eq!(values, bootstrap_apgr(&scores, &outcomes, 500, 7));
            high - low
        };
        assert!(width(40) > width(400), "{} vs {}", width(40), width(400));
        // Resamples with nothing to recover are left out; none at all for an empty set.
        let flat = [o(1.0, 1.0), o(1.0, 1.0), o(0.0, 1.0)];
        let values = bootstrap_apgr(&[0.1, 0.2, 0.3], &flat, 200, 7);
        assert!(!values.is_empty() && values.len() < 200, "{}", values.len());
        assert!(bootstrap_apgr(&[], &[], 10, 7).is_empty());
    }
}
