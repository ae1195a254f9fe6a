//! When to try a delivery again: svix's schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
//! 10 h) with ±20 % jitter, never earlier than a `Retry-After` the endpoint sent.

use std::time::Duration;

use rand::Rng;

/// `Retry-After` beyond this is taken as this: an endpoint cannot park a delivery for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    jitter: f64,
}

impl RetrySchedule {
    /// Parses comma-separated milliseconds, e.g. `0,5000,300000`.
    pub fn parse(delays_ms: &str, jitter: f64) -> Result<Self, String> {
        let delays = delays_ms
            .split(',')
            .map(|d| d.trim().parse::<u64>().map(Duration::from_millis).map_err(|_| format!("retry delay {d:?} is not a number of milliseconds")))
            .collect::<Result<Vec<_>, _>>()?;
        if !(0.0..1.0).contains(&jitter) {
            return Err(format!("jitter must be in [0, 1); got {jitter}"));
        }
        Ok(Self { delays, jitter })
    }

    /// How many attempts a delivery gets.
    pub fn attempts(&self) -> usize {
        self.delays.len()
    }

    /// The delay before the next attempt, once `made` attempts have failed; None when none is left.
    pub fn next_delay(&self, made: usize, retry_after: Option<Duration>) -> Option<Duration> {
        let base = *self.delays.get(made)?;
        let factor = if self.jitter > 0.0 { rand::thread_rng().gen_range(1.0 - self.jitter..=1.0 + self.jitter) } else { 1.0 };
        let jittered = base.mul_f64(factor);
        Some(jittered.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER)))
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVIX: &str = "0,5000,300000,1800000,7200000,18000000,36000000,36000000";

    #[test]
    fn follows_the_schedule_within_the_jitter() {
        let schedule = RetrySchedule::parse(SVIX, 0.2).unwrap();
        assert_eq!(schedule.attempts(), 8);
        for _ in 0..200 {
            let after_first = schedule.next_delay(1, None).unwrap();
            assert!((Duration::from_secs(4)..=Duration::from_secs(6)).contains(&after_first), "{after_first:?}");
            let last = schedule.next_delay(7, None).unwrap();
            assert!((Duration::from_secs(8 * 3600)..=Duration::from_secs(12 * 3600)).contains(&last), "{last:?}");
        }
        assert_eq!(schedule.next_delay(8, None), None, "eight attempts, then it gives up");
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let schedule = RetrySchedule::parse(SVIX, 0.2).unwrap();
        let delays: std::collections::HashSet<_> = (0..20).map(|_| schedule.next_delay(2, None).unwrap()).collect();
        assert!(delays.len() > 10, "jitter should spread retries: {delays:?}");
    }

    #[test]
    fn retry_after_is_a_floor_with_a_cap() {
        let schedule = RetrySchedule::parse("0,100", 0.0).unwrap();
        assert_eq!(schedule.next_delay(1, Some(Duration::from_secs(30))), Some(Duration::from_secs(30)));
        assert_eq!(schedule.next_delay(1, Some(Duration::ZERO)), Some(Duration::from_millis(100)));
        assert_eq!(schedule.next_delay(1, Some(Duration::from_secs(999_999))), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn refuses_bad_settings() {
        assert!(RetrySchedule::parse("0,5s", 0.2).unwrap_err().contains("5s"));
        assert!(RetrySchedule::parse("0", 1.5).is_err());
    }
}
