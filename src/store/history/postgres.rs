//! The detector history on PostgreSQL: a feed's steps written in a few
//! statements, and one stream read back for audit.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::{
    HistoryBatch, HistoryRow, SLOTS, StreamHistory, assemble, fed_score, finite, latest_states,
    parameter_sets, parse_sets,
};
use crate::drift::feed::{StreamKey, StreamUpdate};
use crate::drift::incident::StreamId;
use crate::store::drift::sample_of;
use crate::store::{ALL, Result, Store, StoreError};

/// Stores a feed's history and the latest detector states: a few statements
/// per feed, whatever its number of cases. `scored` maps each fed result to
/// its `scored_at`, which its history row carries (the month partition key).
pub(in crate::store) async fn save(
    tx: &mut Transaction<'_, Postgres>,
    updates: &[StreamUpdate],
    scored: &BTreeMap<i64, DateTime<Utc>>,
) -> Result<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let (sets, of_update) = parameter_sets(updates)?;
    let models: Vec<&str> = sets.iter().map(|s| s.key.model.as_str()).collect();
    let versions: Vec<&str> = sets.iter().map(|s| s.key.model_version.as_str()).collect();
    let sites: Vec<&str> = sets.iter().map(|s| s.key.stream.site.as_str()).collect();
    let structures: Vec<&str> = sets
        .iter()
        .map(|s| s.key.stream.structure.as_str())
        .collect();
    let metrics: Vec<&str> = sets.iter().map(|s| s.key.stream.metric.as_str()).collect();
    let baselines: Vec<i64> = sets.iter().map(|s| s.baseline_id).collect();
    let texts: Vec<&str> = sets.iter().map(|s| s.json.as_str()).collect();
    // New sets come back from the insert, known ones from the table (the
    // statement's snapshot does not see its own inserts).
    let found = sqlx::query!(
        r#"WITH i AS (
               SELECT m, v, s, st, b, p::jsonb AS p, me, n
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[])
                   WITH ORDINALITY AS i(m, v, s, st, b, p, me, n)),
           ins AS (
               INSERT INTO detector_parameters (model, model_version, site, structure, baseline_id, parameters, metric)
               SELECT m, v, s, st, b, p, me FROM i
               ON CONFLICT (model, model_version, site, structure, metric, baseline_id, md5(parameters::text)) DO NOTHING
               RETURNING id, model, model_version, site, structure, metric, baseline_id, parameters)
           SELECT i.n AS "n!", coalesce(ins.id, old.id) AS "id!"
           FROM i
           LEFT JOIN ins ON (ins.model, ins.model_version, ins.site, ins.structure, ins.metric, ins.baseline_id, ins.parameters)
                          = (i.m, i.v, i.s, i.st, i.me, i.b, i.p)
           LEFT JOIN detector_parameters old
                  ON (old.model, old.model_version, old.site, old.structure, old.metric, old.baseline_id,
                      md5(old.parameters::text))
                   = (i.m, i.v, i.s, i.st, i.me, i.b, md5(i.p::text))"#,
        &models as &[&str],
        &versions as &[&str],
        &sites as &[&str],
        &structures as &[&str],
        &baselines,
        &texts as &[&str],
        &metrics as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = vec![0; sets.len()];
    for r in found {
        ids[r.n as usize - 1] = r.id;
    }
    let set_ids: Vec<i32> = of_update.iter().map(|&n| ids[n]).collect();
    let batch = HistoryBatch::new(updates, &set_ids);
    let vals: Vec<f32> = batch.vals.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
    let scored_at = batch
        .result_ids
        .iter()
        .map(|id| {
            scored
                .get(id)
                .copied()
                .ok_or_else(|| StoreError::Corrupt(format!("no scored_at for fed result {id}")))
        })
        .collect::<Result<Vec<DateTime<Utc>>>>()?;
    sqlx::query!(
        "INSERT INTO detector_history (result_id, scored_at, pairs, parameters, t, flags, vals)
         SELECT r.id, r.scored_at, r.pairs, ($5::int4[])[r.lo:r.hi], ($6::int4[])[r.lo:r.hi], ($7::int2[])[r.lo:r.hi],
                ($8::float4[])[(r.lo - 1) * $9 + 1:r.hi * $9]
         FROM unnest($1::int8[], $2::int4[], $3::int4[], $4::int4[], $10::timestamptz[])
             AS r(id, pairs, lo, hi, scored_at)",
        &batch.result_ids,
        &batch.pairs,
        &batch.lo,
        &batch.hi,
        &batch.parameters,
        &batch.t,
        &batch.flags,
        &vals,
        SLOTS as i32,
        &scored_at
    )
    .execute(&mut **tx)
    .await?;
    save_states(tx, updates).await
}

async fn save_states(tx: &mut Transaction<'_, Postgres>, updates: &[StreamUpdate]) -> Result<()> {
    let states = latest_states(updates);
    let column =
        |f: fn(&StreamKey) -> &str| states.iter().map(|(k, _, _)| f(k)).collect::<Vec<_>>();
    let detectors: Vec<&str> = states.iter().map(|(_, _, u)| u.detector.as_str()).collect();
    sqlx::query!(
        "INSERT INTO detector_state (site, model, model_version, structure, detector, baseline_id, t, statistic, limit_value, alarm, metric)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int4[],
                              $8::float8[], $9::float8[], $10::bool[], $11::text[])
         ON CONFLICT (site, model, model_version, structure, metric, detector) DO UPDATE
         SET baseline_id = EXCLUDED.baseline_id, t = EXCLUDED.t, statistic = EXCLUDED.statistic,
             limit_value = EXCLUDED.limit_value, alarm = EXCLUDED.alarm, updated_at = now()",
        &column(|k| k.stream.site.as_str()) as &[&str],
        &column(|k| k.model.as_str()) as &[&str],
        &column(|k| k.model_version.as_str()) as &[&str],
        &column(|k| k.stream.structure.as_str()) as &[&str],
        &detectors as &[&str],
        &states.iter().map(|(_, b, _)| *b).collect::<Vec<_>>(),
        &states.iter().map(|(_, _, u)| u.t as i32).collect::<Vec<_>>(),
        &states.iter().map(|(_, _, u)| finite(u.statistic)).collect::<Vec<_>>(),
        &states.iter().map(|(_, _, u)| u.limit).collect::<Vec<_>>(),
        &states.iter().map(|(_, _, u)| u.alarm).collect::<Vec<_>>(),
        &column(|k| k.stream.metric.as_str()) as &[&str]
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The stored history of one stream (site or `all`, structure or `all`,
    /// metric) under the latest baseline it ran on; None if it never ran.
    /// [`StoreError::HistoryTooLong`] beyond `max_cases` cases, read no further.
    pub async fn stream_history(
        &self,
        model: &str,
        version: &str,
        stream: &StreamId,
        max_cases: usize,
    ) -> Result<Option<StreamHistory>> {
        let pool =
            postgres_or!(self, lite => lite.stream_history(model, version, stream, max_cases));
        let (site, structure, metric) = (&stream.site, &stream.structure, stream.metric);
        let Some(baseline_id) = sqlx::query_scalar!(
            "SELECT max(baseline_id) FROM detector_parameters
             WHERE model = $1 AND model_version = $2 AND site = $3 AND structure = $4 AND metric = $5",
            model,
            version,
            site,
            structure,
            metric.as_str()
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?
        else {
            return Ok(None);
        };
        let sets = sqlx::query!(
            "SELECT id, parameters FROM detector_parameters
             WHERE model = $1 AND model_version = $2 AND site = $3 AND structure = $4 AND baseline_id = $5
               AND metric = $6",
            model,
            version,
            site,
            structure,
            baseline_id,
            metric.as_str()
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let sets = parse_sets(sets.into_iter().map(|r| (r.id, r.parameters)).collect())?;
        let ids: Vec<i32> = sets.keys().copied().collect();
        let sample = sqlx::query_scalar!(
            "SELECT dice FROM baseline_samples WHERE baseline_id = $1 AND structure = $2 AND metric = $3",
            baseline_id,
            structure,
            metric.as_str()
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?;
        let baseline = sample_of(metric, sample)?;
        let rows = sqlx::query!(
            r#"SELECT h.result_id, r.observed_at, h.pairs, h.parameters, h.t, h.flags, h.vals,
                      CASE WHEN $4 = 'all' THEN r.mean_dice WHEN $7 = 'ece' THEN s.ece ELSE s.dice END AS value,
                      l.metrics AS "lesions?"
               FROM detector_history h
               JOIN results r ON r.id = h.result_id AND r.scored_at = h.scored_at
               LEFT JOIN structure_results s
                      ON s.result_id = h.result_id AND s.scored_at = h.scored_at AND s.structure = $4
               LEFT JOIN lesion_results l
                      ON $7 = 'lesion_sensitivity' AND l.result_id = h.result_id AND l.scored_at = h.scored_at
                         AND l.structure = $4
               WHERE r.model = $1 AND r.model_version = $2 AND ($3 = 'all' OR r.site = $3)
                 AND h.parameters && $5::int4[]
               LIMIT $6"#,
            model,
            version,
            site,
            structure,
            &ids,
            max_cases as i64 + 1,
            metric.as_str()
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let rows = rows
            .into_iter()
            .map(|r| HistoryRow {
                result_id: r.result_id,
                observed_at: r.observed_at,
                dice: fed_score(metric, r.value, r.lesions.as_ref()),
                pairs: r.pairs,
                parameters: r.parameters,
                t: r.t,
                flags: r.flags,
                vals: r
                    .vals
                    .into_iter()
                    .map(|v| v.is_finite().then_some(v))
                    .collect(),
            })
            .collect();
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
