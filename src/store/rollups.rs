//! The Dice rollups the periodic gauges read: each scored result adds its
//! Dice (and, for structures with probabilities, its soft Dice and ECE) to the
//! bucket of its case time, by UTC day and by hour, so that a rolling window
//! reads at most 30 daily or 24 hourly buckets per stream however long the
//! history is. Both stores share these rules.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};

use crate::metrics::Empty;
use crate::metrics::case::CaseScore;

/// Hourly buckets are kept this long: the 1-day window needs the last 24 hours.
pub const HOURLY_KEPT: Duration = Duration::days(2);

/// What one result adds to one stream's bucket.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub structure: String,
    /// 1 with a Dice (not empty on both sides), else 0.
    pub cases: i64,
    pub dice_sum: f64,
    /// 1 with probabilistic scores (finite), else 0.
    pub probabilistic_cases: i64,
    pub soft_dice_sum: f64,
    pub ece_sum: f64,
}

/// What one result adds to the rollups: for every structure with a Dice or
/// with probabilistic scores, an [`Entry`]; and `"all"` for the case's mean
/// Dice. Sorted by structure, so that concurrent upserts lock buckets in one
/// order.
pub(super) fn entries(outcome: &CaseScore) -> Vec<Entry> {
    let mut entries: Vec<Entry> = outcome
        .structures
        .iter()
        .filter_map(|s| {
            let dice =
                Some(s.metrics.dice).filter(|d| s.metrics.empty != Empty::Both && d.is_finite());
            let scores = s
                .probabilistic
                .as_ref()
                .map(|p| (p.soft_dice, p.ece))
                .filter(|(d, e)| d.is_finite() && e.is_finite());
            (dice.is_some() || scores.is_some()).then(|| Entry {
                structure: s.name.clone(),
                cases: i64::from(dice.is_some()),
                dice_sum: dice.unwrap_or(0.0),
                probabilistic_cases: i64::from(scores.is_some()),
                soft_dice_sum: scores.map_or(0.0, |s| s.0),
                ece_sum: scores.map_or(0.0, |s| s.1),
            })
        })
        .collect();
    if let Some(mean) = outcome.mean_dice.filter(|m| m.is_finite()) {
        entries.push(Entry {
            structure: super::drift::ALL.to_owned(),
            cases: 1,
            dice_sum: mean,
            probabilistic_cases: 0,
            soft_dice_sum: 0.0,
            ece_sum: 0.0,
        });
    }
    entries.sort_by(|a, b| a.structure.cmp(&b.structure));
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

/// A stream's sums and case counts over a rolling window.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WindowSum {
    pub site: String,
    pub model: String,
    pub model_version: String,
    pub structure: String,
    pub dice_sum: f64,
    pub cases: i64,
    pub soft_dice_sum: f64,
    pub ece_sum: f64,
    pub probabilistic_cases: i64,
}

/// A stream's mean over a rolling window: (site, model, version, structure,
/// mean, cases).
pub type StreamMean = (String, String, String, String, f64, i64);

/// The means of a rolling window, of every stream with cases.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rolling {
    pub dice: Vec<StreamMean>,
    /// Of the structures with probabilistic scores only.
    pub soft_dice: Vec<StreamMean>,
    pub ece: Vec<StreamMean>,
}

impl Rolling {
    /// The means of `sums`, for each site and pooled over sites.
    pub(super) fn of(sums: &[WindowSum]) -> Rolling {
        Rolling {
            dice: with_pooled(sums, |s| (s.dice_sum, s.cases)),
            soft_dice: with_pooled(sums, |s| (s.soft_dice_sum, s.probabilistic_cases)),
            ece: with_pooled(sums, |s| (s.ece_sum, s.probabilistic_cases)),
        }
    }
}

/// The mean (of the sum and count `value` picks) and case count of every site
/// stream with cases and of the pooled streams (site `"all"`).
fn with_pooled(sums: &[WindowSum], value: impl Fn(&WindowSum) -> (f64, i64)) -> Vec<StreamMean> {
    let mut pooled: BTreeMap<(&str, &str, &str), (f64, i64)> = BTreeMap::new();
    let mut streams = Vec::with_capacity(sums.len() + sums.len() / 8);
    for s in sums {
        let (sum, cases) = value(s);
        let total = pooled
            .entry((&s.model, &s.model_version, &s.structure))
            .or_default();
        total.0 += sum;
        total.1 += cases;
        if cases > 0 {
            streams.push((
                s.site.clone(),
                s.model.clone(),
                s.model_version.clone(),
                s.structure.clone(),
                sum / cases as f64,
                cases,
            ));
        }
    }
    for ((model, version, structure), (sum, cases)) in pooled {
        if cases > 0 {
            let all = super::drift::ALL.to_owned();
            let key = (model.to_owned(), version.to_owned(), structure.to_owned());
            streams.push((all, key.0, key.1, key.2, sum / cases as f64, cases));
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
            soft_dice_sum: 0.0,
            ece_sum: 0.0,
            probabilistic_cases: 0,
        };
        let rolling = Rolling::of(&[sum("a", 1.8, 2), sum("b", 0.6, 1)]);
        // No probabilistic scores: no soft Dice or ECE stream.
        assert!(rolling.soft_dice.is_empty() && rolling.ece.is_empty());
        let streams = rolling.dice;
        let mean = |site: &str| streams.iter().find(|s| s.0 == site).map(|s| (s.4, s.5));
        assert_eq!(mean("a"), Some((0.9, 2)));
        assert_eq!(mean("b"), Some((0.6, 1)));
        let (pooled, cases) = mean("all").unwrap();
        assert!((pooled - 0.8).abs() < 1e-12);
        assert_eq!(cases, 3);
    }

    #[test]
    fn soft_dice_and_ece_streams_average_the_cases_with_probabilities_only() {
        // Site a: three cases with a Dice, two of them with probabilities;
        // site b: one case with probabilities whose structure is empty on
        // both sides (no Dice).
        let sum = |site: &str, dice: (f64, i64), soft: f64, ece: f64, cases: i64| WindowSum {
            site: site.into(),
            model: "m".into(),
            model_version: "1".into(),
            structure: "liver".into(),
            dice_sum: dice.0,
            cases: dice.1,
            soft_dice_sum: soft,
            ece_sum: ece,
            probabilistic_cases: cases,
        };
        let rolling = Rolling::of(&[
            sum("a", (2.4, 3), 1.5, 0.1, 2),
            sum("b", (0.0, 0), 0.0, 0.02, 1),
        ]);
        let mean = |streams: &[StreamMean], site: &str| {
            streams.iter().find(|s| s.0 == site).map(|s| (s.4, s.5))
        };
        assert_eq!(mean(&rolling.dice, "b"), None);
        assert!((mean(&rolling.dice, "all").unwrap().0 - 0.8).abs() < 1e-12);
        assert_eq!(mean(&rolling.soft_dice, "a"), Some((0.75, 2)));
        assert_eq!(mean(&rolling.soft_dice, "b"), Some((0.0, 1)));
        assert_eq!(mean(&rolling.soft_dice, "all"), Some((0.5, 3)));
        assert_eq!(mean(&rolling.ece, "a"), Some((0.05, 2)));
        let (pooled, cases) = mean(&rolling.ece, "all").unwrap();
        assert!((pooled - 0.04).abs() < 1e-15 && cases == 3, "{pooled}");
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
