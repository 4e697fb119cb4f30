//! Per-case Dice of one model version, for comparing and gating versions.

use chrono::{DateTime, Utc};

use super::{Result, Store, StoreError};

/// One structure's Dice in the latest result of a case with a given version.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct VersionDice {
    pub site: String,
    pub case_key: String,
    pub structure: String,
    pub dice: f64,
}

impl Store {
    /// Each structure's Dice (structures empty on both sides left out) in the
    /// latest result with `model` `version` of the `max_cases` cases most
    /// recently scored with it, at `site` or every site, of the results scored
    /// since `since` if given. A case scored by both versions appears under
    /// each, which pairs it.
    pub async fn version_dice(
        &self,
        model: &str,
        version: &str,
        site: Option<&str>,
        since: Option<DateTime<Utc>>,
        max_cases: i64,
    ) -> Result<Vec<VersionDice>> {
        let pool =
            postgres_or!(self, lite => lite.version_dice(model, version, site, since, max_cases));
        sqlx::query_as!(
            VersionDice,
            r#"WITH chosen AS (
                   SELECT id, case_id, scored_at FROM (
                       SELECT DISTINCT ON (case_id) id, case_id, scored_at FROM results
                       WHERE model = $1 AND model_version = $2 AND ($3::text IS NULL OR site = $3)
                         AND ($5::timestamptz IS NULL OR scored_at >= $5)
                       ORDER BY case_id, id DESC) newest
                   ORDER BY id DESC LIMIT $4)
               SELECT c.site, c.case_key, s.structure, s.dice AS "dice!"
               FROM chosen f
               JOIN cases c ON c.id = f.case_id
               JOIN structure_results s ON s.result_id = f.id AND s.scored_at = f.scored_at
               WHERE (s.pred_voxels > 0 OR s.ref_voxels > 0) AND s.dice IS NOT NULL"#,
            model,
            version,
            site,
            max_cases,
            since
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)
    }
}
