//! Site, case, model and version identifiers: the one rule every entry point
//! (HTTP, CLI) checks them by.

/// An identifier that breaks the rule of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-', not only dots")]
pub struct InvalidIdentifier {
    /// Which identifier: `site`, `case`, `model`, …
    pub what: String,
}

/// Checks an identifier: 1 to 128 of `A-Z a-z 0-9 . _ -`, not only dots (`.`
/// and `..` would read as path segments in URLs and file names).
pub fn check(what: &str, value: &str) -> Result<(), InvalidIdentifier> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.bytes().all(|b| b == b'.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidIdentifier { what: what.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn identifiers_are_short_plain_and_not_only_dots() {
        for good in ["site1", "CT-liver_v2.1", "a", &"x".repeat(128)] {
            assert!(check("site", good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "...", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check("site", bad).is_err(), "{bad}");
        }
    }
}
