//! One generation: prefill the prompt, then sample token by token until the end-of-turn token,
//! a stop string or `max_tokens`, handing out text that never splits a UTF-8 character and
//! never contains a stop string.

use super::model::Session;
use super::sampling::{Sampler, SamplingParams, TokenLogprob};
use super::{LocalError, LocalModel};
use llguidance::Matcher;
use std::time::{Duration, Instant};

/// Sampling and stopping settings (OpenAI semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Temperature, nucleus, penalties, biases and log probabilities.
    pub sampling: SamplingParams,
    /// Sampling seed: the same seed, prompt and settings give the same output.
    pub seed: u64,
    /// Texts that end the answer (not included in it).
    pub stop: Vec<String>,
    /// Keep generating past the end-of-turn token, up to `max_tokens` (for benchmarks).
    pub ignore_eos: bool,
}

/// A piece of the answer's text, with the log probabilities of the tokens it completes (when
/// they were asked for). The text may be empty while a character or a stop string is
/// incomplete.
pub struct Piece<'a> {
    pub text: &'a str,
    pub logprobs: Vec<TokenLogprob>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// End-of-turn token or stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The receiver went away (the client disconnected).
    Cancelled,
}

impl Finish {
    /// Label for `switchyard_local_generations_total{finish}`.
    pub fn label(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

impl Finish {
    /// The OpenAI `finish_reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Stop | Finish::Cancelled => "stop",
            Finish::Length => "length",
        }
    }
}

/// What a finished generation reports.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub finish: Finish,
    /// The place in the request's `stop` list of the stop string that ended the answer.
    pub stop_string: Option<usize>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Time to run the prompt (and so to the first token).
    pub prefill: Duration,
    /// Time spent generating after the first token.
    pub decode: Duration,
}

impl Outcome {
    /// Prompt tokens per second.
    pub fn prefill_rate(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second, after the first.
    pub fn decode_rate(&self) -> f64 {
        self.completion_tokens.saturating_sub(1) as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// Turns token ids into text pieces that end on whole characters.
struct Detokenizer<'a> {
    model: &'a LocalModel,
    tokens: Vec<u32>,
    prev: usize,
    current: usize,
}

impl Detokenizer<'_> {
    fn decode(&self, ids: &[u32]) -> Result<String, LocalError> {
        self.model
            .tokenizer
            .decode(ids, true)
            .map_err(|e| LocalError::Tokenizer(e.to_string()))
    }

    /// The new text after `token`, or `None` while a character is incomplete.
    fn push(&mut self, token: u32) -> Result<Option<String>, LocalError> {
        let before = self.decode(&self.tokens[self.prev..self.current])?;
        self.tokens.push(token);
        let after = self.decode(&self.tokens[self.prev..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            let piece = after.get(before.len()..).unwrap_or_default().to_string();
            self.prev = self.current;
            self.current = self.tokens.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// Whatever is left at the end (an incomplete character included, as U+FFFD).
    fn rest(&self) -> Result<String, LocalError> {
        let before = self.decode(&self.tokens[self.prev..self.current])?;
        let after = self.decode(&self.tokens[self.prev..])?;
        Ok(after.get(before.len()..).unwrap_or_default().to_string())
    }
}

/// Holds back text that may be the start of a stop string.
pub struct StopFilter {
    /// The stop strings with their places in the request's list (empty ones left out).
    stops: Vec<(usize, String)>,
    pending: String,
}

impl StopFilter {
    pub fn new(stops: &[String]) -> StopFilter {
        StopFilter {
            stops: stops
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty())
                .map(|(i, s)| (i, s.clone()))
                .collect(),
            pending: String::new(),
        }
    }

    /// Adds text; returns what can be handed out and, when a stop string was reached, its
    /// place in the request's list (the one that starts first; of those, the longest).
    pub fn push(&mut self, text: &str) -> (String, Option<usize>) {
        self.pending.push_str(text);
        if let Some((at, _, i)) = self
            .stops
            .iter()
            .filter_map(|(i, s)| Some((self.pending.find(s.as_str())?, usize::MAX - s.len(), *i)))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, Some(i));
        }
        let len = self.pending.len();
        let keep = (1..len.min(self.longest()) + 1)
            .rev()
            .find(|&k| {
                self.pending.is_char_boundary(len - k)
                    && self
                        .stops
                        .iter()
                        .any(|(_, s)| s.starts_with(&self.pending[len - k..]))
            })
            .unwrap_or(0);
        let out = self.pending[..len - keep].to_string();
        self.pending.drain(..len - keep);
        (out, None)
    }

    /// The text held back, at the end of the answer.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    fn longest(&self) -> usize {
        self.stops.iter().map(|(_, s)| s.len()).max().unwrap_or(0)
    }
}

/// One generation in progress: its KV cache, sampler, detokenizer and stop filter. Drive it
/// with [`Generation::advance`] on each step's logits (see [`generate`] for one sequence and the
/// engine's batched loop for several).
pub struct Generation<'m> {
    model: &'m LocalModel,
    session: Session,
    sampler: Sampler,
    /// The grammar the output must match, when there is one.
    constraint: Option<Matcher>,
    /// Log probabilities of tokens whose text was not handed out yet.
    pending: Vec<TokenLogprob>,
    detok: Detokenizer<'m>,
    stops: StopFilter,
    ignore_eos: bool,
    max_tokens: usize,
    generated: usize,
    finish: Option<Finish>,
    /// The place in the request's `stop` list of the stop string that ended the answer.
    stop_string: Option<usize>,
    prompt_tokens: usize,
    started: Instant,
    prefill: Duration,
}

impl<'m> Generation<'m> {
    /// Runs the prompt (prefill) and returns the generation with the first token's logits.
    pub fn start(
        model: &'m LocalModel,
        prompt: &[u32],
        params: &Params,
    ) -> Result<(Generation<'m>, Vec<f32>), LocalError> {
        let mut generation = Generation::new(model, prompt.len(), params)?;
        let logits = generation.prefill(prompt)?;
        Ok((generation, logits))
    }

    /// A generation for a prompt of `prompt_len` tokens, which [`Generation::prefill`] then
    /// runs (in one piece or several).
    pub fn new(
        model: &'m LocalModel,
        prompt_len: usize,
        params: &Params,
    ) -> Result<Generation<'m>, LocalError> {
        let context = model.weights.context_length;
        if prompt_len >= context {
            return Err(LocalError::PromptTooLong {
                prompt: prompt_len,
                context,
            });
        }
        let max_tokens = params.max_tokens.min(context - prompt_len).max(1);
        let session = model.weights.session(prompt_len + max_tokens);
        Ok(Generation {
            model,
            session,
            sampler: Sampler::new(params.sampling.clone(), params.seed),
            constraint: None,
            pending: Vec::new(),
            detok: Detokenizer {
                model,
                tokens: Vec::new(),
                prev: 0,
                current: 0,
            },
            stops: StopFilter::new(&params.stop),
            ignore_eos: params.ignore_eos,
            max_tokens,
            generated: 0,
            finish: None,
            stop_string: None,
            prompt_tokens: prompt_len,
            started: Instant::now(),
            prefill: Duration::ZERO,
        })
    }

    /// Runs the next `tokens` of the prompt; returns the logits after the last of them (the
    /// first token's, once the whole prompt has run). The prefill time reported at the end is
    /// the time from [`Generation::new`] to the end of the last piece.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LocalError> {
        if self.session.len() + tokens.len() > self.prompt_tokens {
            return Err(LocalError::Format(format!(
                "prefill past the prompt's {} tokens",
                self.prompt_tokens
            )));
        }
        let logits = self.model.weights.forward(&mut self.session, tokens)?;
        self.prefill = self.started.elapsed();
        Ok(logits)
    }

    /// Prompt tokens run so far.
    pub fn prefilled(&self) -> usize {
        self.session.len().min(self.prompt_tokens)
    }

    /// Constrains the output to `matcher`'s grammar: only tokens it allows are chosen, and the
    /// generation ends when the grammar is complete.
    pub fn constrain(&mut self, matcher: Matcher) {
        self.constraint = Some(matcher);
    }

    /// A second generation continuing from the same prompt (run once, its cache copied), with
    /// its own sampler seeded by `seed` and its own copy of the grammar: one more choice of
    /// `n`. Call it after the whole prompt has run and before the first token is chosen.
    ///
    /// Errors: the cache cannot be copied.
    pub fn fork(&self, params: &Params, seed: u64) -> Result<Generation<'m>, LocalError> {
        Ok(Generation {
            model: self.model,
            session: self.session.fork()?,
            sampler: Sampler::new(params.sampling.clone(), seed),
            constraint: self.constraint.as_ref().map(Matcher::deep_clone),
            pending: Vec::new(),
            detok: Detokenizer {
                model: self.model,
                tokens: Vec::new(),
                prev: 0,
                current: 0,
            },
            stops: StopFilter::new(&params.stop),
            ignore_eos: self.ignore_eos,
            max_tokens: self.max_tokens,
            generated: 0,
            finish: None,
            stop_string: None,
            prompt_tokens: self.prompt_tokens,
            started: self.started,
            prefill: self.prefill,
        })
    }

    /// Ends a generation whose client went away before its first token.
    pub fn cancel(mut self) -> Result<Outcome, LocalError> {
        self.finish = Some(Finish::Cancelled);
        self.finish(&mut |_| false)
    }

    /// Chooses the next token (within the grammar, when there is one).
    fn choose(
        &mut self,
        logits: &[f32],
    ) -> Result<Option<(u32, Option<TokenLogprob>)>, LocalError> {
        let grammar = |e: String| LocalError::Format(format!("constrained decoding: {e}"));
        let Some(m) = &mut self.constraint else {
            return Ok(self.sampler.pick(logits, None));
        };
        let mask = m.compute_mask().map_err(|e| grammar(e.to_string()))?;
        let allowed = |t: u32| mask.is_allowed(t);
        Ok(self.sampler.pick(logits, Some(&allowed)))
    }

    /// Samples the next token from `logits` and hands out its text through `emit` (which
    /// returns `false` when the receiver is gone). Returns the token to run next, or `None`
    /// when the generation is over.
    pub fn advance(
        &mut self,
        logits: &[f32],
        emit: &mut dyn FnMut(Piece) -> bool,
    ) -> Result<Option<u32>, LocalError> {
        if self.finish.is_some() {
            return Ok(None);
        }
        let Some((token, logprob)) = self.choose(logits)? else {
            // The grammar allows no token the model has: it is complete.
            self.finish = Some(Finish::Stop);
            return Ok(None);
        };
        let ends = self.model.end_tokens.contains(&token);
        if ends && (!self.ignore_eos || self.constraint.is_some()) {
            self.finish = Some(Finish::Stop);
            return Ok(None);
        }
        let mut complete = false;
        if let Some(m) = &mut self.constraint {
            m.consume_token(token)
                .map_err(|e| LocalError::Format(format!("constrained decoding: {e}")))?;
            complete = m.is_stopped();
        }
        self.pending.extend(logprob);
        self.generated += 1;
        match self.detok.push(token)? {
            Some(piece) => {
                let (out, stop) = self.stops.push(&piece);
                if !out.is_empty() {
                    let logprobs = std::mem::take(&mut self.pending);
                    if !emit(Piece {
                        text: &out,
                        logprobs,
                    }) {
                        self.finish = Some(Finish::Cancelled);
                        return Ok(None);
                    }
                }
                if stop.is_some() {
                    self.finish = Some(Finish::Stop);
                    self.stop_string = stop;
                    return Ok(None);
                }
            }
            None => {
                if !emit(Piece {
                    text: "",
                    logprobs: vec![],
                }) {
                    self.finish = Some(Finish::Cancelled);
                    return Ok(None);
                }
            }
        }
        if complete {
            self.finish = Some(Finish::Stop);
            return Ok(None);
        }
        if self.generated >= self.max_tokens {
            self.finish = Some(Finish::Length);
            return Ok(None);
        }
        Ok(Some(token))
    }

    /// The KV cache, for batched steps.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Ends the generation: hands out any text still held back and reports the outcome.
    pub fn finish(mut self, emit: &mut dyn FnMut(Piece) -> bool) -> Result<Outcome, LocalError> {
        let mut finish = self.finish.unwrap_or(Finish::Length);
        if finish != Finish::Cancelled && self.stop_string.is_none() {
            let (out, stop) = self.stops.push(&self.detok.rest()?);
            if stop.is_some() {
                // The answer's last characters reached a stop string: that is how it ended.
                finish = Finish::Stop;
                self.stop_string = stop;
            }
            let tail = out + &self.stops.flush();
            if !tail.is_empty() || !self.pending.is_empty() {
                emit(Piece {
                    text: &tail,
                    logprobs: std::mem::take(&mut self.pending),
                });
            }
        }
        Ok(Outcome {
            finish,
            stop_string: self.stop_string,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated,
            prefill: self.prefill,
            decode: self.started.elapsed().saturating_sub(self.prefill),
        })
    }
}

/// Generates an answer to `prompt` (token ids). `emit` receives each piece of text and returns
/// `false` to stop (the receiver is gone).
pub fn generate(
    model: &LocalModel,
    prompt: &[u32],
    params: &Params,
    emit: impl FnMut(&str) -> bool,
) -> Result<Outcome, LocalError> {
    generate_with(model, prompt, params, None, emit)
}

/// [`generate`] with the output constrained to `constraint`'s grammar, when given.
pub fn generate_with(
    model: &LocalModel,
    prompt: &[u32],
    params: &Params,
    constraint: Option<Matcher>,
    mut emit: impl FnMut(&str) -> bool,
) -> Result<Outcome, LocalError> {
    let mut emit = |p: Piece| emit(p.text);
    let mut g = Generation::new(model, prompt.len(), params)?;
    if let Some(m) = constraint {
        g.constrain(m);
    }
    let mut logits = g.prefill(prompt)?;
    while let Some(token) = g.advance(&logits, &mut emit)? {
        logits = model.weights.forward(&mut g.session, &[token])?;
    }
    g.finish(&mut emit)
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (o, stop) = f.push(p);
            out += &o;
            if stop.is_some() {
                return (out, stop);
            }
        }
        (out + &f.flush(), None)
    }

    #[test]
    fn stop_strings_split_across_pieces_are_never_emitted() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), Some(0))
        );
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), Some(0)));
        assert_eq!(
            run(&["xyz", "yo"], &["say y", "o!"]),
            ("say ".into(), Some(1))
        );
        // The stop string that matched is named by its place in the request's list (an empty
        // one keeps its place); of two starting at the same place, the longer.
        assert_eq!(run(&["", "END"], &["a END"]), ("a ".into(), Some(1)));
        assert_eq!(run(&["ab", "abc"], &["xabcz"]), ("x".into(), Some(1)));
    }

    #[test]
    fn held_back_text_is_released_when_it_is_not_a_stop() {
        assert_eq!(run(&["END"], &["the E", "ND"]), ("the ".into(), Some(0)));
        assert_eq!(run(&["END"], &["the E", "nd"]), ("the End".into(), None));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), None));
        assert_eq!(run(&["é!"], &["caf", "é"]), ("café".into(), None));
    }
}
