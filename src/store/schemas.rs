//! Structure schemas of model versions.

use super::{Result, Store, StoreError};
use crate::schema::Schema;

impl Store {
    /// Sets the schema of a model version; true when it is new.
    pub async fn put_schema(&self, model: &str, version: &str, schema: &Schema) -> Result<bool> {
        let pool = postgres_or!(self, lite => lite.put_schema(model, version, schema));
        let value = serde_json::to_value(schema).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let inserted = sqlx::query_scalar!(
            r#"INSERT INTO model_schemas (model, model_version, schema) VALUES ($1, $2, $3)
               ON CONFLICT (model, model_version) DO UPDATE SET schema = EXCLUDED.schema, updated_at = now()
               RETURNING (xmax = 0) AS "inserted!""#,
            model,
            version,
            value
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(inserted)
    }

    /// The schema of a model version, if set.
    pub async fn schema(&self, model: &str, version: &str) -> Result<Option<Schema>> {
        let value = match &self.db {
            super::Db::Postgres(pg) => sqlx::query_scalar!(
                "SELECT schema FROM model_schemas WHERE model = $1 AND model_version = $2",
                model,
                version
            )
            .fetch_optional(&pg.pool)
            .await
            .map_err(StoreError::classify)?,
            super::Db::Sqlite(lite) => lite.schema(model, version).await?,
        };
        value
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|e| StoreError::Corrupt(format!("schema of {model} {version}: {e}")))
            })
            .transpose()
    }
}
