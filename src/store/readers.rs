//! Several readers: each reader's latest reference of a case, and the stored
//! agreement of the readers with each other and with the AI
//! (`reader_agreement`, docs/compare.md "Several readers").

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use super::jobs::JobInputs;
use super::{Result, Store, StoreError};
use crate::compare::readers::CaseAgreement;
use crate::views::{ReaderAgreement, ReaderDice};

/// A reader's latest reference of a case.
#[derive(Debug, Clone)]
pub struct ReaderReference {
    /// The segmentation's id.
    pub id: i64,
    pub reader: String,
    /// gzip-compressed upload, read only where the job needs it (see
    /// [`Store::reader_references`]); None once purged.
    pub content: Option<Vec<u8>>,
    pub voxels: i64,
}

/// One structure's agreement, as the worker computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct StructureAgreement {
    pub structure: String,
    /// The readers, in the order of `agreement.ai_vs_reader`.
    pub readers: Vec<String>,
    pub agreement: CaseAgreement,
}

/// The AI's Dice against each reader, as stored in `ai_vs_reader`.
pub(super) fn ai_vs_reader(row: &StructureAgreement) -> Vec<ReaderDice> {
    row.readers
        .iter()
        .zip(&row.agreement.ai_vs_reader)
        .map(|(reader, &dice)| ReaderDice {
            reader: reader.clone(),
            dice,
        })
        .collect()
}

fn ai_from_json(value: serde_json::Value) -> Result<Vec<ReaderDice>> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt(format!("reader agreement: {e}")))
}

/// A stored row back into the agreement the report summarises.
pub(super) fn case_agreement(
    inter_reader_dice: f64,
    ai_vs_reader: &[ReaderDice],
    ai_vs_consensus: f64,
    ambiguous: bool,
) -> CaseAgreement {
    CaseAgreement {
        readers: ai_vs_reader.len(),
        inter_reader_dice,
        ai_vs_reader: ai_vs_reader.iter().map(|r| r.dice).collect(),
        ai_vs_consensus,
        ambiguous,
    }
}

/// A stored `reader_agreement` row of a case.
pub(super) struct StoredAgreement {
    pub model: String,
    pub model_version: String,
    pub structure: String,
    pub ai_vs_reader: Vec<ReaderDice>,
    pub inter_reader_dice: f64,
    pub ai_vs_consensus: f64,
    pub ambiguous: bool,
}

/// The stored agreement rows of a case, by model version.
pub(super) type CaseReaders = HashMap<(String, String), Vec<ReaderAgreement>>;

/// A case's rows as the case view shows them, by model version.
pub(super) fn by_version(rows: Vec<StoredAgreement>) -> CaseReaders {
    let mut grouped = CaseReaders::new();
    for r in rows {
        let agreement = case_agreement(
            r.inter_reader_dice,
            &r.ai_vs_reader,
            r.ai_vs_consensus,
            r.ambiguous,
        );
        grouped
            .entry((r.model, r.model_version))
            .or_default()
            .push(ReaderAgreement {
                structure: r.structure,
                inter_reader_dice: agreement.inter_reader_dice,
                ai_vs_consensus: agreement.ai_vs_consensus,
                ambiguous: agreement.ambiguous,
                within_variability: agreement.within_variability(),
                ai_vs_reader: r.ai_vs_reader,
            });
    }
    grouped
}

/// Replaces the agreement of the job's case and model version with `rows`,
/// when the job's prediction is still its version's latest (an older one's
/// late job leaves the newer agreement alone).
pub(super) async fn store_agreement(
    tx: &mut Transaction<'_, Postgres>,
    job_id: i64,
    inputs: &JobInputs,
    rows: &[StructureAgreement],
) -> Result<()> {
    let latest = sqlx::query_scalar!(
        r#"SELECT NOT EXISTS (SELECT 1 FROM segmentations s JOIN segmentations p ON p.id = $1
                              WHERE s.case_id = p.case_id AND s.role = 'prediction' AND s.model = p.model
                                AND s.model_version = p.model_version AND s.revision > p.revision) AS "latest!""#,
        inputs.prediction_id
    )
    .fetch_one(&mut **tx)
    .await?;
    if !latest {
        return Ok(());
    }
    sqlx::query!(
        "DELETE FROM reader_agreement WHERE case_id = $1 AND model = $2 AND model_version = $3",
        inputs.case_id,
        inputs.model,
        inputs.model_version
    )
    .execute(&mut **tx)
    .await?;
    for row in rows {
        let a = &row.agreement;
        let ai = serde_json::to_value(ai_vs_reader(row))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query!(
            "INSERT INTO reader_agreement (case_id, model, model_version, structure, site, prediction_id, job_id,
                                           ai_vs_reader, inter_reader_dice, ai_vs_consensus, ambiguous)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            inputs.case_id,
            inputs.model,
            inputs.model_version,
            row.structure,
            inputs.site,
            inputs.prediction_id,
            job_id,
            ai,
            a.inter_reader_dice,
            a.ai_vs_consensus,
            a.ambiguous
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// The latest reference of each reader of a case, the primary reader's
    /// (the reader of the case's first reference) first, then by each
    /// reader's first upload. Contents are read only when the case has two
    /// readers or more, and never for `held` (the job's own reference, which
    /// the caller has already read).
    pub async fn reader_references(&self, case_id: i64, held: i64) -> Result<Vec<ReaderReference>> {
        let pool = postgres_or!(self, lite => lite.reader_references(case_id, held));
        let rows = sqlx::query!(
            r#"SELECT s.id, s.reader AS "reader!", s.voxels,
                      CASE WHEN s.id <> $2 AND (SELECT count(DISTINCT o.reader) FROM segmentations o
                                                WHERE o.case_id = s.case_id AND o.role = 'reference') > 1
                           THEN c.content END AS "content?"
               FROM segmentations s LEFT JOIN segmentation_contents c ON c.segmentation_id = s.id
               WHERE s.case_id = $1 AND s.role = 'reference'
                 AND s.revision = (SELECT max(l.revision) FROM segmentations l
                                   WHERE l.case_id = s.case_id AND l.role = 'reference' AND l.reader = s.reader)
               ORDER BY (SELECT min(f.revision) FROM segmentations f
                         WHERE f.case_id = s.case_id AND f.role = 'reference' AND f.reader = s.reader)"#,
            case_id,
            held
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(rows
            .into_iter()
            .map(|r| ReaderReference {
                id: r.id,
                reader: r.reader,
                content: r.content,
                voxels: r.voxels,
            })
            .collect())
    }

    /// The stored agreement of a model version's cases (of one site if
    /// given), by structure name.
    pub async fn reader_agreements(
        &self,
        model: &str,
        model_version: &str,
        site: Option<&str>,
    ) -> Result<Vec<(String, CaseAgreement)>> {
        let pool = postgres_or!(self, lite => lite.reader_agreements(model, model_version, site));
        let rows = sqlx::query!(
            "SELECT structure, ai_vs_reader, inter_reader_dice, ai_vs_consensus, ambiguous
             FROM reader_agreement WHERE model = $1 AND model_version = $2 AND ($3::text IS NULL OR site = $3)
             ORDER BY structure, case_id",
            model,
            model_version,
            site
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        rows.into_iter()
            .map(|r| {
                let ai = ai_from_json(r.ai_vs_reader)?;
                let agreement =
                    case_agreement(r.inter_reader_dice, &ai, r.ai_vs_consensus, r.ambiguous);
                Ok((r.structure, agreement))
            })
            .collect()
    }

    /// A case's stored agreement, by model version.
    pub(super) async fn case_readers(pool: &sqlx::PgPool, case_id: i64) -> Result<CaseReaders> {
        let rows = sqlx::query!(
            "SELECT model, model_version, structure, ai_vs_reader, inter_reader_dice, ai_vs_consensus, ambiguous
             FROM reader_agreement WHERE case_id = $1 ORDER BY model, model_version, structure",
            case_id
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredAgreement {
                    model: r.model,
                    model_version: r.model_version,
                    structure: r.structure,
                    ai_vs_reader: ai_from_json(r.ai_vs_reader)?,
                    inter_reader_dice: r.inter_reader_dice,
                    ai_vs_consensus: r.ai_vs_consensus,
                    ambiguous: r.ambiguous,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(by_version)
    }
}
