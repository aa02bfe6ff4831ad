//! The on-box decoder against candle's reference implementation of the same architecture, on
//! the real SmolLM2 weights: same prompt, same next-token logits, same greedy continuation.

mod common;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama;
use switchyard::api::Role;
use switchyard::local::LocalModel;

#[test]
fn decoder_matches_candles_llama_on_smollm2() {
    let path = common::smollm2_path();
    let ours = LocalModel::load(&path, None).expect("load");
    let prompt = ours
        .prompt(&[(Role::User, "What is the capital of France?".into())])
        .expect("prompt");

    let mut file = std::fs::File::open(&path).expect("open");
    let ct = gguf_file::Content::read(&mut file).expect("gguf");
    let mut reference =
        quantized_llama::ModelWeights::from_gguf(ct, &mut file, &Device::Cpu).expect("reference");

    let mut session = ours.weights.session(prompt.len() + 16);
    let mut logits = ours
        .weights
        .forward(&mut session, &prompt)
        .expect("forward");
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut expected: Vec<f32> = reference
        .forward(&input, 0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    for (step, pos) in (prompt.len()..prompt.len() + 8).enumerate() {
        let max_diff = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 1e-2, "step {step}: logits differ by {max_diff}");
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32)
                .unwrap()
        };
        let next = argmax(&logits);
        assert_eq!(next, argmax(&expected), "step {step}: greedy tokens differ");
        logits = ours.weights.forward(&mut session, &[next]).unwrap();
        let input = Tensor::new(&[next], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        expected = reference
            .forward(&input, pos)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
    }
}
