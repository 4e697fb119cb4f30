//! Several readers in the embedded store, as `store/readers.rs` for PostgreSQL.

use sqlx::{Sqlite, Transaction};

use super::{Lite, classify, json, now, parse};
use crate::compare::readers::CaseAgreement;
use crate::store::Result;
use crate::store::jobs::JobInputs;
use crate::store::readers::{
    CaseReaders, ReaderReference, StoredAgreement, StructureAgreement, ai_vs_reader, by_version,
    case_agreement,
};
use crate::views::ReaderDice;

/// See `readers::store_agreement`.
pub(super) async fn store_agreement(
    tx: &mut Transaction<'static, Sqlite>,
    job_id: i64,
    inputs: &JobInputs,
    rows: &[StructureAgreement],
) -> Result<()> {
    let latest: bool = sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM segmentations s JOIN segmentations p ON p.id = $1
                            WHERE s.case_id = p.case_id AND s.role = 'prediction' AND s.model = p.model
                              AND s.model_version = p.model_version AND s.revision > p.revision)",
    )
    .bind(inputs.prediction_id)
    .fetch_one(&mut **tx)
    .await
    .map_err(classify)?;
    if !latest {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM reader_agreement WHERE case_id = $1 AND model = $2 AND model_version = $3",
    )
    .bind(inputs.case_id)
    .bind(&inputs.model)
    .bind(&inputs.model_version)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    let computed = now();
    for row in rows {
        let a = &row.agreement;
        sqlx::query(
            "INSERT INTO reader_agreement (case_id, model, model_version, structure, site, prediction_id, job_id,
                                           ai_vs_reader, inter_reader_dice, ai_vs_consensus, ambiguous, computed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(inputs.case_id)
        .bind(&inputs.model)
        .bind(&inputs.model_version)
        .bind(&row.structure)
        .bind(&inputs.site)
        .bind(inputs.prediction_id)
        .bind(job_id)
        .bind(json(&ai_vs_reader(row))?)
        .bind(a.inter_reader_dice)
        .bind(a.ai_vs_consensus)
        .bind(a.ambiguous)
        .bind(&computed)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

impl Lite {
    /// See [`crate::store::Store::reader_references`].
    pub async fn reader_references(&self, case_id: i64, held: i64) -> Result<Vec<ReaderReference>> {
        let rows: Vec<(i64, String, i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT s.id, s.reader, s.voxels,
                    CASE WHEN s.id <> $2 AND (SELECT count(DISTINCT o.reader) FROM segmentations o
                                              WHERE o.case_id = s.case_id AND o.role = 'reference') > 1
                         THEN c.content END
             FROM segmentations s LEFT JOIN segmentation_contents c ON c.segmentation_id = s.id
             WHERE s.case_id = $1 AND s.role = 'reference'
               AND s.revision = (SELECT max(l.revision) FROM segmentations l
                                 WHERE l.case_id = s.case_id AND l.role = 'reference' AND l.reader = s.reader)
             ORDER BY (SELECT min(f.revision) FROM segmentations f
                       WHERE f.case_id = s.case_id AND f.role = 'reference' AND f.reader = s.reader)",
        )
        .bind(case_id)
        .bind(held)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(id, reader, voxels, content)| ReaderReference {
                id,
                reader,
                content,
                voxels,
            })
            .collect())
    }

    /// See [`crate::store::Store::reader_agreements`].
    pub async fn reader_agreements(
        &self,
        model: &str,
        model_version: &str,
        site: Option<&str>,
    ) -> Result<Vec<(String, CaseAgreement)>> {
        let rows: Vec<(String, String, f64, f64, bool)> = sqlx::query_as(
            "SELECT structure, ai_vs_reader, inter_reader_dice, ai_vs_consensus, ambiguous
             FROM reader_agreement WHERE model = $1 AND model_version = $2 AND ($3 IS NULL OR site = $3)
             ORDER BY structure, case_id",
        )
        .bind(model)
        .bind(model_version)
        .bind(site)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(structure, ai, inter, consensus, ambiguous)| {
                let ai: Vec<ReaderDice> = parse("reader agreement", &ai)?;
                Ok((structure, case_agreement(inter, &ai, consensus, ambiguous)))
            })
            .collect()
    }

    /// See `Store::case_readers`.
    pub(super) async fn case_readers(&self, case_id: i64) -> Result<CaseReaders> {
        type Row = (String, String, String, String, f64, f64, bool);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT model, model_version, structure, ai_vs_reader, inter_reader_dice, ai_vs_consensus, ambiguous
             FROM reader_agreement WHERE case_id = $1 ORDER BY model, model_version, structure",
        )
        .bind(case_id)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(
                |(model, model_version, structure, ai, inter, consensus, ambiguous)| {
                    Ok(StoredAgreement {
                        model,
                        model_version,
                        structure,
                        ai_vs_reader: parse("reader agreement", &ai)?,
                        inter_reader_dice: inter,
                        ai_vs_consensus: consensus,
                        ambiguous,
                    })
                },
            )
            .collect::<Result<Vec<_>>>()
            .map(by_version)
    }
}
