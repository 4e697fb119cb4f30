//! Bearer-key authentication: every route but health needs a key.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;

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
        let token = bearer_or_basic(header).ok_or_else(|| {
            Problem::unauthorized(
                "the Authorization header must be Bearer <key>, or Basic with the key as password",
            )
        })?;
        match state.store.authenticate(token.trim()).await? {
            Some(principal) => Ok(Auth(principal)),
            None => Err(Problem::unauthorized("unknown or revoked key")),
        }
    }
}

/// The key from `Bearer <key>` or from HTTP Basic, whose password is the key
/// (many PACS DICOMweb clients only do Basic); the user name is ignored.
fn bearer_or_basic(header: &str) -> Option<String> {
    let (scheme, value) = header.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        let credentials = String::from_utf8(decoded).ok()?;
        return credentials
            .split_once(':')
            .map(|(_, password)| password.to_owned());
    }
    None
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

    /// Fails unless the key may read `site`, or with no site every site (a
    /// read or admin key): `what` (such as "a comparison") is what was asked
    /// of every site.
    pub fn read_site_or_all(&self, site: Option<&str>, what: &str) -> Result<(), Problem> {
        match site {
            Some(site) => {
                super::valid_key("site", site)?;
                self.read(site)
            }
            None if self.0.role == Role::Ingest => Err(Problem::forbidden(format!(
                "{what} of every site needs a read or admin key; an ingest key names its site"
            ))),
            None => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_bearer_and_basic() {
        assert_eq!(bearer_or_basic("Bearer sw_a_b").as_deref(), Some("sw_a_b"));
        assert_eq!(
            bearer_or_basic("bearer  sw_a_b ").as_deref(),
            Some("sw_a_b")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("site1:sw_a_b");
        assert_eq!(
            bearer_or_basic(&format!("Basic {basic}")).as_deref(),
            Some("sw_a_b")
        );
        assert_eq!(bearer_or_basic("Basic !!!"), None);
        assert_eq!(bearer_or_basic("Digest x"), None);
        assert_eq!(bearer_or_basic("sw_a_b"), None);
    }
}
