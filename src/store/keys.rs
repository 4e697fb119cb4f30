//! Bearer keys, stored as SHA-256 of their secret and compared in constant time.
//!
//! A token reads `sw_<id>_<secret>`: the id finds the row, the secret is checked
//! against its hash. Secrets are 256 random bits, so a fast hash is enough.

use chrono::{DateTime, Utc};
use rand::RngExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Result, Store, StoreError};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Uploads to and reads its own site.
    Ingest,
    /// Reads every site.
    Read,
    /// Manages schemas and keys; reads and writes every site.
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "ingest" => Some(Role::Ingest),
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The caller behind a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
    /// The site an ingest key is bound to.
    pub site: Option<String>,
}

impl Principal {
    /// May read data of `site`.
    pub fn can_read(&self, site: &str) -> bool {
        match self.role {
            Role::Admin | Role::Read => true,
            Role::Ingest => self.site.as_deref() == Some(site),
        }
    }

    /// May upload to `site`.
    pub fn can_write(&self, site: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Read => false,
            Role::Ingest => self.site.as_deref() == Some(site),
        }
    }
}

/// A key as `keys list` shows it (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub role: String,
    pub site: Option<String>,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// SHA-256 of a key secret.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

impl Store {
    /// Creates a key and returns its token, which is shown once and not stored.
    pub async fn create_key(
        &self,
        role: Role,
        site: Option<&str>,
        label: Option<&str>,
    ) -> Result<String> {
        let mut rng = rand::rng();
        let id = hex::encode(rng.random::<[u8; 6]>());
        let secret = hex::encode(rng.random::<[u8; 32]>());
        sqlx::query!(
            "INSERT INTO api_keys (id, secret_sha256, role, site, label) VALUES ($1, $2, $3, $4, $5)",
            id,
            hash_secret(&secret),
            role.as_str(),
            site,
            label
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(format!("sw_{id}_{secret}"))
    }

    /// Every key, newest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        sqlx::query_as!(
            KeyInfo,
            "SELECT id, role, site, label, created_at, revoked_at FROM api_keys ORDER BY created_at DESC"
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::classify)
    }

    /// Revokes a key; false if there is no such active key.
    pub async fn revoke_key(&self, id: &str) -> Result<bool> {
        let done = sqlx::query!(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            id
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(done.rows_affected() == 1)
    }

    /// The principal of a bearer token, or None for an unknown, malformed or
    /// revoked key.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        let Some((id, secret)) = token.strip_prefix("sw_").and_then(|t| t.split_once('_')) else {
            return Ok(None);
        };
        let row = sqlx::query!(
            "SELECT secret_sha256, role, site FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::classify)?;
        let Some(row) = row else { return Ok(None) };
        let matches: bool = hash_secret(secret).ct_eq(&row.secret_sha256).into();
        if !matches {
            return Ok(None);
        }
        let role = Role::parse(&row.role)
            .ok_or_else(|| StoreError::Corrupt(format!("key {id} has role {}", row.role)))?;
        Ok(Some(Principal {
            key_id: id.to_owned(),
            role,
            site: row.site,
        }))
    }
}
