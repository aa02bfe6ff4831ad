//! `switchyard serve`: load the policy, build the engines, serve until SIGINT/SIGTERM.

use crate::accounting::Metrics;
use crate::policy;
use crate::server::{self, Gateway, ServeOptions};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The routing policy.
    #[arg(long, default_value = "policies/default.yaml")]
    pub policy: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// On SIGTERM or Ctrl-C, seconds that `/readyz` reports not ready while requests are still
    /// served, so that a load balancer stops sending new ones.
    #[arg(long, default_value_t = 5.0)]
    pub drain_delay_secs: f64,
    /// Then, seconds that requests and streams in flight may run on before they are closed.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout_secs: f64,
    /// Threads of the async runtime that serves HTTP. 1 (the default) runs everything on one
    /// thread, which measured less CPU per proxied request than two (docs/benchmarks.md);
    /// model work runs on threads of its own either way.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

pub fn run(args: ServeArgs) -> i32 {
    let policy = match policy::load(&args.policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if let Some(n) = crate::local::threads_of(&policy) {
        // SAFETY: no other thread exists yet: the runtime is built below.
        unsafe { crate::local::configure_compute_threads(n) };
    }
    let mut rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let gateway = match Gateway::build(policy, Metrics::new(), None) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        };
        report(&gateway, &args);
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", args.listen);
                return 1;
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!("listening on http://{addr}");
        let handle = server::GatewayHandle::new(Arc::new(gateway));
        let watcher = tokio::spawn(server::reload::watch(
            handle.clone(),
            args.policy.clone(),
            std::time::Duration::from_secs(1),
        ));
        let seconds =
            |s: f64| std::time::Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default();
        let options = ServeOptions {
            drain_delay: seconds(args.drain_delay_secs),
            drain_timeout: seconds(args.drain_timeout_secs),
        };
        server::serve_handle(listener, handle.clone(), shutdown_signal(), options).await;
        watcher.abort();
        let unsettled = handle
            .current()
            .ledger
            .settled(std::time::Duration::from_secs(5))
            .await;
        if unsettled > 0 {
            tracing::warn!("{unsettled} settlements did not reach the state store before exit; their reservations lapse by themselves");
        }
        tracing::info!("stopped");
        0
    })
}

/// Logs what the gateway starts with: each model's state and the auth mode.
fn report(gateway: &Gateway, args: &ServeArgs) {
    tracing::info!("CPU kernels: {}", crate::cpu::describe());
    tracing::info!(
        "policy {}: {} models, {} rules",
        args.policy.display(),
        gateway.policy.models.len(),
        gateway.policy.rules.len()
    );
    for (name, state) in gateway.model_states() {
        match state {
            Ok(()) => tracing::info!("model `{name}`: enabled"),
            Err(reason) => tracing::warn!("model `{name}`: disabled ({reason})"),
        }
    }
    if gateway.auth.is_open() {
        tracing::warn!("no gateway keys in the policy (`tenants`): the gateway is open to anyone who can reach it");
    }
    if !gateway.is_ready() {
        tracing::warn!("no model of the default route can answer: /readyz reports not ready");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
