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

/// The reader of a reference uploaded without one.
pub const DEFAULT_READER: &str = "default";

/// A reader that does not look like a pseudonym.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "reader must be a pseudonym of 1 to 16 characters of a-z, 0-9, '-' or '_' starting with a letter or digit (such as r1 or reader-a), never a name"
)]
pub struct InvalidReader;

/// Checks a reader pseudonym: 1 to 16 of `a-z 0-9 - _`, starting with a letter
/// or digit. Capitals, spaces, dots and commas (`Dr. Smith`, `Smith, J`) are
/// refused; that a short token is no surname is the client's duty.
pub fn check_reader(value: &str) -> Result<(), InvalidReader> {
    let ok = (1..=16).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if ok { Ok(()) } else { Err(InvalidReader) }
}

#[cfg(test)]
mod tests {
    use super::{check, check_reader};

    #[test]
    fn readers_are_short_lowercase_tokens() {
        for good in ["r1", "reader-a", "default", "rad_2", "0", &"x".repeat(16)] {
            assert!(check_reader(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Dr. Smith",
            "smith, j",
            "John",
            "a b",
            "-r1",
            "é",
            &"x".repeat(17),
        ] {
            assert!(check_reader(bad).is_err(), "{bad}");
        }
    }

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
