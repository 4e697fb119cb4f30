//! The audit trail of deployment gates, as in PostgreSQL (`store::gates`).

use chrono::{DateTime, Utc};

use super::{Lite, at, classify, json, now, parse};
use crate::store::Result;
use crate::store::gates::NewGateDecision;
use crate::views::GateDecision;

impl Lite {
    /// See [`crate::store::Store::record_gate_decision`].
    pub async fn record_gate_decision(&self, new: &NewGateDecision<'_>) -> Result<GateDecision> {
        let (id, decided_at): (i64, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO gate_decisions (model, model_version, site, since, decided_at, passed, report, key_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING id, decided_at",
        )
        .bind(new.model)
        .bind(new.model_version)
        .bind(new.site)
        .bind(new.since.map(at))
        .bind(now())
        .bind(new.passed)
        .bind(json(new.report)?)
        .bind(new.key_id)
        .fetch_one(&self.writer)
        .await
        .map_err(classify)?;
        Ok(new.recorded(id, decided_at))
    }

    /// See [`crate::store::Store::gate_decisions`].
    pub async fn gate_decisions(
        &self,
        model: &str,
        version: &str,
        site: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GateDecision>> {
        type Row = (
            i64,
            Option<String>,
            Option<DateTime<Utc>>,
            DateTime<Utc>,
            bool,
            String,
            String,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, site, since, decided_at, passed, key_id, report
             FROM gate_decisions
             WHERE model = $1 AND model_version = $2 AND ($3 IS NULL OR site = $3)
             ORDER BY id DESC LIMIT $4",
        )
        .bind(model)
        .bind(version)
        .bind(site)
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(id, site, since, decided_at, passed, key_id, report)| {
                Ok(GateDecision {
                    id,
                    model: model.to_owned(),
                    model_version: version.to_owned(),
                    site,
                    since,
                    decided_at,
                    passed,
                    key_id,
                    report: parse("gate report", &report)?,
                })
            })
            .collect()
    }
}
