//! Command-line interface: one module per command.

pub mod generate;
pub mod policy;
pub mod serve;

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
    /// Work with policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Generate(args) => generate::run(args),
    }
}
