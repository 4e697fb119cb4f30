//! Bearer-key authentication: every route but health needs a key.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::problem::Problem;
use crate::store::{Principal, Role};

/// The caller, from `Authorization: Bearer <token>`.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <key>"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be Bearer <key>")
            })?;
        match state.store.authenticate(token.trim()).await? {
            Some(principal) => Ok(Auth(principal)),
            None => Err(Problem::unauthorized("unknown or revoked key")),
        }
    }
}

impl Auth {
    /// Fails unless the key may read `site`.
    pub fn read(&self, site: &str) -> Result<(), Problem> {
        if self.0.can_read(site) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this key may not read site {site}"
            )))
        }
    }

    /// Fails unless the key may upload to `site`.
    pub fn write(&self, site: &str) -> Result<(), Problem> {
        if self.0.can_write(site) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this key may not upload to site {site}"
            )))
        }
    }

    /// Fails unless the key is an admin key.
    pub fn admin(&self) -> Result<(), Problem> {
        if self.0.role == Role::Admin {
            Ok(())
        } else {
            Err(Problem::forbidden("this needs an admin key"))
        }
    }
}
