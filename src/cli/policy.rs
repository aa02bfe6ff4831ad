//! `switchyard policy check FILE` and `switchyard policy explain`.

use crate::policy;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; prints every problem as FILE:LINE:COLUMN: MESSAGE. Exit 0 when valid, 1 when not.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Show how a policy routes one request: its features, the classifier's outputs, every rule
    /// with why it matched or not, the decision, the fallback chain and the cost on each model.
    Explain(super::explain::ExplainArgs),
}

pub fn run(cmd: PolicyCommand) -> i32 {
    match cmd {
        PolicyCommand::Explain(args) => super::explain::run(args),
        PolicyCommand::Check { file } => match policy::load(&file) {
            Ok(p) => {
                println!(
                    "{}: ok ({} models, {} rules, default route {})",
                    file.display(),
                    p.models.len(),
                    p.rules.len(),
                    p.default.model
                );
                if p.budgets.is_some() || p.rate_limits.is_some() {
                    let st = &p.state;
                    match st.redis_url {
                        Some(_) => println!(
                            "state: budgets and rate limits in Redis, shared by every replica with key prefix `{}` (timeout {} ms, on_unavailable {}, reservations lapse after {} s)",
                            st.key_prefix,
                            st.timeout.as_millis(),
                            st.on_unavailable.as_str(),
                            st.reservation_ttl.as_secs()
                        ),
                        None => println!(
                            "note: budgets and rate limits live in this process's memory; replicas do not share them (state.backend: redis does)"
                        ),
                    }
                }
                for note in crate::classifier::calibration_notes(&p) {
                    println!("note: {note}");
                }
                for m in p.models.values() {
                    if let Some(reason) = m
                        .provider
                        .as_ref()
                        .and_then(|pr| pr.disabled_reason.as_ref())
                    {
                        println!(
                            "note: model `{}` would start disabled here: {reason}",
                            m.name
                        );
                    }
                }
                0
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} problem(s)", file.display(), errors.0.len());
                1
            }
        },
    }
}
