//! Questions with gold answers, and the grading of a model's free-text answer to them: a fixed
//! sample of GSM8K (a number) and of MMLU-Pro (a letter, A to J), drawn the same way for every
//! model, and the answer extracted as the lm-evaluation-harness extracts it.
//!
//! Extraction (lm-evaluation-harness, tasks `gsm8k_cot` and `mmlu_pro`): for GSM8K, the number
//! after "The answer is" (its `strict-match` regex `The answer is (\-?[0-9\.\,]+).`), else the
//! last number in the text (its `flexible-extract` regex `(-?[$0-9.,]{2,})|(-?[0-9]+)`), compared
//! with the gold number after `####` once `$`, `,` and a trailing `.` are removed; for MMLU-Pro,
//! the first `answer is (X)` (regex `answer is \(?([ABCDEFGHIJ])\)?`), compared with the gold
//! letter. An answer with nothing to extract is wrong.

use regex::Regex;
use serde::Deserialize;
use std::path::Path;
use std::sync::LazyLock;

/// A benchmark with gold answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Grade-school math word problems: the answer is a number.
    Gsm8k,
    /// MMLU-Pro: ten options, the answer is a letter.
    MmluPro,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Gsm8k => "gsm8k",
            Task::MmluPro => "mmlu_pro",
        }
    }
}

/// One question of a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub task: Task,
    /// The row's number in its file (GSM8K) or its `question_id` (MMLU-Pro).
    pub id: String,
    /// The user message the model is asked: the question and the answer-format instruction.
    pub prompt: String,
    /// The question as a client would send it, without the answer-format instruction: GSM8K's
    /// question, or MMLU-Pro's question and options in the router's training layout
    /// ([`crate::classifier::data::mmlu_prompt`]). What a router trained on labels reads.
    pub question: String,
    /// The gold answer: a normalised number, or a letter.
    pub gold: String,
}

#[derive(Deserialize)]
struct Gsm8kRow {
    question: String,
    answer: String,
}

#[derive(Deserialize)]
struct MmluProRow {
    question_id: serde_json::Value,
    question: String,
    options: Vec<String>,
    answer: String,
}

const LETTERS: &str = "ABCDEFGHIJ";

/// SplitMix64: the order of rows in a sample (the same for every model and machine).
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` rows of `rows`, chosen by `seed`, in their chosen order.
fn sample<T>(rows: Vec<T>, n: usize, seed: u64) -> Vec<(usize, T)> {
    let mut keyed: Vec<(u64, usize, T)> = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| (mix(seed, i as u64), i, r))
        .collect();
    keyed.sort_by_key(|(k, i, _)| (*k, *i));
    keyed.into_iter().take(n).map(|(_, i, r)| (i, r)).collect()
}

fn read_rows<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// `n` questions of `task` from the training-data folder `dir` (`gsm8k/train.jsonl`,
/// `mmlu_pro/questions.jsonl`), chosen by `seed`.
///
/// Errors: a file that cannot be read, or a row that is not of the task's shape.
pub fn load_sample(dir: &Path, task: Task, n: usize, seed: u64) -> Result<Vec<Question>, String> {
    match task {
        Task::Gsm8k => {
            let rows: Vec<Gsm8kRow> = read_rows(&dir.join("gsm8k/train.jsonl"))?;
            Ok(sample(rows, n, seed)
                .into_iter()
                .map(|(i, r)| Question {
                    task,
                    id: i.to_string(),
                    prompt: format!(
                        "{}\nSolve it step by step, then end with \"The answer is N.\", where N is the final number.",
                        r.question.trim()
                    ),
                    question: r.question.trim().to_string(),
                    gold: r
                        .answer
                        .rsplit("####")
                        .next()
                        .map(normalise_number)
                        .unwrap_or_default(),
                })
                .collect())
        }
        Task::MmluPro => {
            let rows: Vec<MmluProRow> = read_rows(&dir.join("mmlu_pro/questions.jsonl"))?;
            Ok(sample(rows, n, seed)
                .into_iter()
                .map(|(_, r)| {
                    let options: String = r
                        .options
                        .iter()
                        .zip(LETTERS.chars())
                        .map(|(o, l)| format!("{l}. {o}\n"))
                        .collect();
                    Question {
                        task,
                        id: match &r.question_id {
                            serde_json::Value::String(s) => s.clone(),
                            v => v.to_string(),
                        },
                        prompt: format!(
                            "{}\n\nOptions:\n{options}\nThink step by step, then end with \"The answer is (X)\", where X is the letter of the correct option.",
                            r.question.trim()
                        ),
                        question: crate::classifier::data::mmlu_prompt(
                            &r.question,
                            &r.options
                                .iter()
                                .map(|o| serde_json::Value::String(o.clone()))
                                .collect::<Vec<_>>(),
                        ),
                        gold: r.answer.trim().to_string(),
                    }
                })
                .collect())
        }
    }
}

/// A number as GSM8K's gold answers write it: no `$`, no thousands separators, no trailing `.`.
pub fn normalise_number(s: &str) -> String {
    s.trim()
        .replace(['$', ','], "")
        .trim_end_matches('.')
        .to_string()
}

/// A normalised number's value, when it is one (`18`, `-3`, `18.50`).
pub fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

// The lm-evaluation-harness GSM8K patterns ("strict-match" and "flexible-extract",
// lm_eval/tasks/gsm8k/gsm8k-cot.yaml), with two repairs: the strict pattern takes a `$` and ends
// on a digit (the harness's `(\-?[0-9\.\,]+).` needs one more character after the number, and
// without one drops its last digit: "The answer is 42" at the end read as 4), and the flexible
// one keeps only matches with a digit (a trailing "..." read as no answer).
static STRICT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"The answer is \$?(-?[0-9.,]*[0-9])").expect("the strict-match pattern compiles")
});
static FLEXIBLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").expect("the flexible-extract pattern compiles")
});
// MMLU-Pro's "answer is (X)", also with a colon or markdown emphasis around the letter; the
// letter must end its word ("the answer is Because" chooses nothing).
static CHOICE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"answer is:?\s*\**\s*\(?([ABCDEFGHIJ])\b").expect("the choice pattern compiles")
});

/// The number a GSM8K answer gives (normalised), if any.
pub fn extract_number(text: &str) -> Option<String> {
    if let Some(c) = STRICT.captures(text) {
        return Some(normalise_number(&c[1]));
    }
    FLEXIBLE
        .find_iter(text)
        .map(|m| normalise_number(m.as_str()))
        .filter(|n| n.bytes().any(|b| b.is_ascii_digit()))
        .last()
}

/// The letter an MMLU-Pro answer chooses, if any.
pub fn extract_choice(text: &str) -> Option<String> {
    CHOICE.captures(text).map(|c| c[1].to_string())
}

/// What the answer to `q` gives (number or letter), if anything.
pub fn extract(q: &Question, answer: &str) -> Option<String> {
    match q.task {
        Task::Gsm8k => extract_number(answer),
        Task::MmluPro => extract_choice(answer),
    }
}

/// Whether `answer` answers `q` correctly: the same letter, or the same number by value
/// (`18.00` is `18`).
pub fn is_correct(q: &Question, answer: &str) -> bool {
    extract(q, answer).is_some_and(
        |a| match (q.task, parse_number(&a), parse_number(&q.gold)) {
            (Task::Gsm8k, Some(x), Some(y)) => (x - y).abs() < 1e-9,
            _ => a == q.gold,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_extracted_as_the_harness_does() {
        assert_eq!(
            extract_number("3 + 4 = 7 apples. The answer is 1,234.").as_deref(),
            Some("1234")
        );
        // No "The answer is": the last number.
        assert_eq!(
            extract_number("She pays $12 and then $18.50 in total.").as_deref(),
            Some("18.50")
        );
        assert_eq!(extract_number("no digits").as_deref(), None);
        assert_eq!(normalise_number(" 72"), "72");
        // The answer's last digit is kept when nothing follows it.
        assert_eq!(extract_number("The answer is 42").as_deref(), Some("42"));
        assert_eq!(
            extract_number("The answer is 1,234\nDone").as_deref(),
            Some("1234")
        );
        assert_eq!(
            extract_number("The answer is $18.00.").as_deref(),
            Some("18.00")
        );
        // A trailing ellipsis is not the answer.
        assert_eq!(extract_number("He has 18 apples...").as_deref(), Some("18"));
    }

    #[test]
    fn numbers_are_graded_by_value_and_letters_by_letter() {
        let q = |task, gold: &str| Question {
            task,
            id: "q".into(),
            prompt: String::new(),
            question: String::new(),
            gold: gold.into(),
        };
        assert!(is_correct(&q(Task::Gsm8k, "18"), "The answer is $18.00."));
        assert!(!is_correct(&q(Task::Gsm8k, "18"), "The answer is 17."));
        assert!(is_correct(&q(Task::MmluPro, "B"), "So the answer is (B)."));
        assert!(!is_correct(&q(Task::MmluPro, "B"), "So the answer is (C)."));
    }

    #[test]
    fn choices_are_extracted_as_the_harness_does() {
        assert_eq!(
            extract_choice("... so the answer is (C).").as_deref(),
            Some("C")
        );
        assert_eq!(extract_choice("The answer is J").as_deref(), Some("J"));
        assert_eq!(extract_choice("I pick B").as_deref(), None);
        assert_eq!(
            extract_choice("The correct answer is: **(B)**").as_deref(),
            Some("B")
        );
        assert_eq!(
            extract_choice("the answer is Because of it").as_deref(),
            None
        );
    }

    #[test]
    fn a_sample_is_the_same_for_a_seed_and_differs_across_seeds() {
        let rows: Vec<u32> = (0..100).collect();
        let a = sample(rows.clone(), 10, 7);
        assert_eq!(a, sample(rows.clone(), 10, 7));
        assert_ne!(a, sample(rows, 10, 8));
        assert_eq!(a.len(), 10);
    }

    #[test]
    fn a_question_is_kept_without_the_answer_format_instruction() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("gsm8k")).expect("gsm8k dir");
        std::fs::create_dir_all(dir.path().join("mmlu_pro")).expect("mmlu_pro dir");
        std::fs::write(
            dir.path().join("gsm8k/train.jsonl"),
            "{\"question\": \" Tom has 3 apples and buys 2. How many? \", \"answer\": \"3+2=5\\n#### 5\"}\n",
        )
        .expect("gsm8k rows");
        std::fs::write(
            dir.path().join("mmlu_pro/questions.jsonl"),
            "{\"question_id\": 70, \"question\": \"Which is a colour?\", \"options\": [\"red\", \"seven\"], \"answer\": \"A\"}\n",
        )
        .expect("mmlu_pro rows");
        let gsm = load_sample(dir.path(), Task::Gsm8k, 5, 7).expect("gsm8k sample");
        assert_eq!(gsm.len(), 1);
        assert_eq!(gsm[0].question, "Tom has 3 apples and buys 2. How many?");
        assert!(gsm[0].prompt.starts_with(&gsm[0].question));
        assert!(gsm[0].prompt.contains("The answer is N."));
        assert_eq!(gsm[0].gold, "5");
        let mmlu = load_sample(dir.path(), Task::MmluPro, 5, 7).expect("mmlu_pro sample");
        assert_eq!(
            mmlu[0].question,
            "Which is a colour?\nA. red\nB. seven\nAnswer:"
        );
        assert!(mmlu[0].prompt.contains("The answer is (X)"));
        assert!(!mmlu[0].question.contains("step by step"));
    }
}
