//! Spending budgets in USD per tenant and for the whole gateway, per UTC day and month, as
//! reserve-then-settle tickets: a cloud call reserves its worst-case cost (prompt estimate and
//! max_tokens at the model's prices) before it starts and settles the real cost when it ends, so
//! concurrent requests cannot together overshoot a budget by more than their own estimates miss.
//! The store is a trait so that a shared one (several replicas) can replace the in-memory one.

use crate::policy::{BudgetLimits, BudgetSettings};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The label of the gateway-wide budget in metrics and messages.
pub const GLOBAL: &str = "*";

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn label(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// Seconds until the period containing `now` ends (for `Retry-After`).
    pub fn seconds_left(self, now: SystemTime) -> u64 {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let next_day = (secs / 86_400 + 1) * 86_400;
        let end = match self {
            Period::Day => next_day,
            Period::Month => {
                let (y, m, _) = civil_from_days((secs / 86_400) as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(ny, nm, 1).max(0) as u64 * 86_400
            }
        };
        end.saturating_sub(secs).max(1)
    }

    /// The index of the period containing `now` (days since the epoch; months since 1970-01).
    pub fn index(self, now: SystemTime) -> i64 {
        let days = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or(0) as i64;
        match self {
            Period::Day => days,
            Period::Month => {
                let (y, m, _) = civil_from_days(days);
                y * 12 + i64::from(m) - 1
            }
        }
    }
}

/// Days since 1970-01-01 of a Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A reservation to settle.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    keys: Vec<(String, Period, i64)>,
    pub reserved_usd: f64,
}

/// A budget that cannot take a reservation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the {} budget of {} (${limit:.2} per {}) is used up: ${spent:.4} spent, ${reserved:.4} reserved by requests in flight", period.label(), if tenant == GLOBAL { "the gateway".to_string() } else { format!("tenant `{tenant}`") }, period.label())]
pub struct Exhausted {
    pub tenant: String,
    pub period: Period,
    pub limit: f64,
    pub spent: f64,
    pub reserved: f64,
}

/// Where budget state lives.
pub trait BudgetStore: Send + Sync {
    /// Reserves `amount` against every limit that applies to `tenant`, or fails on the first
    /// that cannot take it (nothing is reserved then).
    fn reserve(
        &self,
        tenant: Option<&str>,
        amount: f64,
        now: SystemTime,
    ) -> Result<Ticket, Exhausted>;
    /// Replaces a reservation by the real cost.
    fn settle(&self, ticket: Ticket, actual: f64);
    /// (tenant, period, remaining USD) of every configured limit.
    fn remaining(&self, now: SystemTime) -> Vec<(String, Period, f64)>;
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    index: i64,
    spent: f64,
    reserved: f64,
}

/// Budgets in this process's memory.
pub struct MemoryBudgets {
    limits: Vec<(String, Period, f64)>,
    windows: Mutex<HashMap<(String, Period), Window>>,
}

impl MemoryBudgets {
    pub fn new(settings: &BudgetSettings) -> MemoryBudgets {
        let mut limits = vec![];
        let mut add = |who: &str, l: &BudgetLimits| {
            if let Some(d) = l.daily_usd {
                limits.push((who.to_string(), Period::Day, d));
            }
            if let Some(m) = l.monthly_usd {
                limits.push((who.to_string(), Period::Month, m));
            }
        };
        if let Some(g) = &settings.global {
            add(GLOBAL, g);
        }
        for (t, l) in &settings.tenants {
            add(t, l);
        }
        MemoryBudgets {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn applicable<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> impl Iterator<Item = &'a (String, Period, f64)> {
        self.limits
            .iter()
            .filter(move |(who, _, _)| who == GLOBAL || Some(who.as_str()) == tenant)
    }
}

fn window<'a>(
    map: &'a mut HashMap<(String, Period), Window>,
    who: &str,
    p: Period,
    index: i64,
) -> &'a mut Window {
    let w = map.entry((who.to_string(), p)).or_default();
    if w.index != index {
        // A new day or month: what was spent before no longer counts; reservations in flight do.
        *w = Window {
            index,
            spent: 0.0,
            reserved: w.reserved,
        };
    }
    w
}

impl BudgetStore for MemoryBudgets {
    fn reserve(
        &self,
        tenant: Option<&str>,
        amount: f64,
        now: SystemTime,
    ) -> Result<Ticket, Exhausted> {
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = vec![];
        for (who, p, limit) in self.applicable(tenant) {
            let index = p.index(now);
            let w = window(&mut map, who, *p, index);
            if w.spent + w.reserved + amount > *limit {
                return Err(Exhausted {
                    tenant: who.clone(),
                    period: *p,
                    limit: *limit,
                    spent: w.spent,
                    reserved: w.reserved,
                });
            }
            keys.push((who.clone(), *p, index));
        }
        for (who, p, index) in &keys {
            window(&mut map, who, *p, *index).reserved += amount;
        }
        Ok(Ticket {
            keys,
            reserved_usd: amount,
        })
    }

    fn settle(&self, ticket: Ticket, actual: f64) {
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        for (who, p, index) in &ticket.keys {
            let w = map.entry((who.clone(), *p)).or_default();
            w.reserved = (w.reserved - ticket.reserved_usd).max(0.0);
            // Spending counts in the period the request started in, if that is still current.
            if w.index == *index {
                w.spent += actual;
            }
        }
    }

    fn remaining(&self, now: SystemTime) -> Vec<(String, Period, f64)> {
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        self.limits
            .iter()
            .map(|(who, p, limit)| {
                let w = window(&mut map, who, *p, p.index(now));
                (who.clone(), *p, (limit - w.spent - w.reserved).max(0.0))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> BudgetSettings {
        BudgetSettings {
            global: Some(BudgetLimits {
                daily_usd: Some(10.0),
                monthly_usd: Some(15.0),
            }),
            tenants: vec![(
                "a".into(),
                BudgetLimits {
                    daily_usd: Some(4.0),
                    monthly_usd: None,
                },
            )],
            on_exhausted: crate::policy::OnExhausted::Reject,
        }
    }

    #[test]
    fn reservations_hold_room_until_settled() {
        let b = MemoryBudgets::new(&settings());
        let now = UNIX_EPOCH + Duration::from_secs(40 * 86_400);
        let t1 = b.reserve(Some("a"), 3.0, now).expect("fits");
        let e = b
            .reserve(Some("a"), 2.0, now)
            .expect_err("tenant a: 3 reserved + 2 > 4");
        assert_eq!((e.tenant.as_str(), e.period), ("a", Period::Day));
        assert!(e.to_string().contains("tenant `a`"));
        b.settle(t1, 1.0);
        let t2 = b.reserve(Some("a"), 2.0, now).expect("1 spent + 2 fits");
        b.settle(t2, 2.0);
        // Others only meet the global budget: 3 spent of 10.
        let t3 = b.reserve(None, 7.0, now).expect("fits globally");
        assert!(b.reserve(Some("b"), 0.5, now).is_err());
        b.settle(t3, 0.0);
        let rem = b.remaining(now);
        assert!(rem.contains(&(GLOBAL.to_string(), Period::Day, 7.0)));
        assert!(rem.contains(&("a".to_string(), Period::Day, 1.0)));
        // The next day the daily budgets start again; the month keeps counting (3 of 15).
        let tomorrow = now + Duration::from_secs(86_400);
        let t4 = b.reserve(Some("a"), 4.0, tomorrow).expect("new day");
        b.settle(t4, 4.0);
        assert!(b
            .remaining(tomorrow)
            .contains(&(GLOBAL.to_string(), Period::Month, 8.0)));
    }

    #[test]
    fn months_follow_the_calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        let jan31 = UNIX_EPOCH + Duration::from_secs(20_484 * 86_400);
        let feb1 = UNIX_EPOCH + Duration::from_secs(20_485 * 86_400);
        assert_eq!(Period::Month.index(feb1) - Period::Month.index(jan31), 1);
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        assert_eq!(Period::Month.seconds_left(jan31), 86_400);
        assert_eq!(
            Period::Day.seconds_left(jan31 + Duration::from_secs(3600)),
            82_800
        );
    }
}
