//! Spending budgets in USD per tenant and for the whole gateway, per UTC day and calendar month:
//! their periods and refusals. A cloud call reserves its worst-case cost (prompt estimate and
//! max_tokens at the model's prices) before it starts and settles the real cost when it ends, so
//! concurrent requests cannot together overshoot a budget by more than their own estimates miss;
//! the reservations live in a [`StateStore`](super::state::StateStore).

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
