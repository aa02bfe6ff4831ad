//! The request classifier's encoder with the real all-MiniLM-L6-v2 weights: the fast forward pass
//! agrees with candle's BertModel, truncation keeps head and tail, embeddings are unit vectors.

use std::path::PathBuf;
use switchyard::classifier::encoder::{Encoder, Kernels};

fn encoder_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

const TEXTS: [&str; 4] = [
    "hi",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
    "Résumé: naïve café, 東京 — emojis 🚀 and code `fn main() {}`",
];

/// On every kernel tier this CPU runs (the others are named in a note).
#[test]
fn fast_forward_pass_matches_candle_bert() {
    let reference = Encoder::load_with(&encoder_dir(), Kernels::Reference).expect("candle encoder");
    let tokens: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| reference.tokenize(t, 256).expect("tokenize").ids)
        .collect();
    let batch: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
    let want: Vec<Vec<f32>> = batch
        .iter()
        .map(|ids| reference.embed(&[ids]).expect("reference embed").remove(0))
        .collect();
    switchyard::cpu::for_each_supported_path(|path| {
        let fast = Encoder::load_with(&encoder_dir(), Kernels::FastOn(path)).expect("fast encoder");
        // One batch of different lengths against each sequence alone in the reference.
        let got = fast.embed(&batch).expect("fast embed");
        for (i, want) in want.iter().enumerate() {
            let max_diff = got[i]
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                max_diff < 2e-5,
                "{path}: text {i}: max difference {max_diff}"
            );
            let norm: f32 = got[i].iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{path}: unit length, got {norm}");
        }
    });
    // Padding in the reference batch does not change its results either.
    let padded = reference.embed(&batch).expect("reference batch");
    for (a, b) in padded.iter().zip(&want) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 2e-5, "padded reference differs by {d}");
    }
}

#[test]
fn long_inputs_keep_head_and_tail() {
    let enc = Encoder::load(&encoder_dir()).expect("encoder");
    let text = format!("alpha {} omega", "word ".repeat(600));
    let t = enc.tokenize(&text, 64).expect("tokenize");
    assert!(t.truncated);
    assert_eq!(t.ids.len(), 64);
    assert!(t.original > 600);
    let words: Vec<String> = t.ids.iter().map(|&id| enc.token(id)).collect();
    assert_eq!(words[0], "[CLS]");
    assert_eq!(words[1], "alpha", "the head is kept");
    assert_eq!(words[62], "omega", "the tail is kept");
    assert_eq!(words[63], "[SEP]");
    let short = enc.tokenize("alpha omega", 64).expect("tokenize");
    assert!(!short.truncated);
    assert_eq!(short.ids.len(), 4);
}
