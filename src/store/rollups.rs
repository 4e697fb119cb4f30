//! The Dice rollups the periodic gauges read: each scored result adds its
//! Dice to the bucket of its case time, by UTC day and by hour, so that a
//! rolling window reads at most 30 daily or 24 hourly buckets per stream
//! however long the history is. Both stores share these rules.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};

use crate::metrics::Empty;
use crate::metrics::case::CaseScore;

/// Hourly buckets are kept this long: the 1-day window needs the last 24 hours.
pub const HOURLY_KEPT: Duration = Duration::days(2);

/// What one result adds to the rollups: (structure, Dice) for every structure
/// with a Dice (not empty on both sides), and `"all"` for the case's mean.
/// Sorted by structure, so that concurrent upserts lock buckets in one order.
pub(super) fn entries(outcome: &CaseScore) -> Vec<(String, f64)> {
    let mut entries: Vec<(String, f64)> = outcome
        .structures
        .iter()
        .filter(|s| s.metrics.empty != Empty::Both && s.metrics.dice.is_finite())
        .map(|s| (s.name.clone(), s.metrics.dice))
        .collect();
    if let Some(mean) = outcome.mean_dice.filter(|m| m.is_finite()) {
        entries.push((super::drift::ALL.to_owned(), mean));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

/// The UTC day of a case time.
pub(super) fn day(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// The hour of a case time.
pub(super) fn hour(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::hours(1)).unwrap_or(at)
}

/// The buckets a rolling window of `days` reads at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStart {
    /// The 1-day window: hourly buckets from this hour on (24 of them).
    Hour(DateTime<Utc>),
    /// Longer windows: daily buckets from this day on (`days` of them, today included).
    Day(NaiveDate),
}

impl WindowStart {
    /// Where the window of `days` starts at `now`.
    pub fn of(days: i32, now: DateTime<Utc>) -> WindowStart {
        if days <= 1 {
            WindowStart::Hour(hour(now) - Duration::hours(23))
        } else {
            WindowStart::Day(day(now) - Duration::days(i64::from(days) - 1))
        }
    }
}

/// A stream's Dice sum and case count over a rolling window.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WindowSum {
    pub site: String,
    pub model: String,
    pub model_version: String,
    pub structure: String,
    pub dice_sum: f64,
    pub cases: i64,
}

/// Mean Dice and case count of every site stream and of the pooled streams
/// (site `"all"`): (site, model, version, structure, mean, cases).
pub(super) fn with_pooled(sums: Vec<WindowSum>) -> Vec<(String, String, String, String, f64, i64)> {
    let mut pooled: BTreeMap<(String, String, String), (f64, i64)> = BTreeMap::new();
    let mut streams = Vec::with_capacity(sums.len() + sums.len() / 8);
    for s in sums {
        let total = pooled
            .entry((
                s.model.clone(),
                s.model_version.clone(),
                s.structure.clone(),
            ))
            .or_default();
        total.0 += s.dice_sum;
        total.1 += s.cases;
        if s.cases > 0 {
            let mean = s.dice_sum / s.cases as f64;
            streams.push((s.site, s.model, s.model_version, s.structure, mean, s.cases));
        }
    }
    for ((model, version, structure), (sum, cases)) in pooled {
        if cases > 0 {
            let all = super::drift::ALL.to_owned();
            streams.push((all, model, version, structure, sum / cases as f64, cases));
        }
    }
    streams
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_whole_hours_for_one_day_and_whole_days_beyond() {
        let now: DateTime<Utc> = "2026-03-10T14:25:00Z".parse().unwrap();
        assert_eq!(
            WindowStart::of(1, now),
            WindowStart::Hour("2026-03-09T15:00:00Z".parse().unwrap())
        );
        assert_eq!(
            WindowStart::of(7, now),
            WindowStart::Day(NaiveDate::from_ymd_opt(2026, 3, 4).unwrap())
        );
        assert_eq!(
            WindowStart::of(30, now),
            WindowStart::Day(NaiveDate::from_ymd_opt(2026, 2, 9).unwrap())
        );
    }

    #[test]
    fn pooled_streams_weigh_sites_by_their_cases() {
        let sum = |site: &str, dice_sum: f64, cases: i64| WindowSum {
            site: site.into(),
            model: "m".into(),
            model_version: "1".into(),
            structure: "liver".into(),
            dice_sum,
            cases,
        };
        let streams = with_pooled(vec![sum("a", 1.8, 2), sum("b", 0.6, 1)]);
        let mean = |site: &str| streams.iter().find(|s| s.0 == site).map(|s| (s.4, s.5));
        assert_eq!(mean("a"), Some((0.9, 2)));
        assert_eq!(mean("b"), Some((0.6, 1)));
        let (pooled, cases) = mean("all").unwrap();
        assert!((pooled - 0.8).abs() < 1e-12);
        assert_eq!(cases, 3);
    }

    #[test]
    fn buckets_are_the_utc_day_and_hour() {
        let at: DateTime<Utc> = "2026-03-10T23:59:59.5Z".parse().unwrap();
        assert_eq!(day(at), NaiveDate::from_ymd_opt(2026, 3, 10).unwrap());
        assert_eq!(
            hour(at),
            "2026-03-10T23:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
