use clap::Parser;
use switchyard::cli::{self, Cli};
use tracing_subscriber::EnvFilter;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = switchyard::cpu::init() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    std::process::exit(cli::run(cli));
}
