//! Bearer keys, stored as SHA-256 of their secret and compared in constant time.
//!
//! A token reads `sw_<id>_<secret>`: the id finds the row, the secret is checked
//! against its hash. Secrets are 256 random bits, so a fast hash is enough.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::RngExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Result, Store, StoreError};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// Every role's name, as stored, serialised and given on the command line.
    pub const NAMES: [&'static str; 3] = ["ingest", "read", "admin"];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
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
        let pool = postgres_or!(self, lite => async {
            lite.create_key(&id, &hash_secret(&secret), role.as_str(), site, label).await?;
            Ok(format!("sw_{id}_{secret}"))
        });
        sqlx::query!(
            "INSERT INTO api_keys (id, secret_sha256, role, site, label) VALUES ($1, $2, $3, $4, $5)",
            id,
            hash_secret(&secret),
            role.as_str(),
            site,
            label
        )
        .execute(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(format!("sw_{id}_{secret}"))
    }

    /// Every key, newest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let pool = postgres_or!(self, lite => lite.list_keys());
        sqlx::query_as!(
            KeyInfo,
            "SELECT id, role, site, label, created_at, revoked_at FROM api_keys ORDER BY created_at DESC"
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)
    }

    /// Revokes a key; false if there is no such active key.
    pub async fn revoke_key(&self, id: &str) -> Result<bool> {
        let revoked =
            match &self.db {
                super::Db::Postgres(pg) => sqlx::query!(
                    "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                    id
                )
                .execute(&pg.pool)
                .await
                .map_err(StoreError::classify)?
                .rows_affected()
                    == 1,
                super::Db::Sqlite(lite) => lite.revoke_key(id).await?,
            };
        // This process stops accepting it now; others within KEY_CACHE_TTL.
        self.keys.invalidate();
        Ok(revoked)
    }

    /// The principal of a bearer token, or None for an unknown, malformed or
    /// revoked key. Keys are read from memory (see [`KEY_CACHE_TTL`]): a
    /// missing header, a malformed token or a wrong secret never touches the
    /// database.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        let Some((id, secret)) = token.strip_prefix("sw_").and_then(|t| t.split_once('_')) else {
            return Ok(None);
        };
        // Ill-formed ids never reach the database.
        if id.is_empty()
            || id.len() > MAX_KEY_PART
            || secret.len() > MAX_KEY_PART
            || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Ok(None);
        }
        let mut keys = self.active_keys(None).await?;
        if !keys.contains_key(id) {
            // A key created since the last read (by another process): read again,
            // but no sooner than UNKNOWN_KEY_RELOAD after the last read, and one
            // read at a time; callers waiting meanwhile share it. A flood of
            // unknown ids costs the database at most one query a second.
            if let Some(wait) = self.keys.until_older_than(UNKNOWN_KEY_RELOAD) {
                tokio::time::sleep(wait).await;
            }
            keys = self.active_keys(Some(&keys)).await?;
        }
        let Some(key) = keys.get(id) else {
            return Ok(None);
        };
        let matches: bool = hash_secret(secret).ct_eq(&key.secret_sha256).into();
        Ok(matches.then(|| Principal {
            key_id: id.to_owned(),
            role: key.role,
            site: key.site.clone(),
        }))
    }

    /// The active keys, from memory while younger than [`KEY_CACHE_TTL`] and
    /// not `stale` (a read the caller found lacking); a reload that fails keeps
    /// serving the keys last read (the database may be down), so
    /// authentication and `/metrics` keep working.
    async fn active_keys(&self, stale: Option<&ActiveKeys>) -> Result<ActiveKeys> {
        let usable =
            |keys: ActiveKeys| (!stale.is_some_and(|s| Arc::ptr_eq(s, &keys))).then_some(keys);
        if let Some(keys) = self.keys.fresh().and_then(usable) {
            return Ok(keys);
        }
        // One reload at a time; callers that waited find it done.
        let _reloading = self.keys.reload.lock().await;
        if let Some(keys) = self.keys.fresh().and_then(usable) {
            return Ok(keys);
        }
        type KeyRow = (String, Vec<u8>, String, Option<String>);
        let loaded: Result<Vec<KeyRow>> = match &self.db {
            super::Db::Postgres(pg) => sqlx::query!(
                "SELECT id, secret_sha256, role, site FROM api_keys WHERE revoked_at IS NULL"
            )
            .fetch_all(&pg.pool)
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|r| (r.id, r.secret_sha256, r.role, r.site))
                    .collect()
            })
            .map_err(StoreError::classify),
            super::Db::Sqlite(lite) => lite.active_keys().await,
        };
        let rows = match loaded {
            Ok(rows) => rows,
            Err(e) => {
                // Keys keep working on what was last read while the database
                // is away (down, restarting, or its database gone).
                return match self.keys.last() {
                    Some(keys) => {
                        tracing::warn!(error = %e, "cannot reload keys; using those last read");
                        Ok(keys)
                    }
                    None => Err(e),
                };
            }
        };
        let mut keys = HashMap::with_capacity(rows.len());
        for (id, secret_sha256, role, site) in rows {
            let role = Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("key {id} has role {role}")))?;
            keys.insert(
                id,
                CachedKey {
                    secret_sha256,
                    role,
                    site,
                },
            );
        }
        Ok(self.keys.store(keys))
    }
}

/// How long a read of the active keys is used: a revoked key stops working, and
/// a new one starts, within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// An unknown key id reads the keys again once they are this old: a key
/// created by another process is accepted after at most this wait.
pub const UNKNOWN_KEY_RELOAD: Duration = Duration::from_secs(1);
/// Longest id or secret part of a key accepted.
const MAX_KEY_PART: usize = 128;

/// What authentication needs of an active key.
#[derive(Debug)]
struct CachedKey {
    secret_sha256: Vec<u8>,
    role: Role,
    site: Option<String>,
}

/// Active keys by id.
type ActiveKeys = Arc<HashMap<String, CachedKey>>;

/// The active keys last read, and when.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyCache {
    keys: Arc<std::sync::RwLock<Option<(Instant, ActiveKeys)>>>,
    reload: Arc<tokio::sync::Mutex<()>>,
}

impl KeyCache {
    fn fresh(&self) -> Option<ActiveKeys> {
        let guard = self.keys.read().ok()?;
        let (at, keys) = guard.as_ref()?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| keys.clone())
    }

    /// How long until the keys last read are `age` old (None: they are, or
    /// none were read).
    fn until_older_than(&self, age: Duration) -> Option<Duration> {
        let guard = self.keys.read().ok()?;
        let (at, _) = guard.as_ref()?;
        age.checked_sub(at.elapsed()).filter(|wait| !wait.is_zero())
    }

    fn last(&self) -> Option<ActiveKeys> {
        self.keys.read().ok()?.as_ref().map(|(_, k)| k.clone())
    }

    fn store(&self, keys: HashMap<String, CachedKey>) -> ActiveKeys {
        let keys = Arc::new(keys);
        if let Ok(mut guard) = self.keys.write() {
            *guard = Some((Instant::now(), keys.clone()));
        }
        keys
    }

    /// Forgets the keys read, so the next authentication reads them again.
    fn invalidate(&self) {
        if let Ok(mut guard) = self.keys.write() {
            *guard = None;
        }
    }
}
