//! Policy reload while serving: a new gateway is built from the new policy, reusing what did not
//! change (on-box engines, unchanged cloud engines with their connection pools and circuit
//! breakers, classifier, request log, budget and rate-limit state), and swapped in for new
//! requests; requests in flight finish under the policy they started with. A policy that fails
//! validation, or that would need a restart (a changed on-box model), is rejected and the old one
//! keeps serving. `switchyard_policy_reloads_total{result}` counts both.

use super::{Gateway, GatewayHandle};
use crate::policy::{self, ModelKind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Builds the gateway for `policy` with [`Gateway::build`], which reuses the parts of `old` whose
/// settings did not change. An on-box model that is new or changed is refused: loading one
/// while serving would hold two models' weights at once, so that takes a restart.
pub fn rebuild(old: &Gateway, policy: policy::Policy) -> Result<Gateway, String> {
    for m in policy
        .models
        .values()
        .filter(|m| m.kind == ModelKind::Local)
    {
        let before = old
            .policy
            .models
            .get(&m.name)
            .and_then(|o| o.local.as_ref());
        if before != m.local.as_ref() {
            return Err(format!(
                "on-box model `{}` is new or changed: restart `serve` to load it",
                m.name
            ));
        }
    }
    Gateway::build(policy, old.metrics().clone(), Some(old))
}

/// Reloads the policy file into `handle`; on failure the old policy keeps serving. Logs and
/// counts the outcome.
pub fn reload(handle: &GatewayHandle, path: &Path) -> Result<(), String> {
    let old = handle.current();
    let result = policy::load(path)
        .map_err(|e| e.to_string())
        .and_then(|p| rebuild(&old, p));
    // Counted once the outcome holds: a success only after new requests get the new policy.
    match result {
        Ok(g) => {
            handle.replace(Arc::new(g));
            old.metrics().policy_reload(true);
            tracing::info!("policy {} reloaded", path.display());
            Ok(())
        }
        Err(e) => {
            old.metrics().policy_reload(false);
            tracing::error!(
                "policy {} rejected, the previous one keeps serving:\n{e}",
                path.display()
            );
            Err(e)
        }
    }
}

/// What identifies a version of the file (modification time and size).
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reloads on SIGHUP and whenever the file changes (checked every `every`), until the process
/// ends. The SIGHUP handler is installed, and the file's version noted, when this is called, not
/// when the future first runs.
pub fn watch(
    handle: GatewayHandle,
    path: std::path::PathBuf,
    every: Duration,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hup: Option<()> = None;
    let last = stamp(&path);
    watch_loop(handle, path, every, hup, last)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

async fn watch_loop(
    handle: GatewayHandle,
    path: std::path::PathBuf,
    every: Duration,
    mut hup: Hangup,
    mut last: Option<(SystemTime, u64)>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(s) => s.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = {
            let _ = &mut hup;
            std::future::pending::<bool>()
        };
        let forced = tokio::select! {
            _ = tick.tick() => false,
            got = signalled => got,
        };
        let now = stamp(&path);
        if forced || (now.is_some() && now != last) {
            last = now;
            // Loading a classifier or opening a log takes a while: off the runtime's threads.
            let (h, p) = (handle.clone(), path.clone());
            let _ = tokio::task::spawn_blocking(move || reload(&h, &p)).await;
        }
    }
}
