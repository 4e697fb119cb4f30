//! Compact detector history, as in the PostgreSQL store (`store::history`),
//! with its arrays as JSON text.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{Lite, classify, json, parse};
use crate::drift::feed::StreamUpdate;
use crate::drift::incident::StreamId;
use crate::store::drift::sample_of;
use crate::store::history::{
    HistoryBatch, HistoryRow, StreamHistory, assemble, fed_score, finite, latest_states,
    parameter_sets, parse_sets,
};
use crate::store::{ALL, Result};

/// Stores a feed's history and the latest detector states at `written`.
pub(super) async fn save(
    conn: &mut SqliteConnection,
    updates: &[StreamUpdate],
    written: &str,
) -> Result<()> {
    let (sets, of_update) = parameter_sets(updates)?;
    let mut ids = Vec::with_capacity(sets.len());
    for set in &sets {
        let key = set.key;
        let id: i32 = sqlx::query_scalar(
            "INSERT INTO detector_parameters (model, model_version, site, structure, baseline_id, parameters, created_at,
                                              metric)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (model, model_version, site, structure, metric, baseline_id, parameters)
             DO UPDATE SET created_at = created_at RETURNING id",
        )
        .bind(&key.model)
        .bind(&key.model_version)
        .bind(&key.stream.site)
        .bind(&key.stream.structure)
        .bind(set.baseline_id)
        .bind(&set.json)
        .bind(written)
        .bind(key.stream.metric.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
        ids.push(id);
    }
    let set_ids: Vec<i32> = of_update.iter().map(|&n| ids[n]).collect();
    let batch = HistoryBatch::new(updates, &set_ids);
    for (i, (result_id, pairs)) in batch.result_ids.iter().zip(&batch.pairs).enumerate() {
        let streams = batch.row(i);
        sqlx::query(
            "INSERT INTO detector_history (result_id, fed_at, pairs, parameters, t, flags, vals)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(result_id)
        .bind(written)
        .bind(pairs)
        .bind(json(&streams.parameters)?)
        .bind(json(&streams.t)?)
        .bind(json(&streams.flags)?)
        .bind(json(&streams.vals)?)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    }
    for (key, baseline_id, u) in latest_states(updates) {
        sqlx::query(
            "INSERT INTO detector_state (site, model, model_version, structure, detector, baseline_id, t, statistic,
                                         limit_value, alarm, updated_at, metric)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (site, model, model_version, structure, metric, detector) DO UPDATE
             SET baseline_id = $6, t = $7, statistic = $8, limit_value = $9, alarm = $10, updated_at = $11",
        )
        .bind(&key.stream.site)
        .bind(&key.model)
        .bind(&key.model_version)
        .bind(&key.stream.structure)
        .bind(u.detector.as_str())
        .bind(baseline_id)
        .bind(u.t as i32)
        .bind(finite(u.statistic))
        .bind(u.limit)
        .bind(u.alarm)
        .bind(written)
        .bind(key.stream.metric.as_str())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

type Row = (
    i64,
    DateTime<Utc>,
    Option<f64>,
    i32,
    String,
    String,
    String,
    String,
    Option<String>,
);

impl Lite {
    /// See [`crate::store::Store::stream_history`].
    pub async fn stream_history(
        &self,
        model: &str,
        version: &str,
        stream: &StreamId,
        max_cases: usize,
    ) -> Result<Option<StreamHistory>> {
        let (site, structure, metric) = (&stream.site, &stream.structure, stream.metric);
        let Some(baseline_id): Option<i64> = sqlx::query_scalar(
            "SELECT max(baseline_id) FROM detector_parameters
             WHERE model = $1 AND model_version = $2 AND site = $3 AND structure = $4 AND metric = $5",
        )
        .bind(model)
        .bind(version)
        .bind(site)
        .bind(structure)
        .bind(metric.as_str())
        .fetch_one(&self.reader)
        .await
        .map_err(classify)?
        else {
            return Ok(None);
        };
        let sets: Vec<(i32, String)> = sqlx::query_as(
            "SELECT id, parameters FROM detector_parameters
             WHERE model = $1 AND model_version = $2 AND site = $3 AND structure = $4 AND baseline_id = $5
               AND metric = $6",
        )
        .bind(model)
        .bind(version)
        .bind(site)
        .bind(structure)
        .bind(baseline_id)
        .bind(metric.as_str())
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let sets = parse_sets(
            sets.into_iter()
                .map(|(id, text)| Ok((id, parse("detector parameters", &text)?)))
                .collect::<Result<_>>()?,
        )?;
        let sample: String = sqlx::query_scalar(
            "SELECT dice FROM baseline_samples WHERE baseline_id = $1 AND structure = $2 AND metric = $3",
        )
        .bind(baseline_id)
        .bind(structure)
        .bind(metric.as_str())
        .fetch_one(&self.reader)
        .await
        .map_err(classify)?;
        let baseline = sample_of(metric, parse("baseline sample", &sample)?)?;
        let ids = json(&sets.keys().collect::<Vec<_>>())?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT h.result_id, r.observed_at,
                    CASE WHEN $4 = 'all' THEN r.mean_dice WHEN $7 = 'ece' THEN s.ece ELSE s.dice END,
                    h.pairs, h.parameters, h.t, h.flags, h.vals, l.metrics
             FROM detector_history h
             JOIN results r ON r.id = h.result_id
             LEFT JOIN structure_results s ON s.result_id = h.result_id AND s.structure = $4
             LEFT JOIN lesion_results l
                    ON $7 = 'lesion_sensitivity' AND l.result_id = h.result_id AND l.structure = $4
             WHERE r.model = $1 AND r.model_version = $2 AND ($3 = 'all' OR r.site = $3)
               AND EXISTS (SELECT 1 FROM json_each(h.parameters) p WHERE p.value IN (SELECT value FROM json_each($5)))
             LIMIT $6",
        )
        .bind(model)
        .bind(version)
        .bind(site)
        .bind(structure)
        .bind(&ids)
        .bind(max_cases as i64 + 1)
        .bind(metric.as_str())
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let rows = rows
            .into_iter()
            .map(
                |(result_id, observed_at, value, pairs, p, t, flags, vals, lesions)| {
                    let lesions = lesions.and_then(|l| serde_json::from_str(&l).ok());
                    Ok(HistoryRow {
                        result_id,
                        observed_at,
                        dice: fed_score(metric, value, lesions.as_ref()),
                        pairs,
                        parameters: parse("detector history", &p)?,
                        t: parse("detector history", &t)?,
                        flags: parse("detector history", &flags)?,
                        vals: parse("detector history", &vals)?,
                    })
                },
            )
            .collect::<Result<Vec<_>>>()?;
        assemble(
            baseline_id,
            baseline,
            *structure == ALL,
            &sets,
            rows,
            max_cases,
        )
        .map(Some)
    }
}
