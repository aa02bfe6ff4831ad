//! Budgets and rate limits shared by replicas through a real `redis-server` on loopback:
//! three `switchyard serve` processes under one concurrent burst never spend past one budget
//! nor admit past one rate (the same burst on the memory backend does, and is printed for
//! comparison); a replica killed mid-request leaves a reservation that lapses; a paused Redis
//! (SIGSTOP) costs a request at most `state.timeout_ms` and then follows `on_unavailable`; a
//! restarted Redis is found again without restarting the gateway.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `switchyard serve` process on a free loopback port; killed (SIGKILL) when dropped.
struct Replica {
    url: String,
    child: Child,
}

impl Replica {
    async fn start(policy: &Path) -> Replica {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--policy",
            ])
            .arg(policy)
            .env("CLOUD_KEY", "sk-test")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        let replica = Replica {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + TEST_TIMEOUT;
        loop {
            let req = http::Request::get(format!("{}/healthz", replica.url))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request");
            if client().request(req).await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "serve did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replica
    }

    /// Kills the process at once, whatever it is doing (SIGKILL).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn chat(&self, body: &serde_json::Value) -> Reply {
        request(
            "POST",
            &format!("{}/v1/chat/completions", self.url),
            body.to_string(),
            &[("content-type", "application/json")],
        )
        .await
    }

    /// The gateway-wide day budget's remaining USD, as this replica reads it.
    async fn day_left(&self) -> f64 {
        let r = request(
            "GET",
            &format!("{}/v1/switchyard/budget", self.url),
            "",
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["budgets"][0]["remaining_usd"]
            .as_f64()
            .expect("a day budget")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cloud-only policy ($1 per input token, $2 per output token; the fake upstream reports 21
/// + 4 tokens, $29 a request) with `extra` applied, written to `dir`.
fn write_policy(
    dir: &Path,
    base: &str,
    extra: impl Fn(PolicyBuilder) -> PolicyBuilder,
) -> std::path::PathBuf {
    let policy = extra(
        PolicyBuilder::new()
            .cloud("cloud", base)
            .model_field(
                "cloud",
                "price",
                "{ input_per_million: 1000000, output_per_million: 2000000 }",
            )
            .default_route("cloud", &[]),
    )
    .render();
    let path = dir.join("policy.yaml");
    std::fs::write(&path, policy).expect("write policy");
    path
}

/// A cloud request that reserves $48 (8 prompt tokens + 20 answer tokens at most) and costs $29.
fn small_ask() -> serde_json::Value {
    json!({"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
}

/// `n` requests at once, spread over `replicas` in turn; the replies in order.
async fn burst(replicas: &[Replica], n: usize) -> Vec<Reply> {
    let body = small_ask();
    let asks = (0..n).map(|i| replicas[i % replicas.len()].chat(&body));
    futures_util::future::join_all(asks).await
}

fn redis_state(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("backend", "redis".to_string()),
        ("url", quoted(url)),
        ("timeout_ms", "1000".to_string()),
    ]
}

fn fields<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Total USD spent by the answered replies (their `x-switchyard-cost-usd`).
fn spent(replies: &[Reply]) -> (usize, f64) {
    let ok: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let usd = ok
        .iter()
        .map(|r| {
            r.header("x-switchyard-cost-usd")
                .parse::<f64>()
                .expect("cost")
        })
        .sum();
    (ok.len(), usd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_never_spend_past_one_budget() {
    let up = FakeUpstream::start().await;
    let redis = RedisServer::start();
    const BUDGET: f64 = 100.0;
    let mut results = vec![];
    for backend in ["memory", "redis"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = if backend == "redis" {
            redis_state(&redis.url())
        } else {
            vec![]
        };
        let path = write_policy(tmp.path(), &up.base("ok"), |p| {
            let p = p.global_budget("{ daily_usd: 100 }").on_exhausted("reject");
            if state.is_empty() {
                p
            } else {
                p.state(&fields(&state))
            }
        });
        let mut replicas = vec![];
        for _ in 0..3 {
            replicas.push(Replica::start(&path).await);
        }
        let replies = burst(&replicas, 30).await;
        for r in &replies {
            assert!(
                r.status == 200 || r.error_code() == "budget_exceeded",
                "{backend}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let (served, usd) = spent(&replies);
        println!(
            "{backend}: 3 replicas, 30 requests at once, ${BUDGET} a day: {served} served for ${usd}, overshoot ${:.2}",
            (usd - BUDGET).max(0.0)
        );
        results.push((backend, served, usd));
    }
    let (_, _, memory_usd) = results[0];
    let (_, served, redis_usd) = results[1];
    assert!(
        memory_usd > BUDGET,
        "each replica keeps its own budget on the memory backend (${memory_usd})"
    );
    assert!(served >= 2, "two reservations of $48 fit in $100");
    assert!(redis_usd <= BUDGET, "shared budget overspent: ${redis_usd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_never_admit_past_one_rate() {
    let up = FakeUpstream::start().await;
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let state = redis_state(&redis.url());
    let path = write_policy(tmp.path(), &up.base("ok"), |p| {
        p.default_rate_limit("{ requests_per_minute: 6 }")
            .state(&fields(&state))
    });
    let mut replicas = vec![];
    for _ in 0..3 {
        replicas.push(Replica::start(&path).await);
    }
    let started = Instant::now();
    let replies = burst(&replicas, 30).await;
    // 6 a minute: 6 at once, and one more every 10 s the burst lasted.
    let refill = (started.elapsed().as_secs_f64() / 10.0).floor() as usize;
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    let served = replies.iter().filter(|r| r.status == 200).count();
    println!(
        "redis: 3 replicas, 30 requests at once, 6 a minute: {served} served (+{refill} refilled)"
    );
    assert_eq!(served + limited.len(), 30);
    assert!((6..=6 + refill).contains(&served), "{served} served");
    for r in limited {
        assert_eq!(r.error_code(), "rate_limit_exceeded");
        let wait: u64 = r.header("retry-after").parse().expect("retry-after");
        assert!((1..=10).contains(&wait), "{wait}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_reservation_lapses() {
    let up = FakeUpstream::start().await;
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let mut state = redis_state(&redis.url());
    state.push(("reservation_ttl_s", "2".to_string()));
    let path = write_policy(tmp.path(), &up.base("held"), |p| {
        p.global_budget("{ daily_usd: 100 }")
            .on_exhausted("reject")
            .state(&fields(&state))
    });
    let mut doomed = Replica::start(&path).await;
    let other = Replica::start(&path).await;
    let url = doomed.url.clone();
    let in_flight = tokio::spawn(async move {
        let body = small_ask().to_string();
        let req = http::Request::post(format!("{url}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request");
        client().request(req).await.map(|r| r.status())
    });
    up.wait_for_requests(1).await;
    assert_eq!(
        other.day_left().await,
        52.0,
        "$48 reserved by the request in flight"
    );
    let killed_at = Instant::now();
    doomed.kill();
    assert!(
        in_flight.await.expect("task").is_err(),
        "the client of a killed replica gets no answer"
    );
    // Nobody settles it: the reservation lapses after its 2 s.
    let deadline = Instant::now() + TEST_TIMEOUT;
    while other.day_left().await != 100.0 {
        assert!(Instant::now() < deadline, "the reservation never lapsed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed_at.elapsed();
    println!("the killed replica's reservation lapsed {took:?} after the kill (TTL 2 s)");
    assert!(took < Duration::from_secs(2) + TEST_TIMEOUT);
    up.release_held();
}

/// A gateway in this process (with the echo engine on the box) on the standard policy, whose
/// cloud route falls back to the box, with a $1000 budget on the Redis `url`, `state` fields
/// `extra`, and a rule `solo` (tag `solo`) that goes to the cloud without a fallback.
async fn gateway_on(up: &FakeUpstream, url: &str, extra: &[(&'static str, &str)]) -> TestGateway {
    let mut state = vec![("backend", "redis".to_string()), ("url", quoted(url))];
    state.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let policy = PolicyBuilder::standard(&up.base("ok"))
        .rule("solo", "{ tags: [solo] }", "cloud", &[])
        .global_budget("{ daily_usd: 1000 }")
        .on_exhausted("reject")
        .state(&fields(&state))
        .render();
    start_gateway(&policy, &[("CLOUD_KEY", "sk-test")]).await
}

async fn timed_chat(gw: &TestGateway, headers: &[(&str, &str)]) -> (Reply, Duration) {
    let started = Instant::now();
    let r = chat(gw, small_ask(), headers).await;
    (r, started.elapsed())
}

const SOLO: (&str, &str) = ("x-switchyard-tags", "solo");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_redis_costs_a_request_at_most_the_timeout() {
    let up = FakeUpstream::start().await;
    let redis = RedisServer::start();
    let reject = gateway_on(&up, &redis.url(), &[("timeout_ms", "200")]).await;
    let allow = gateway_on(
        &up,
        &redis.url(),
        &[("timeout_ms", "200"), ("on_unavailable", "allow")],
    )
    .await;
    let (r, _) = timed_chat(&reject, &[SOLO]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    redis.pause();
    // reject: the cloud call is refused; with a fallback, the box answers instead.
    let (solo, solo_took) = timed_chat(&reject, &[SOLO]).await;
    let (boxed, boxed_took) = timed_chat(&reject, &[]).await;
    // allow: the cloud call goes ahead unreserved.
    let (allowed, allowed_took) = timed_chat(&allow, &[SOLO]).await;
    let ready = request("GET", &format!("{}/readyz", reject.url), "", &[]).await;
    redis.resume();
    println!(
        "Redis paused, timeout 200 ms: reject answered {} in {solo_took:?}, the fallback {} in {boxed_took:?}; allow answered {} in {allowed_took:?}",
        solo.status, boxed.status, allowed.status
    );
    assert_eq!(solo.status, 503, "{}", String::from_utf8_lossy(&solo.body));
    assert_eq!(solo.error_code(), "state_unavailable");
    assert_eq!(solo.header("retry-after"), "1");
    assert!(!solo.json()["error"]["message"]
        .to_string()
        .contains("127.0.0.1"));
    assert_eq!(boxed.status, 200);
    assert_eq!(boxed.header("x-switchyard-model"), "local-echo");
    assert_eq!(
        boxed.header("x-switchyard-fallback"),
        "cloud; reason=state_unavailable"
    );
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("x-switchyard-model"), "cloud");
    // Each waited for the store once, 200 ms, and not much more.
    for took in [solo_took, boxed_took, allowed_took] {
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    // Ready all along, with the store's state in the details.
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["state"]["backend"], "redis");
    assert_eq!(ready.json()["state"]["available"], false);
    let unavailable = |action: &str| {
        format!(r#"switchyard_state_unavailable_total{{action="{action}",operation="admit"}}"#)
    };
    assert_eq!(metric(&reject, &unavailable("reject")).await, 2.0);
    assert_eq!(metric(&allow, &unavailable("allow")).await, 1.0);

    // Resumed: the refused calls' reservations are given back and the allowed call's cost is
    // counted, once each, by their settlements; then the store is found available again.
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let left = request(
            "GET",
            &format!("{}/v1/switchyard/budget", reject.url),
            "",
            &[],
        )
        .await;
        if left.status == 200
            && left.json()["budgets"][0]["remaining_usd"] == json!(1000.0 - 29.0 * 2.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&left.body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = request("GET", &format!("{}/readyz", reject.url), "", &[]).await;
    assert_eq!(ready.json()["state"]["available"], true);
    assert_eq!(
        metric(&reject, r#"switchyard_state_up{backend="redis"}"#).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_redis_is_found_again() {
    let up = FakeUpstream::start().await;
    let mut redis = RedisServer::start();
    let gw = gateway_on(&up, &redis.url(), &[("timeout_ms", "1000")]).await;
    let (r, _) = timed_chat(&gw, &[SOLO]).await;
    assert_eq!(r.status, 200);
    redis.restart();
    // The gateway reconnects by itself; the new server starts with an empty budget.
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut refused = 0;
    loop {
        let (r, _) = timed_chat(&gw, &[SOLO]).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.error_code(), "state_unavailable");
        refused += 1;
        assert!(Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("reconnected after {refused} refused requests");
    // Its settlement follows the answer: the $48 reservation becomes $29 spent.
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let left = request("GET", &format!("{}/v1/switchyard/budget", gw.url), "", &[]).await;
        let usd = left.json()["budgets"][0]["remaining_usd"].as_f64();
        if usd == Some(1000.0 - 29.0) {
            break;
        }
        assert_eq!(usd, Some(1000.0 - 48.0), "reserved, or else settled");
        assert!(Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = request("GET", &format!("{}/readyz", gw.url), "", &[]).await;
    assert_eq!(ready.json()["state"]["available"], true);
}
