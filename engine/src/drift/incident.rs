//! Incidents: one per change, not one alert per detector and stream.
//!
//! A change at one site and structure moves several streams: the site's
//! structure stream, the site's mean, the pooled structure stream and the
//! pooled mean. The first stream to alarm opens an incident; a related stream
//! (same site or either pooled, same structure or either the mean) of the same
//! model version that alarms while it is open joins it as evidence. An incident
//! closes once none of its streams has alarmed for a hold period of case time,
//! so a statistic hovering at its limit does not open and close alert after
//! alert. Acknowledging records who looked; it does not close an incident.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{Detector, Metric, Update};

/// The site of a pooled stream and the structure of a per-case mean stream.
pub const ALL: &str = "all";

/// A stream within one model version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// Site name, or [`ALL`] for the stream pooling every site.
    pub site: String,
    /// Structure name, or [`ALL`] for the per-case mean Dice.
    pub structure: String,
    /// What the stream watches (per-case mean streams watch Dice).
    #[serde(default)]
    pub metric: Metric,
}

impl StreamId {
    /// The Dice stream of a site (or [`ALL`]) and structure (or [`ALL`]).
    pub fn dice(site: &str, structure: &str) -> StreamId {
        StreamId {
            site: site.to_owned(),
            structure: structure.to_owned(),
            metric: Metric::Dice,
        }
    }

    /// Whether a change seen on one stream would also move the other. Streams
    /// of different metrics are never related: an incident is about one
    /// metric, so Dice incidents stay what they were before other metrics
    /// were watched.
    pub fn related(&self, other: &StreamId) -> bool {
        let overlaps = |a: &str, b: &str| a == b || a == ALL || b == ALL;
        self.metric == other.metric
            && overlaps(&self.site, &other.site)
            && overlaps(&self.structure, &other.structure)
    }
}

/// A stream and detector whose alarm belongs to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Site of the stream, or [`ALL`].
    pub site: String,
    /// Structure of the stream, or [`ALL`].
    pub structure: String,
    /// The detector that alarmed.
    pub detector: Detector,
    /// Case time of its first alarm in this incident.
    pub first_alarm_at: DateTime<Utc>,
    /// Case time of its latest alarm in this incident.
    pub last_alarm_at: DateTime<Utc>,
}

/// An open incident of one model version.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Its stored id; None until stored.
    pub id: Option<i64>,
    /// The stream and detector that opened it.
    pub stream: StreamId,
    /// The detector whose alarm opened it.
    pub detector: Detector,
    /// Case time of the opening alarm.
    pub observed_at: DateTime<Utc>,
    /// Case time of the latest alarm of any of its streams.
    pub last_alarm_at: DateTime<Utc>,
    /// The opening update's statistic.
    pub statistic: f64,
    /// The opening update's limit.
    pub limit: f64,
    /// Every stream and detector that alarmed while it was open, the opening
    /// one first.
    pub streams: Vec<Evidence>,
    /// Changed since it was loaded (to be stored).
    pub changed: bool,
}

/// The open incidents of one model version.
#[derive(Debug, Clone, Default)]
pub struct Incidents {
    /// Open incidents, oldest first.
    pub open: Vec<Incident>,
}

impl Incidents {
    /// Records an alarming update of `stream` at case time `at`: it joins the
    /// open incident whose stream is related, or opens one. Returns the index
    /// of that incident in `open`.
    pub fn alarm(&mut self, stream: &StreamId, update: &Update, at: DateTime<Utc>) -> usize {
        let evidence = Evidence {
            site: stream.site.clone(),
            structure: stream.structure.clone(),
            detector: update.detector,
            first_alarm_at: at,
            last_alarm_at: at,
        };
        if let Some(i) = self.open.iter().position(|inc| inc.stream.related(stream)) {
            let incident = &mut self.open[i];
            incident.last_alarm_at = incident.last_alarm_at.max(at);
            incident.changed = true;
            match incident.streams.iter_mut().find(|e| {
                e.site == stream.site
                    && e.structure == stream.structure
                    && e.detector == update.detector
            }) {
                Some(e) => e.last_alarm_at = e.last_alarm_at.max(at),
                None => incident.streams.push(evidence),
            }
            return i;
        }
        self.open.push(Incident {
            id: None,
            stream: stream.clone(),
            detector: update.detector,
            observed_at: at,
            last_alarm_at: at,
            statistic: update.statistic,
            limit: update.limit,
            streams: vec![evidence],
            changed: true,
        });
        self.open.len() - 1
    }

    /// Removes and returns the incidents with no alarm during the `hold`
    /// before case time `now`.
    pub fn close_quiet(&mut self, now: DateTime<Utc>, hold: Duration) -> Vec<Incident> {
        let (closed, open) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|inc| now - inc.last_alarm_at >= hold);
        self.open = open;
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(site: &str, structure: &str) -> StreamId {
        StreamId {
            site: site.into(),
            structure: structure.into(),
            metric: Metric::Dice,
        }
    }

    fn alarm(detector: Detector) -> Update {
        Update {
            detector,
            t: 40,
            input: 0.1,
            statistic: 0.2,
            limit: 0.25,
            alarm: true,
        }
    }

    #[test]
    fn one_change_is_one_incident_with_its_correlated_streams() {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let mut incidents = Incidents::default();
        let first = incidents.alarm(&id("site3", "liver"), &alarm(Detector::PitEwma), t0);
        for (i, stream) in [id("site3", ALL), id(ALL, "liver"), id(ALL, ALL)]
            .iter()
            .enumerate()
        {
            let at = t0 + Duration::hours(i as i64 + 1);
            assert_eq!(
                incidents.alarm(stream, &alarm(Detector::PitEwma), at),
                first
            );
        }
        assert_eq!(
            incidents.alarm(&id("site3", "liver"), &alarm(Detector::GuardRail), t0),
            first
        );
        assert_eq!(incidents.open.len(), 1);
        assert_eq!(incidents.open[0].streams.len(), 5);
        // Another site's other structure is another change.
        incidents.alarm(&id("site1", "spleen"), &alarm(Detector::Cusum), t0);
        assert_eq!(incidents.open.len(), 2);
        assert!(!id("site1", "spleen").related(&id("site3", ALL)));
        // The same site's lesion sensitivity is another incident.
        let sensitivity = StreamId {
            metric: Metric::LesionSensitivity,
            ..id("site3", "liver")
        };
        assert!(!sensitivity.related(&id("site3", "liver")));
        incidents.alarm(&sensitivity, &alarm(Detector::PitEwma), t0);
        assert_eq!(incidents.open.len(), 3);
        assert_eq!(incidents.open[2].stream.metric, Metric::LesionSensitivity);
    }

    #[test]
    fn incidents_close_only_after_the_hold_period_without_alarms() {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let hold = Duration::days(3);
        let mut incidents = Incidents::default();
        incidents.alarm(&id("site1", "liver"), &alarm(Detector::PitEwma), t0);
        // The statistic hovers at its limit: alarms come back within the hold.
        incidents.alarm(
            &id("site1", "liver"),
            &alarm(Detector::PitEwma),
            t0 + Duration::days(2),
        );
        assert!(
            incidents
                .close_quiet(t0 + Duration::days(4), hold)
                .is_empty()
        );
        let closed = incidents.close_quiet(t0 + Duration::days(5), hold);
        assert_eq!(closed.len(), 1);
        assert!(incidents.open.is_empty());
    }
}
