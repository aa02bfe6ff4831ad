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

/// Builds the gateway for `policy`, reusing the parts of `old` whose settings did not change.
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
    let same_budgets = old.policy.budgets == policy.budgets;
    let same_classifier = old.policy.classifier == policy.classifier;
    let same_recording = old.policy.recording == policy.recording;
    let same_rates = old.policy.rate_limits == policy.rate_limits;
    let mut g = Gateway::with_registry(policy, old.metrics.clone())?;
    if same_rates {
        g = g.with_rate_limiter(old.rate_limiter.clone());
    }
    // On-box engines always carry over (a changed one was refused above); a cloud engine carries
    // over when its model's settings did not change, and with it its connection pool and the
    // state of its circuit breaker.
    for (name, engine) in &old.engines {
        let kept = match g.policy.models.get(name) {
            Some(m) if m.kind == ModelKind::Local => true,
            Some(m) => old.policy.models.get(name) == Some(m),
            None => false,
        };
        if kept {
            g = g.with_engine(name, engine.clone());
        }
    }
    if same_budgets {
        g = g.with_budgets(old.budgets.clone());
    }
    if g.policy.uses_classifier() {
        match (&old.classifier, same_classifier) {
            (Some(c), true) => g = g.with_classifier(c.clone()),
            _ => {
                let c = crate::classifier::start(&g.policy.classifier)
                    .map_err(|e| format!("cannot load the request classifier: {e}"))?;
                g = g.with_classifier(c);
            }
        }
    }
    if let Some(r) = g.policy.recording.clone() {
        match (&old.recorder, same_recording) {
            (Some(rec), true) => g = g.with_recorder(rec.clone()),
            _ => {
                let rec = crate::accounting::recorder::Recorder::start(&r).map_err(|e| {
                    format!("cannot open the request log {}: {e}", r.path.display())
                })?;
                g = g.with_recorder(rec);
            }
        }
    }
    Ok(g)
}

/// Reloads the policy file into `handle`; on failure the old policy keeps serving. Logs and
/// counts the outcome.
pub fn reload(handle: &GatewayHandle, path: &Path) -> Result<(), String> {
    let old = handle.current();
    let result = policy::load(path)
        .map_err(|e| e.to_string())
        .and_then(|p| rebuild(&old, p));
    let label = if result.is_ok() { "success" } else { "error" };
    old.metrics.policy_reloads.with_label_values(&[label]).inc();
    match result {
        Ok(g) => {
            g.publish_budgets();
            handle.replace(Arc::new(g));
            tracing::info!("policy {} reloaded", path.display());
            Ok(())
        }
        Err(e) => {
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
