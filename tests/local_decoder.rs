//! The on-box decoder against candle's reference implementations of the same architectures, on
//! the real weights (SmolLM2: llama; Qwen2.5-Coder: qwen2): with candle's kernels, the same
//! next-token logits and greedy continuation; with the project's block kernels (Q4_1 for SmolLM2;
//! Q5_0 and Q8_0 for Qwen), the same greedy
//! continuation.

mod common;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
use std::path::Path;
use switchyard::api::Role;
use switchyard::local::model::Kernels;
use switchyard::local::LocalModel;

/// A reference model: candle's forward with its own KV cache.
trait Reference {
    fn step(&mut self, tokens: &[u32], pos: usize) -> Vec<f32>;
}

impl Reference for quantized_llama::ModelWeights {
    fn step(&mut self, tokens: &[u32], pos: usize) -> Vec<f32> {
        let input = Tensor::new(tokens, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        self.forward(&input, pos)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

impl Reference for quantized_qwen2::ModelWeights {
    fn step(&mut self, tokens: &[u32], pos: usize) -> Vec<f32> {
        let input = Tensor::new(tokens, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let out = self.forward(&input, pos).unwrap();
        out.flatten_all().unwrap().to_vec1().unwrap()
    }
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap()
}

/// Runs the prompt and 8 greedy steps through both; logits must agree within `tolerance` and
/// tokens exactly.
fn compare(path: &Path, kernels: Kernels, tolerance: f32, reference: &mut dyn Reference) {
    let ours = LocalModel::load_with(path, None, kernels).expect("load");
    let prompt = ours
        .prompt(&[(Role::User, "What is the capital of France?".into())])
        .expect("prompt");
    let mut session = ours.weights.session(prompt.len() + 16);
    let mut logits = ours
        .weights
        .forward(&mut session, &prompt)
        .expect("forward");
    let mut expected = reference.step(&prompt, 0);
    for (step, pos) in (prompt.len()..prompt.len() + 8).enumerate() {
        let max_diff = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < tolerance,
            "step {step}: logits differ by {max_diff}"
        );
        let next = argmax(&logits);
        assert_eq!(next, argmax(&expected), "step {step}: greedy tokens differ");
        logits = ours.weights.forward(&mut session, &[next]).unwrap();
        expected = reference.step(&[next], pos);
    }
}

fn open(path: &Path) -> (gguf_file::Content, std::fs::File) {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/fetch-models.sh --qwen)",
            path.display()
        )
    });
    let ct = gguf_file::Content::read(&mut file).expect("gguf");
    (ct, file)
}

#[test]
fn decoder_matches_candles_llama_on_smollm2() {
    let path = common::smollm2_path();
    let (ct, mut file) = open(&path);
    let mut reference =
        quantized_llama::ModelWeights::from_gguf(ct, &mut file, &Device::Cpu).expect("reference");
    compare(&path, Kernels::Portable, 1e-2, &mut reference);
}

/// The project's Q4_1 kernel quantises activations like llama.cpp (candle's kernel does too,
/// with 16-bit scales), so logits drift apart a little over 30 layers; the answer must not.
#[test]
fn block_kernels_keep_smollm2_greedy_answer() {
    let path = common::smollm2_path();
    let (ct, mut file) = open(&path);
    let mut reference =
        quantized_llama::ModelWeights::from_gguf(ct, &mut file, &Device::Cpu).expect("reference");
    compare(&path, Kernels::Fast, 3.0, &mut reference);
}

#[test]
fn decoder_matches_candles_qwen2_on_qwen_coder() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/qwen2.5-coder-0.5b-instruct.gguf");
    let (ct, mut file) = open(&path);
    let mut reference =
        quantized_qwen2::ModelWeights::from_gguf(ct, &mut file, &Device::Cpu).expect("reference");
    // Activations are quantised to 8 bits before each product, so a tiny difference in
    // summation order can flip a rounding step: logits agree to within 1, tokens exactly.
    compare(&path, Kernels::Fast, 1.0, &mut reference);
}

/// `switchyard generate` on each kernel tier this CPU runs (set on the child process, as a user
/// would): each answers, and reports the tier and block kernel it ran.
#[test]
fn generate_runs_and_reports_each_kernel_tier() {
    switchyard::cpu::for_each_supported_path(|path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "generate",
                "--json",
                "--temperature",
                "0",
                "--max-tokens",
                "8",
                "--model",
            ])
            .arg(common::smollm2_path())
            .arg("What is the capital of France?")
            .env("SWITCHYARD_KERNEL", path.as_str())
            .output()
            .expect("run switchyard");
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["kernels"], path.as_str());
        assert_eq!(
            v["block_kernel"],
            switchyard::local::block_kernel_name(path)
        );
        let answer = v["answer"].as_str().unwrap_or_default();
        assert!(!answer.trim().is_empty(), "{path}: {v}");
        assert!(
            v["completion_tokens"]
                .as_u64()
                .is_some_and(|n| (1..=8).contains(&n)),
            "{v}"
        );
    });
}
