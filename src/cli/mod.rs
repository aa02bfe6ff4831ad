//! Command-line interface: one module per command.

pub mod bench_classifier;
pub mod classifier_args;
pub mod classify;
pub mod eval_local;
pub mod eval_router;
pub mod explain;
pub mod generate;
pub mod held_out_labels;
pub mod label;
pub mod pii_eval;
pub mod policy;
pub mod replay;
pub mod serve;
pub mod train_router;

use clap::{Parser, Subcommand};

/// Switchyard: an edge LLM router speaking the OpenAI chat API.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Answer one prompt with an on-box model and print its speed.
    Generate(generate::GenerateArgs),
    /// Measure an on-box model's accuracy on GSM8K and MMLU-Pro questions, and its speed.
    EvalLocal(eval_local::EvalLocalArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Score a text (or JSONL rows from stdin) with the request classifier.
    Classify(classify::ClassifyArgs),
    /// Train the classifier's routing heads from a training-data folder.
    TrainRouter(train_router::TrainRouterArgs),
    /// Measure the classifier's routing quality on the evaluation benchmarks.
    EvalRouter(eval_router::EvalRouterArgs),
    /// Replay a policy over recorded or benchmark traffic: routes, costs, savings, quality.
    Replay(replay::ReplayArgs),
    /// Find the strong-score threshold that sends a given share of traffic to the cloud.
    Calibrate(replay::CalibrateArgs),
    /// Measure the classifier's latency and throughput (see benches/classifier.sh).
    BenchClassifier(bench_classifier::BenchClassifierArgs),
    /// Label questions with how the on-box model does on them (gold answers or a cloud judge).
    Label(label::LabelArgs),
    /// Measure the private-data detector's precision, recall and cost on a labelled set.
    PiiEval(pii_eval::PiiEvalArgs),
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Generate(args) => generate::run(args),
        Command::EvalLocal(args) => eval_local::run(args),
        Command::Classify(args) => classify::run(args),
        Command::TrainRouter(args) => train_router::run(args),
        Command::EvalRouter(args) => eval_router::run(args),
        Command::BenchClassifier(args) => bench_classifier::run(args),
        Command::Replay(args) => replay::run_replay(args),
        Command::Calibrate(args) => replay::run_calibrate(args),
        Command::PiiEval(args) => pii_eval::run(args),
        Command::Label(args) => label::run(args),
    }
}
