//! Model families with no real file in reach, checked on small GGUF files the test builds itself:
//! random weights under real metadata, in the block formats the family's released files use
//! (Q4_K and Q6_K matrices, F32 norms, Q8_0 embeddings). The on-box decoder's logits are compared
//! with candle-transformers' quantized reference model of the family over a prompt and greedy
//! steps, with candle's kernels and with the project's.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen3;
use std::path::{Path, PathBuf};
use switchyard::local::model::{Kernels, Weights};

/// A small model's shape.
struct Shape {
    vocab: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
}

/// Writes a qwen3 GGUF of `shape` with random weights to a fresh path.
fn qwen3_file(shape: &Shape, name: &str) -> PathBuf {
    let dev = Device::Cpu;
    let rand = |rows: usize, cols: usize, scale: f64| {
        (Tensor::randn(0f32, 1f32, (rows, cols), &dev).expect("randn") * scale).expect("scale")
    };
    let norm = |n: usize| {
        let noise = (Tensor::randn(0f32, 1f32, n, &dev).expect("randn") * 0.1).expect("scale");
        (noise + 1.0).expect("shift")
    };
    let q = |t: Tensor, dtype: GgmlDType| QTensor::quantize(&t, dtype).expect("quantize");
    let Shape {
        vocab,
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        ffn,
    } = *shape;
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            q(rand(vocab, hidden, 1.0), GgmlDType::Q8_0),
        ),
        ("output_norm.weight".into(), q(norm(hidden), GgmlDType::F32)),
        (
            "output.weight".into(),
            q(rand(vocab, hidden, 0.05), GgmlDType::Q6K),
        ),
    ];
    let scale = 1.0 / (hidden as f64).sqrt();
    for i in 0..layers {
        let b = |s: &str| format!("blk.{i}.{s}");
        tensors.extend([
            (b("attn_norm.weight"), q(norm(hidden), GgmlDType::F32)),
            (b("attn_q_norm.weight"), q(norm(head_dim), GgmlDType::F32)),
            (b("attn_k_norm.weight"), q(norm(head_dim), GgmlDType::F32)),
            (
                b("attn_q.weight"),
                q(rand(heads * head_dim, hidden, scale), GgmlDType::Q4K),
            ),
            (
                b("attn_k.weight"),
                q(rand(kv_heads * head_dim, hidden, scale), GgmlDType::Q4K),
            ),
            (
                b("attn_v.weight"),
                q(rand(kv_heads * head_dim, hidden, scale), GgmlDType::Q6K),
            ),
            (
                b("attn_output.weight"),
                q(rand(hidden, heads * head_dim, scale), GgmlDType::Q4K),
            ),
            (b("ffn_norm.weight"), q(norm(hidden), GgmlDType::F32)),
            (
                b("ffn_gate.weight"),
                q(rand(ffn, hidden, scale), GgmlDType::Q4K),
            ),
            (
                b("ffn_up.weight"),
                q(rand(ffn, hidden, scale), GgmlDType::Q4K),
            ),
            (
                b("ffn_down.weight"),
                q(rand(hidden, ffn, 1.0 / (ffn as f64).sqrt()), GgmlDType::Q6K),
            ),
        ]);
    }
    use gguf_file::Value;
    let u = |v: usize| Value::U32(v as u32);
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("qwen3".into())),
        // F32 activations in the reference (its default is F16).
        ("general.dtype", Value::U32(0)),
        ("qwen3.embedding_length", u(hidden)),
        ("qwen3.block_count", u(layers)),
        ("qwen3.attention.head_count", u(heads)),
        ("qwen3.attention.head_count_kv", u(kv_heads)),
        ("qwen3.attention.key_length", u(head_dim)),
        ("qwen3.attention.value_length", u(head_dim)),
        ("qwen3.feed_forward_length", u(ffn)),
        ("qwen3.context_length", u(512)),
        ("qwen3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("qwen3.rope.freq_base", Value::F32(1_000_000.0)),
    ];
    let path = std::env::temp_dir().join(format!(
        "switchyard-{name}-{}-{:?}.gguf",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut f = std::fs::File::create(&path).expect("create");
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md, &ts).expect("write gguf");
    path
}

fn open(path: &Path) -> (gguf_file::Content, std::fs::File) {
    let mut file = std::fs::File::open(path).expect("open");
    let ct = gguf_file::Content::read(&mut file).expect("gguf");
    (ct, file)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .expect("logits")
}

/// The decoder against the reference: a 12-token prompt, then 6 greedy steps; logits within
/// `tolerance` (relative to the largest logit) and the same greedy tokens.
fn compare_qwen3(path: &Path, kernels: Kernels, tolerance: f32) {
    let (ct, mut file) = open(path);
    let ours = Weights::from_gguf(&ct, &mut file, kernels).expect("our decoder loads it");
    let (ct, mut file) = open(path);
    let mut reference =
        quantized_qwen3::ModelWeights::from_gguf(ct, &mut file, &Device::Cpu).expect("reference");
    let mut step = |tokens: &[u32], pos: usize| -> Vec<f32> {
        let input = Tensor::new(tokens, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("input");
        reference
            .forward(&input, pos)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("reference forward")
    };
    let prompt: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 512).collect();
    let mut session = ours.session(prompt.len() + 8);
    let mut logits = ours.forward(&mut session, &prompt).expect("forward");
    let mut expected = step(&prompt, 0);
    for (i, pos) in (prompt.len()..prompt.len() + 6).enumerate() {
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= tolerance * scale,
            "step {i}: logits differ by {diff} (largest logit {scale})"
        );
        let next = argmax(&logits);
        assert_eq!(next, argmax(&expected), "step {i}: greedy tokens differ");
        logits = ours.forward(&mut session, &[next as u32]).expect("forward");
        expected = step(&[next as u32], pos);
    }
}

const SHAPE: Shape = Shape {
    vocab: 512,
    hidden: 256,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    // Wider than hidden / heads (64), as Qwen3's heads are.
    head_dim: 128,
    ffn: 512,
};

#[test]
fn qwen3_matches_candles_reference_model() {
    let path = qwen3_file(&SHAPE, "qwen3");
    compare_qwen3(&path, Kernels::Portable, 1e-3);
    compare_qwen3(&path, Kernels::Fast, 1e-3);
    let _ = std::fs::remove_file(&path);
}
