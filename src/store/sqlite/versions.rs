//! Per-case Dice of one model version, as in PostgreSQL (`store::versions`).

use chrono::{DateTime, Utc};

use super::{Lite, at, classify};
use crate::store::Result;
use crate::store::versions::VersionDice;

impl Lite {
    /// See [`crate::store::Store::version_dice`].
    pub async fn version_dice(
        &self,
        model: &str,
        version: &str,
        site: Option<&str>,
        since: Option<DateTime<Utc>>,
        max_cases: i64,
    ) -> Result<Vec<VersionDice>> {
        sqlx::query_as(
            "WITH chosen AS (
                 SELECT max(id) AS id FROM results
                 WHERE model = $1 AND model_version = $2 AND ($3 IS NULL OR site = $3)
                   AND ($5 IS NULL OR scored_at >= $5)
                 GROUP BY case_id ORDER BY max(id) DESC LIMIT $4)
             SELECT c.site, c.case_key, s.structure, s.dice
             FROM chosen f
             JOIN results r ON r.id = f.id
             JOIN cases c ON c.id = r.case_id
             JOIN structure_results s ON s.result_id = r.id
             WHERE (s.pred_voxels > 0 OR s.ref_voxels > 0) AND s.dice IS NOT NULL",
        )
        .bind(model)
        .bind(version)
        .bind(site)
        .bind(max_cases)
        .bind(since.map(at))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)
    }
}
