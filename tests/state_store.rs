//! One test suite for both state stores, memory and Redis (a real `redis-server` on loopback):
//! reservations hold budget until settled, a settlement counts once, a fallback's admission gives
//! back its earlier reservation, rate limits refuse with the time to wait, concurrent replicas
//! never take more than a budget or a rate holds, and an unsettled reservation lapses. For the
//! Redis store, each "replica" is a store of its own on the same server, as separate gateway
//! processes would be; for the memory store, replicas share the one process's store.

mod common;

use common::{RedisServer, TEST_TIMEOUT};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::accounting::budget::{Period, GLOBAL};
use switchyard::accounting::rate_limit::Limit;
use switchyard::accounting::state::{
    Admitted, Ask, Limits, MemoryStore, RedisStore, Refused, StateStore, StoreError, Ticket,
};
use switchyard::policy::{Rate, RateLimitSettings, Secret, StateSettings};

/// Makes a replica: a store on the shared state.
type Replicas = Box<dyn Fn() -> Arc<dyn StateStore>>;

/// The two backends over `limits`, with unsettled reservations lapsing after `ttl`. The Redis
/// server lives as long as the returned guard.
fn backends(limits: Limits, ttl: Duration) -> Vec<(&'static str, Replicas, Option<RedisServer>)> {
    let memory: Arc<dyn StateStore> = Arc::new(MemoryStore::with_ttl(limits.clone(), ttl));
    let redis = RedisServer::start();
    let settings = StateSettings {
        redis_url: Some(Secret::new(redis.url())),
        // Generous: these tests are about semantics, not about a slow server.
        timeout: Duration::from_secs(2),
        reservation_ttl: ttl,
        ..StateSettings::default()
    };
    vec![
        ("memory", Box::new(move || memory.clone()), None),
        (
            "redis",
            Box::new(move || {
                Arc::new(RedisStore::new(limits.clone(), &settings).expect("store"))
                    as Arc<dyn StateStore>
            }),
            Some(redis),
        ),
    ]
}

fn budgets(list: &[(&str, Period, f64)]) -> Limits {
    Limits {
        budgets: list
            .iter()
            .map(|(who, p, usd)| (who.to_string(), *p, *usd))
            .collect(),
        rates: None,
    }
}

fn reserve(tenant: Option<&str>, usd: f64) -> Ask<'_> {
    Ask {
        tenant,
        take_rate: None,
        reserve_usd: Some(usd),
    }
}

async fn left(store: &dyn StateStore, who: &str, period: Period) -> f64 {
    let all = store.remaining().await.expect("remaining");
    let usd = all
        .iter()
        .find(|r| r.tenant == who && r.period == period)
        .map(|r| r.usd)
        .expect("a configured budget");
    // Both stores count in whole nano-USD or better.
    (usd * 1e6).round() / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_hold_budget_until_settled() {
    let limits = budgets(&[
        (GLOBAL, Period::Day, 10.0),
        (GLOBAL, Period::Month, 15.0),
        ("a", Period::Day, 4.0),
    ]);
    for (backend, replica, _server) in backends(limits, Duration::from_secs(600)) {
        let (one, two) = (replica(), replica());
        let mut t1 = Ticket::new(Some("a"));
        let r = one.admit(&reserve(Some("a"), 3.0), &mut t1).await;
        assert_eq!(r, Ok(Admitted::Yes), "{backend}");
        let Ok(Admitted::OverBudget(e)) = two
            .admit(&reserve(Some("a"), 2.0), &mut Ticket::new(Some("a")))
            .await
        else {
            panic!("{backend}: tenant a has 3 of 4 reserved");
        };
        assert_eq!(
            (e.tenant.as_str(), e.period),
            ("a", Period::Day),
            "{backend}"
        );
        assert_eq!((e.spent, e.reserved, e.limit), (0.0, 3.0, 4.0), "{backend}");
        one.settle(&t1, 1.0, 0).await.expect("settle");
        let mut t2 = Ticket::new(Some("a"));
        let r = two.admit(&reserve(Some("a"), 2.0), &mut t2).await;
        assert_eq!(r, Ok(Admitted::Yes), "{backend}: 1 spent + 2 fits in 4");
        two.settle(&t2, 2.0, 0).await.expect("settle");
        // Callers without a tenant meet the gateway's budgets only: 3 of 10 spent.
        let mut t3 = Ticket::new(None);
        let r = one.admit(&reserve(None, 7.0), &mut t3).await;
        assert_eq!(r, Ok(Admitted::Yes), "{backend}");
        let Ok(Admitted::OverBudget(e)) = two
            .admit(&reserve(Some("b"), 0.5), &mut Ticket::new(Some("b")))
            .await
        else {
            panic!("{backend}: the gateway's day budget is full");
        };
        assert_eq!((e.tenant.as_str(), e.spent, e.reserved), (GLOBAL, 3.0, 7.0));
        assert_eq!(left(&*two, GLOBAL, Period::Day).await, 0.0, "{backend}");
        one.settle(&t3, 0.0, 0).await.expect("settle");
        assert_eq!(left(&*two, GLOBAL, Period::Day).await, 7.0, "{backend}");
        assert_eq!(left(&*two, GLOBAL, Period::Month).await, 12.0, "{backend}");
        assert_eq!(left(&*one, "a", Period::Day).await, 1.0, "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_counts_once_however_often_it_is_sent() {
    let limits = budgets(&[(GLOBAL, Period::Day, 10.0)]);
    for (backend, replica, _server) in backends(limits, Duration::from_secs(600)) {
        let (one, two) = (replica(), replica());
        let mut t = Ticket::new(None);
        one.admit(&reserve(None, 5.0), &mut t).await.expect("admit");
        for store in [&one, &one, &two] {
            store.settle(&t, 2.0, 0).await.expect("settle");
        }
        assert_eq!(left(&*one, GLOBAL, Period::Day).await, 8.0, "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallbacks_admission_gives_back_the_earlier_reservation() {
    let limits = budgets(&[(GLOBAL, Period::Day, 10.0)]);
    for (backend, replica, _server) in backends(limits, Duration::from_secs(600)) {
        let store = replica();
        let mut t = Ticket::new(None);
        store.admit(&reserve(None, 6.0), &mut t).await.expect("a");
        store.admit(&reserve(None, 3.0), &mut t).await.expect("b");
        assert_eq!(left(&*store, GLOBAL, Period::Day).await, 7.0, "{backend}");
        assert_eq!(t.reserved_usd, 3.0, "{backend}");
        // An on-box fallback reserves nothing: the cloud's reservation is given back.
        let on_box = Ask {
            tenant: None,
            take_rate: None,
            reserve_usd: None,
        };
        store.admit(&on_box, &mut t).await.expect("box");
        assert_eq!(left(&*store, GLOBAL, Period::Day).await, 10.0, "{backend}");
        assert!(!t.holds(), "{backend}: {t:?}");
    }
}

fn rates() -> Limits {
    Limits {
        budgets: vec![],
        rates: Some(RateLimitSettings {
            default: None,
            tenants: vec![
                (
                    "r".into(),
                    Rate {
                        requests_per_minute: Some(2),
                        tokens_per_minute: None,
                    },
                ),
                (
                    "t".into(),
                    Rate {
                        requests_per_minute: None,
                        tokens_per_minute: Some(600),
                    },
                ),
                (
                    "deep".into(),
                    Rate {
                        requests_per_minute: None,
                        tokens_per_minute: Some(600),
                    },
                ),
            ],
        }),
    }
}

fn arrive(tenant: &str, tokens: u64) -> Ask<'_> {
    Ask {
        tenant: Some(tenant),
        take_rate: Some(tokens),
        reserve_usd: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_refuse_with_the_time_to_wait() {
    for (backend, replica, server) in backends(rates(), Duration::from_secs(600)) {
        let (one, two) = (replica(), replica());
        let started = Instant::now();
        for store in [&one, &two] {
            let r = store
                .admit(&arrive("r", 1), &mut Ticket::new(Some("r")))
                .await;
            assert_eq!(r, Ok(Admitted::Yes), "{backend}");
        }
        let Err(Refused::RateLimited(e)) = one
            .admit(&arrive("r", 1), &mut Ticket::new(Some("r")))
            .await
        else {
            panic!("{backend}: 2 requests a minute were taken");
        };
        // Empty after two: one request flows in every 30 s.
        let wait = e.retry_after.as_secs_f64();
        let since = started.elapsed().as_secs_f64();
        assert_eq!((e.limit, e.per_minute), (Limit::Requests, 2), "{backend}");
        assert!((29.0 - since..=30.0).contains(&wait), "{backend}: {wait}");

        // Tokens: 500 taken, 700 used: 100 in debt, 10 s at 600 a minute.
        let mut t = Ticket::new(Some("t"));
        two.admit(&arrive("t", 500), &mut t).await.expect("tokens");
        assert_eq!(t.tokens, Some(500), "{backend}");
        two.settle(&t, 0.0, 700).await.expect("settle");
        let Err(Refused::RateLimited(e)) = one
            .admit(&arrive("t", 1), &mut Ticket::new(Some("t")))
            .await
        else {
            panic!("{backend}: the tokens bucket is in debt");
        };
        assert_eq!(e.limit, Limit::Tokens, "{backend}");
        let wait = e.retry_after.as_secs_f64();
        assert!((9.0..=10.01).contains(&wait), "{backend}: {wait}");
        // A debt longer than minutes is kept until it is paid back: 500 taken, 2,900 used,
        // 2,300 in debt (230 s at 600 a minute).
        let mut t = Ticket::new(Some("deep"));
        two.admit(&arrive("deep", 500), &mut t)
            .await
            .expect("tokens");
        two.settle(&t, 0.0, 2_900).await.expect("settle");
        let Err(Refused::RateLimited(e)) = one
            .admit(&arrive("deep", 1), &mut Ticket::new(Some("deep")))
            .await
        else {
            panic!("{backend}: the tokens bucket is in debt");
        };
        let wait = e.retry_after.as_secs_f64();
        assert!((229.0..=230.01).contains(&wait), "{backend}: {wait}");
        // On Redis the bucket's key lives until the bucket would be full again (2,900 tokens:
        // 290 s), not a fixed time.
        if let Some(redis) = &server {
            let key = redis.cli(&["KEYS", "*rate:deep:tokens"]);
            let pttl: i64 = redis.cli(&["PTTL", key.trim()]).parse().expect("pttl");
            assert!((285_000..=291_000).contains(&pttl), "{key}: {pttl}");
        }
        // A tenant without a rate is never refused, and holds no tokens.
        let mut free = Ticket::new(Some("free"));
        let r = one.admit(&arrive("free", 1_000_000), &mut free).await;
        assert_eq!(r, Ok(Admitted::Yes), "{backend}");
        assert!(!free.holds(), "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_never_take_more_than_a_budget_or_a_rate_holds() {
    let mut limits = budgets(&[(GLOBAL, Period::Day, 10.0)]);
    limits.rates = Some(RateLimitSettings {
        default: Some(Rate {
            requests_per_minute: Some(20),
            tokens_per_minute: None,
        }),
        tenants: vec![],
    });
    for (backend, replica, _server) in backends(limits, Duration::from_secs(600)) {
        let replicas: Vec<_> = (0..3).map(|_| replica()).collect();
        let started = Instant::now();
        let mut tasks = vec![];
        for i in 0..60 {
            let store = replicas[i % 3].clone();
            tasks.push(tokio::spawn(async move {
                let mut budget = Ticket::new(None);
                let b = store.admit(&reserve(None, 1.0), &mut budget).await;
                let r = store
                    .admit(&arrive("x", 1), &mut Ticket::new(Some("x")))
                    .await;
                (b, r)
            }));
        }
        let (mut reserved, mut admitted) = (0, 0);
        for t in tasks {
            let (b, r) = t.await.expect("task");
            match b {
                Ok(Admitted::Yes) => reserved += 1,
                Ok(Admitted::OverBudget(_)) => {}
                other => panic!("{backend}: {other:?}"),
            }
            match r {
                Ok(Admitted::Yes) => admitted += 1,
                Err(Refused::RateLimited(_)) => {}
                other => panic!("{backend}: {other:?}"),
            }
        }
        // 20 a minute: 20 at once, plus what flowed in while the burst ran.
        let refill = (started.elapsed().as_secs_f64() * 20.0 / 60.0).floor() as usize;
        println!("{backend}: {reserved} of 60 reserved $1 of $10; {admitted} of 60 admitted at 20/min (+{refill} refilled)");
        assert_eq!(reserved, 10, "{backend}");
        assert!(
            admitted >= 20 && admitted <= 20 + refill,
            "{backend}: {admitted}"
        );
        assert_eq!(
            left(&*replicas[0], GLOBAL, Period::Day).await,
            0.0,
            "{backend}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_reservation_lapses_after_its_ttl() {
    let limits = budgets(&[(GLOBAL, Period::Day, 10.0)]);
    let ttl = Duration::from_secs(1);
    for (backend, replica, _server) in backends(limits, ttl) {
        let store = replica();
        let reserved_at = Instant::now();
        let mut t = Ticket::new(None);
        store
            .admit(&reserve(None, 4.0), &mut t)
            .await
            .expect("admit");
        assert_eq!(left(&*store, GLOBAL, Period::Day).await, 6.0, "{backend}");
        // Never settled (its replica died): the budget comes back after the TTL, not before.
        let deadline = Instant::now() + TEST_TIMEOUT;
        while left(&*store, GLOBAL, Period::Day).await != 10.0 {
            assert!(Instant::now() < deadline, "{backend}: never lapsed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = reserved_at.elapsed();
        assert!(
            took >= ttl - Duration::from_millis(50),
            "{backend}: {took:?}"
        );
        // A settlement that comes late still counts its spending.
        store.settle(&t, 3.0, 0).await.expect("settle");
        assert_eq!(left(&*store, GLOBAL, Period::Day).await, 7.0, "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_is_reported_within_the_timeout_and_found_again() {
    let redis = RedisServer::start();
    let settings = StateSettings {
        redis_url: Some(Secret::new(redis.url())),
        timeout: Duration::from_millis(50),
        ..StateSettings::default()
    };
    let store = RedisStore::new(budgets(&[(GLOBAL, Period::Day, 10.0)]), &settings).expect("store");
    let mut t = Ticket::new(None);
    assert_eq!(
        store.admit(&reserve(None, 1.0), &mut t).await,
        Ok(Admitted::Yes)
    );
    assert!(store.health().available);
    redis.pause();
    let started = Instant::now();
    let mut late = Ticket::new(None);
    let r = store.admit(&reserve(None, 1.0), &mut late).await;
    let took = started.elapsed();
    redis.resume();
    assert_eq!(r, Err(Refused::Unavailable(StoreError::Timeout(50))));
    assert!(
        late.holds(),
        "the ticket holds what the late admission may take"
    );
    println!("a paused server was reported after {took:?} (timeout 50 ms)");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let health = store.health();
    assert!(!health.available);
    assert_eq!(
        health.error.as_deref(),
        Some("the state store did not answer within 50 ms")
    );
    // Resumed, it answers again; the admission that timed out ran late, and its reservation
    // is held until its settlement gives it back.
    let deadline = Instant::now() + TEST_TIMEOUT;
    while store.remaining().await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.health().available);
    store.settle(&t, 1.0, 0).await.expect("settle");
    assert_eq!(left(&store, GLOBAL, Period::Day).await, 8.0);
    store.settle(&late, 0.0, 0).await.expect("settle");
    assert_eq!(left(&store, GLOBAL, Period::Day).await, 9.0);
}

/// The Redis user docs/security.md suggests: its key prefix, and the commands of the scripts.
const ACL: &[&str] = &[
    "ACL",
    "SETUSER",
    "switchyard",
    "on",
    ">s3cret-pass",
    "resetkeys",
    "~switchyard:*",
    "resetchannels",
    "-@all",
    "+evalsha",
    "+eval",
    "+script|load",
    "+ping",
    "+time",
    "+hget",
    "+hmget",
    "+hset",
    "+hdel",
    "+hincrby",
    "+zadd",
    "+zrem",
    "+zrangebyscore",
    "+get",
    "+set",
    "+pexpire",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_user_with_only_its_prefix_and_commands_suffices_and_its_password_never_shows() {
    let redis = RedisServer::start();
    assert_eq!(redis.cli(ACL), "OK");
    let url = |password: &str| format!("redis://switchyard:{password}@127.0.0.1:{}/0", redis.port);
    let mut limits = budgets(&[(GLOBAL, Period::Day, 10.0)]);
    limits.rates = rates().rates;
    let store = |password: &str| {
        let settings = StateSettings {
            redis_url: Some(Secret::new(url(password))),
            timeout: Duration::from_secs(2),
            ..StateSettings::default()
        };
        RedisStore::new(limits.clone(), &settings).expect("store")
    };
    let good = store("s3cret-pass");
    let mut t = Ticket::new(Some("t"));
    let ask = Ask {
        tenant: Some("t"),
        take_rate: Some(100),
        reserve_usd: Some(2.0),
    };
    assert_eq!(good.admit(&ask, &mut t).await, Ok(Admitted::Yes));
    good.settle(&t, 1.5, 120).await.expect("settle");
    assert_eq!(left(&good, GLOBAL, Period::Day).await, 8.5);
    // Sticky conversations' pins, read and written as that user.
    good.pin("conversation", "cloud\thard", Duration::from_secs(60))
        .await
        .expect("pin");
    assert_eq!(
        good.pinned("conversation").await.expect("pinned"),
        Some("cloud\thard".to_string())
    );

    let bad = store("wrong-pass");
    let Err(Refused::Unavailable(e)) = bad.admit(&ask, &mut Ticket::new(Some("t"))).await else {
        panic!("a wrong password is refused");
    };
    let shown = format!("{e} {:?}", bad.health());
    println!("{shown}");
    for secret in ["wrong-pass", "s3cret-pass", "switchyard:", "127.0.0.1"] {
        assert!(!shown.contains(secret), "{shown}");
    }
}
