//! Choosing the next token from a step's logits, as OpenAI's chat completions define the
//! request fields: `logit_bias` (added to the logits), `presence_penalty` and
//! `frequency_penalty` (OpenAI's formula, over the tokens generated so far:
//! `logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty`), a grammar's
//! mask (tokens it forbids never win), `temperature` (0 = greedy) and `top_p`, from a seeded
//! generator so that the same seed gives the same choices. Log probabilities (`logprobs`,
//! `top_logprobs`) are the model's own: the log-softmax of the raw logits, before any of these.

use std::collections::HashMap;

/// The sampling fields of a request, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus sampling mass; 1 = off.
    pub top_p: f64,
    /// Subtracted once from the logit of every token already generated (-2 to 2).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit per time it was generated (-2 to 2).
    pub frequency_penalty: f32,
    /// Added to the logits of these tokens (-100 to 100).
    pub logit_bias: Vec<(u32, f32)>,
    /// Report the chosen token's log probability and this many alternatives (0 to 20); `None`
    /// reports nothing.
    pub logprobs: Option<usize>,
}

/// A token with its log probability under the model (natural log).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// The most likely tokens at this step, most likely first (`top_logprobs` of them).
    pub top: Vec<(u32, f32)>,
}

/// The sampler of one generation.
pub struct Sampler {
    params: SamplingParams,
    rng: fastrand::Rng,
    /// Times each token was generated, for the penalties.
    counts: HashMap<u32, u32>,
    scratch: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Sampler {
        Sampler {
            params,
            rng: fastrand::Rng::with_seed(seed),
            counts: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Chooses the next token from `logits` (one per vocabulary entry). `allowed` says which
    /// tokens a grammar allows (all when `None`); when it allows none that the logits cover,
    /// the result is `None`.
    pub fn pick(
        &mut self,
        logits: &[f32],
        allowed: Option<&dyn Fn(u32) -> bool>,
    ) -> Option<(u32, Option<TokenLogprob>)> {
        let (p, f) = (self.params.presence_penalty, self.params.frequency_penalty);
        let shaped =
            !self.params.logit_bias.is_empty() || p != 0.0 || f != 0.0 || allowed.is_some();
        let token = if shaped {
            let l = self.shape(logits, allowed);
            let token = self.choose(&l);
            self.scratch = l;
            token
        } else {
            // Nothing moves a logit: choose from the model's own, without a copy.
            self.choose(logits)
        }?;
        *self.counts.entry(token).or_insert(0) += 1;
        let logprob = self.params.logprobs.map(|k| logprob_of(logits, token, k));
        Some((token, logprob))
    }

    /// A copy of `logits` with the biases, penalties and grammar mask applied (in the scratch
    /// buffer, which the caller puts back).
    fn shape(&mut self, logits: &[f32], allowed: Option<&dyn Fn(u32) -> bool>) -> Vec<f32> {
        let mut l = std::mem::take(&mut self.scratch);
        l.clear();
        l.extend_from_slice(logits);
        for &(t, b) in &self.params.logit_bias {
            if let Some(x) = l.get_mut(t as usize) {
                *x += b;
            }
        }
        let (p, f) = (self.params.presence_penalty, self.params.frequency_penalty);
        if p != 0.0 || f != 0.0 {
            for (&t, &c) in &self.counts {
                if let Some(x) = l.get_mut(t as usize) {
                    *x -= c as f32 * f + p;
                }
            }
        }
        if let Some(allowed) = allowed {
            for (t, x) in l.iter_mut().enumerate() {
                if !allowed(t as u32) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        l
    }

    fn choose(&mut self, l: &[f32]) -> Option<u32> {
        let best = argmax(l)?;
        let t = self.params.temperature;
        if t <= 0.0 {
            return Some(best);
        }
        let max = l[best as usize];
        let inv = (1.0 / t) as f32;
        // Probabilities (unnormalised), with the tokens that have any.
        let mut probs: Vec<(u32, f32)> = l
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_finite())
            .map(|(i, &x)| (i as u32, ((x - max) * inv).exp()))
            .filter(|(_, p)| *p > 0.0)
            .collect();
        if self.params.top_p < 1.0 {
            probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
            let total: f32 = probs.iter().map(|p| p.1).sum();
            let want = self.params.top_p as f32 * total;
            let mut mass = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                mass += p.1;
                if mass >= want {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep.max(1));
        }
        let total: f32 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.f32() * total;
        for &(tok, p) in &probs {
            if r < p {
                return Some(tok);
            }
            r -= p;
        }
        Some(probs.last().map_or(best, |p| p.0))
    }
}

/// The index of the largest finite value.
fn argmax(l: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in l.iter().enumerate() {
        if x.is_finite() && best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// `token`'s log probability under the log-softmax of `logits`, and the `k` most likely
/// tokens' (most likely first).
pub fn logprob_of(logits: &[f32], token: u32, k: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let norm = max + sum.ln() as f32;
    let lp = |t: u32| {
        logits
            .get(t as usize)
            .map_or(f32::NEG_INFINITY, |x| x - norm)
    };
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k > 0 {
        for (i, &x) in logits.iter().enumerate() {
            if top.len() < k || x > top[top.len() - 1].1 {
                let at = top.partition_point(|p| p.1 >= x);
                top.insert(at, (i as u32, x));
                top.truncate(k);
            }
        }
    }
    TokenLogprob {
        token,
        logprob: lp(token),
        top: top.into_iter().map(|(t, x)| (t, x - norm)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_bias_and_mask_decide_the_token() {
        let logits = [1.0, 3.0, 2.0];
        let mut s = Sampler::new(params(), 1);
        assert_eq!(s.pick(&logits, None).unwrap().0, 1);
        let mut s = Sampler::new(
            SamplingParams {
                logit_bias: vec![(2, 5.0)],
                ..params()
            },
            1,
        );
        assert_eq!(s.pick(&logits, None).unwrap().0, 2);
        let mut s = Sampler::new(params(), 1);
        assert_eq!(s.pick(&logits, Some(&|t| t != 1)).unwrap().0, 2);
        assert_eq!(s.pick(&logits, Some(&|_| false)), None);
    }

    #[test]
    fn penalties_follow_openais_formula() {
        // Token 1 leads by 1.5: after one use a frequency penalty of 2 puts token 2 ahead.
        let logits = [-9.0, 3.5, 2.0];
        let run = |p: f32, f: f32| {
            let mut s = Sampler::new(
                SamplingParams {
                    presence_penalty: p,
                    frequency_penalty: f,
                    ..params()
                },
                1,
            );
            (0..4)
                .map(|_| s.pick(&logits, None).unwrap().0)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(0.0, 0.0), [1, 1, 1, 1]);
        assert_eq!(run(0.0, 2.0), [1, 2, 1, 2]);
        // Presence counts once: after both were used, token 1 leads again for good.
        assert_eq!(run(2.0, 0.0), [1, 2, 1, 1]);
    }

    #[test]
    fn the_same_seed_gives_the_same_choices_and_logprobs_are_normalised() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            logprobs: Some(3),
            ..Default::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(p.clone(), seed);
            (0..20)
                .map(|_| s.pick(&logits, None).unwrap().0)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let lp = logprob_of(&logits, 6, 3);
        let total: f64 = logits
            .iter()
            .enumerate()
            .map(|(i, _)| (logprob_of(&logits, i as u32, 0).logprob as f64).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        assert_eq!(lp.top.len(), 3);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(lp.top[0].1, lp.logprob.max(lp.top[0].1));
    }
}
