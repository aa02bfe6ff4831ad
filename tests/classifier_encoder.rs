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

/// The reference encoder cut after `layers` transformer layers: the same weights, with a config
/// of fewer layers, so its last output is the full model's output of layer `layers`.
fn reference_cut_at(layers: usize) -> (tempfile::TempDir, Encoder) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(encoder_dir().join("config.json")).expect("config"))
            .expect("config json");
    config["num_hidden_layers"] = layers.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write config");
    for f in ["model.safetensors", "tokenizer.json"] {
        std::os::unix::fs::symlink(encoder_dir().join(f), dir.path().join(f)).expect("link");
    }
    let enc = Encoder::load_with(dir.path(), Kernels::Reference).expect("cut reference");
    (dir, enc)
}

#[test]
fn pooled_layers_match_candle_bert_cut_at_each_layer() {
    let mut fast = Encoder::load(&encoder_dir()).expect("encoder");
    let last = fast.embed_texts(&TEXTS, 256, 4).expect("last layer");
    fast.set_layers(&[2, 4, 6]).expect("layers");
    assert_eq!(fast.dim, 3 * fast.hidden);
    let pooled = fast.embed_texts(&TEXTS, 256, 4).expect("pooled");
    for (i, ((p, tokens), (l, _))) in pooled.iter().zip(&last).enumerate() {
        assert_eq!(p.len(), fast.dim);
        // The last block is the default embedding, to the bit.
        assert_eq!(&p[2 * fast.hidden..], l.as_slice(), "text {i}: last block");
        for (block, layer) in [(0, 2), (1, 4)] {
            let (_dir, cut) = reference_cut_at(layer);
            let want = cut.embed(&[&tokens.ids]).expect("cut embed").remove(0);
            let got = &p[block * fast.hidden..(block + 1) * fast.hidden];
            let max_diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                max_diff < 2e-5,
                "text {i}, layer {layer}: max difference {max_diff}"
            );
            let norm: f32 = got.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-5,
                "layer {layer}: unit length, got {norm}"
            );
        }
    }
}

#[test]
fn pooled_layers_are_checked() {
    let mut fast = Encoder::load(&encoder_dir()).expect("encoder");
    let err = fast.set_layers(&[2, 7]).expect_err("layer 7 of 6");
    assert!(err.to_string().contains("layer 7"), "{err}");
    let err = fast.set_layers(&[4, 4]).expect_err("twice");
    assert!(err.to_string().contains("twice"), "{err}");
    assert_eq!(fast.dim, fast.hidden, "a refused call changes nothing");
    let mut reference = Encoder::load_with(&encoder_dir(), Kernels::Reference).expect("reference");
    reference
        .set_layers(&[6])
        .expect("the last layer is what the reference pools");
    let err = reference.set_layers(&[3, 6]).expect_err("reference");
    assert!(err.to_string().contains("last layer only"), "{err}");
}

#[test]
fn encoders_of_one_file_share_its_weights_and_pool_their_own_layers() {
    let mut classifier = Encoder::load(&encoder_dir()).expect("encoder");
    classifier.set_layers(&[2, 4, 6]).expect("layers");
    let embeddings = Encoder::load(&encoder_dir()).expect("encoder");
    assert!(embeddings.shares_weights_with(&classifier));
    let ids = embeddings
        .tokenize("Where is the station?", 128)
        .expect("ids")
        .ids;
    // Each pools its own layers: the last layer alone is the last block of the three.
    let three = classifier.embed(&[&ids]).expect("pooled")[0].clone();
    let last = embeddings.embed(&[&ids]).expect("last")[0].clone();
    assert_eq!((three.len(), last.len()), (3 * 384, 384));
    assert_eq!(&three[2 * 384..], &last[..]);
    // The reference implementation holds weights of its own.
    let reference = Encoder::load_with(&encoder_dir(), Kernels::Reference).expect("reference");
    assert!(!reference.shares_weights_with(&embeddings));
}
