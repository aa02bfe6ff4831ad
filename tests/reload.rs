//! Policy reload while serving: a good policy takes over for new requests, a bad one is rejected
//! with its line and column while the old one keeps serving, and a request in flight finishes
//! under the policy it started with.

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::json;
use std::sync::Arc;
use switchyard::server::{self, reload, Gateway, GatewayHandle};
use tokio::net::TcpListener;

/// The standard policy (its key written in) with a rule `rule` for the tag `t` routing to `route`.
fn version_to(base: &str, rule: &str, route: &str) -> String {
    PolicyBuilder::standard(base)
        .model_field("cloud", "api_key", &quoted("sk-upstream-secret"))
        .rule(rule, "{ tags: [t] }", route, &[])
        .render()
}

fn version(base: &str, rule: &str) -> String {
    version_to(base, rule, "cloud")
}

/// Serves the policy file through a handle that `reload` can swap.
async fn serve_file(
    path: &std::path::Path,
) -> (String, GatewayHandle, tokio::sync::oneshot::Sender<()>) {
    let policy = switchyard::policy::load(path).unwrap_or_else(|e| panic!("{e}"));
    let gateway = Gateway::build(policy, Default::default(), None)
        .expect("gateway")
        .with_engine("local-echo", Arc::new(EchoEngine::default()));
    let handle = GatewayHandle::new(Arc::new(gateway));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_handle(
        listener,
        handle.clone(),
        async move {
            let _ = rx.await;
        },
        server::ServeOptions::default(),
    ));
    (url, handle, tx)
}

/// A chat request with the tag the test rules match.
async fn tagged(url: &str) -> Reply {
    request(
        "POST",
        &format!("{url}/v1/chat/completions"),
        ask("auto", "hi").to_string(),
        &[
            ("content-type", "application/json"),
            ("x-switchyard-tags", "t"),
        ],
    )
    .await
}

async fn rule_of(url: &str) -> String {
    let r = tagged(url).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.header("x-switchyard-rule").to_string()
}

fn reloads(result: &str) -> String {
    format!("switchyard_policy_reloads_total{{result=\"{result}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_policies_take_over_and_bad_ones_are_rejected() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("policy.yaml");
    std::fs::write(&path, version(&up.base("ok"), "first")).expect("write");
    let (url, handle, _stop) = serve_file(&path).await;
    assert_eq!(rule_of(&url).await, "first");

    std::fs::write(&path, version(&up.base("ok"), "second")).expect("write");
    reload::reload(&handle, &path).expect("reloaded");
    assert_eq!(rule_of(&url).await, "second");
    assert_eq!(metric_at(&url, &reloads("success")).await, 1.0);
    assert_eq!(metric_opt_at(&url, &reloads("error")).await, None);

    // An unknown model: rejected with file, line and column; the second policy keeps serving.
    std::fs::write(&path, version_to(&up.base("ok"), "third", "clod")).expect("write");
    let err = reload::reload(&handle, &path).expect_err("invalid policy");
    assert!(
        err.contains(&format!("{}:", path.display())) && err.contains("unknown model `clod`"),
        "{err}"
    );
    assert_eq!(rule_of(&url).await, "second");
    assert_eq!(metric_at(&url, &reloads("error")).await, 1.0);
    assert_eq!(metric_at(&url, &reloads("success")).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_under_its_policy() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("policy.yaml");
    std::fs::write(&path, version(&up.base("gated"), "before")).expect("write");
    let (url, handle, _stop) = serve_file(&path).await;
    let mut body = ask("auto", "stream please");
    body["stream"] = json!(true);
    let resp = send(
        "POST",
        &format!("{url}/v1/chat/completions"),
        body.to_string(),
        &[
            ("content-type", "application/json"),
            ("x-switchyard-tags", "t"),
        ],
    )
    .await;
    assert_eq!(resp.headers()["x-switchyard-rule"], "before");
    // The new policy sends the same requests to the box.
    std::fs::write(&path, version_to(&up.base("gated"), "after", "local-echo")).expect("write");
    reload::reload(&handle, &path).expect("reloaded");
    up.gate.notify_one();
    let rest = tokio::time::timeout(TEST_TIMEOUT, resp.into_body().collect())
        .await
        .expect("stream ends in time")
        .expect("stream body")
        .to_bytes();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains(" cloud") && text.contains("[DONE]"), "{text}");
    let r = tagged(&url).await;
    assert_eq!(r.header("x-switchyard-rule"), "after");
    assert_eq!(r.header("x-switchyard-route"), "local");
}

/// Polls `check` until it holds or the test timeout passes.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reloads_a_changed_file() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("policy.yaml");
    std::fs::write(&path, version(&up.base("ok"), "first")).expect("write");
    let (url, handle, _stop) = serve_file(&path).await;
    let watcher = tokio::spawn(reload::watch(
        handle.clone(),
        path.clone(),
        std::time::Duration::from_millis(20),
    ));
    std::fs::write(&path, version(&up.base("ok"), "watched")).expect("write");
    assert!(eventually(async || rule_of(&url).await == "watched").await);
    watcher.abort();
}

/// Writes `text` to `path` keeping the file's modification time and size (`text` must be as long
/// as what is there), so that a watcher comparing those sees no change. The new version is
/// renamed into place, so that the file never shows a changed time in between.
fn replace_unnoticed(path: &std::path::Path, text: &str) {
    let before = std::fs::metadata(path).expect("metadata");
    assert_eq!(before.len(), text.len() as u64, "the same size");
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&next)
        .and_then(|f| f.set_modified(before.modified()?))
        .expect("set the modification time");
    std::fs::rename(&next, path).expect("rename");
    let after = std::fs::metadata(path).expect("metadata");
    assert_eq!(
        (after.modified().ok(), after.len()),
        (before.modified().ok(), before.len())
    );
}

/// A child process, killed when the test ends (also when it fails).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_on_sighup() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("policy.yaml");
    // Cloud only (no on-box model to load): the rule for tag `t` names one of two cloud models.
    let cloud_only = |rule: &str, route: &str| {
        PolicyBuilder::new()
            .cloud("cloud-a", &up.base("ok"))
            .model_field("cloud-a", "api_key", "sk-x")
            .cloud("cloud-b", &up.base("ok"))
            .model_field("cloud-b", "api_key", "sk-x")
            .rule(rule, "{ tags: [t] }", route, &[])
            .default_route("cloud-a", &[])
            .render()
    };
    std::fs::write(&path, cloud_only("first", "cloud-a")).expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--policy",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Running)
        .expect("serve");
    let url = format!("http://127.0.0.1:{port}");
    let up_now = eventually(async || {
        client()
            .request(
                http::Request::get(format!("{url}/healthz"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request"),
            )
            .await
            .is_ok()
    })
    .await;
    assert!(up_now, "serve did not start");
    let r = tagged(&url).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        (
            r.header("x-switchyard-rule"),
            r.header("x-switchyard-model")
        ),
        ("first", "cloud-a")
    );
    assert_eq!(metric_opt_at(&url, &reloads("success")).await, None);

    // `serve` also reloads a file whose time or size changed; this change keeps both, so only
    // the signal can make the new rule decide.
    replace_unnoticed(&path, &cloud_only("other", "cloud-b"));
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    // (The reload is counted just before the new policy takes over: wait for the decision.)
    assert!(
        eventually(async || rule_of(&url).await == "other").await,
        "the rule of the file as it is at SIGHUP never decided"
    );
    let r = tagged(&url).await;
    assert_eq!(
        (
            r.header("x-switchyard-rule"),
            r.header("x-switchyard-model")
        ),
        ("other", "cloud-b")
    );
    assert_eq!(metric_at(&url, &reloads("success")).await, 1.0);
    assert_eq!(metric_opt_at(&url, &reloads("error")).await, None);
}

#[test]
fn unchanged_cloud_engines_carry_over_a_reload_with_their_state() {
    let policy = |other_timeout: u64| {
        let text = PolicyBuilder::new()
            .local("local-echo")
            .cloud("cloud", "http://127.0.0.1:9/v1")
            .model_field("cloud", "api_key", "k")
            .cloud("other", "http://127.0.0.1:9/v1")
            .model_field("other", "api_key", "k")
            .model_field(
                "other",
                "timeouts",
                &format!("{{ total_ms: {other_timeout} }}"),
            )
            .default_route("cloud", &[])
            .render();
        switchyard::policy::parse(&text, "p.yaml", &|_| None).unwrap_or_else(|e| panic!("{e}"))
    };
    let old = Gateway::build(policy(1000), Default::default(), None).expect("gateway");
    let new = switchyard::server::reload::rebuild(&old, policy(2000)).expect("rebuild");
    assert!(
        Arc::ptr_eq(&old.engines["cloud"], &new.engines["cloud"]),
        "the unchanged model keeps its engine (pool, circuit breaker)"
    );
    assert!(
        !Arc::ptr_eq(&old.engines["other"], &new.engines["other"]),
        "the changed model gets a new engine"
    );
}
