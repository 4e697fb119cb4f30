//! The audit trail of deployment gates: every decision, with its report.

use chrono::{DateTime, Utc};

use super::{Result, Store, StoreError};
use crate::views::GateDecision;

/// A gate decision to record.
#[derive(Debug, Clone, Copy)]
pub struct NewGateDecision<'a> {
    pub model: &'a str,
    pub model_version: &'a str,
    /// The site whose results were gated; none for every site.
    pub site: Option<&'a str>,
    /// Only results scored since then were gated.
    pub since: Option<DateTime<Utc>>,
    pub passed: bool,
    /// The gate's report, as the API answers it.
    pub report: &'a serde_json::Value,
    /// The id of the API key that asked.
    pub key_id: &'a str,
}

impl NewGateDecision<'_> {
    /// The record, with the id and time the store gave it.
    pub(super) fn recorded(&self, id: i64, decided_at: DateTime<Utc>) -> GateDecision {
        GateDecision {
            id,
            model: self.model.to_owned(),
            model_version: self.model_version.to_owned(),
            site: self.site.map(str::to_owned),
            since: self.since,
            decided_at,
            passed: self.passed,
            key_id: self.key_id.to_owned(),
            report: self.report.clone(),
        }
    }
}

impl Store {
    /// Records a gate decision; the record.
    pub async fn record_gate_decision(&self, new: &NewGateDecision<'_>) -> Result<GateDecision> {
        let pool = postgres_or!(self, lite => lite.record_gate_decision(new));
        let row = sqlx::query!(
            "INSERT INTO gate_decisions (model, model_version, site, since, passed, report, key_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id, decided_at",
            new.model,
            new.model_version,
            new.site,
            new.since,
            new.passed,
            new.report,
            new.key_id
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(new.recorded(row.id, row.decided_at))
    }

    /// The `limit` latest gate decisions of a model version, newest first;
    /// with `site`, only those that gated that site's results.
    pub async fn gate_decisions(
        &self,
        model: &str,
        version: &str,
        site: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GateDecision>> {
        let pool = postgres_or!(self, lite => lite.gate_decisions(model, version, site, limit));
        sqlx::query_as!(
            GateDecision,
            "SELECT id, model, model_version, site, since, decided_at, passed, key_id, report
             FROM gate_decisions
             WHERE model = $1 AND model_version = $2 AND ($3::text IS NULL OR site = $3)
             ORDER BY id DESC LIMIT $4",
            model,
            version,
            site,
            limit
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)
    }
}
