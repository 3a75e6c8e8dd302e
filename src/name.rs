//! Queue-name rules: checked where a name enters the engine, and where the
//! configuration names a queue (so a bad section is refused at load).
//!
//! Names become journal paths and stats keys, and appear in memcache replies,
//! so they are kept to something every layer can carry verbatim.

use thiserror::Error;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest accepted queue name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Why a queue name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("queue name is empty")]
    Empty,
    #[error("queue name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error(
        "queue name contains {0:?}, which is not allowed ('/', '.', '~', whitespace, control and format characters are not)"
    )]
    BadChar(char),
}

/// Whether `c` may not appear in a queue name: `/` and `.` would escape or
/// alias journal paths; `~` marks temporary files, as in Kestrel; whitespace
/// and [`misleading`] characters would make two names look alike, or a name
/// look like something else, in logs, stats and dashboards.
fn forbidden(c: char) -> bool {
    matches!(c, '/' | '.' | '~') || c.is_whitespace() || misleading(c)
}

/// Whether `c`, written to a screen or a log as it is, could make text look
/// like something it is not: control characters (Unicode Cc, terminal
/// escapes among them), format characters (Cf: bidirectional overrides such
/// as U+202E, zero-width characters, U+FEFF) and line or paragraph
/// separators (Zl, Zp).
pub fn misleading(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Checks `name` against the rules: 1 to 255 bytes, none of the
/// [`forbidden`] characters.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    // Nearly every name is ASCII, and every request names a queue: its
    // forbidden characters are checked bytewise, without the Unicode tables.
    let bad = match name.is_ascii() {
        true => name.bytes().find(|&b| forbidden_ascii(b)).map(char::from),
        false => name.chars().find(|&c| forbidden(c)),
    };
    match bad {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

/// [`forbidden`] for an ASCII character: the three path characters, the
/// space and the controls (the other whitespace is control too).
fn forbidden_ascii(b: u8) -> bool {
    matches!(b, b'/' | b'.' | b'~' | b' ') || b.is_ascii_control()
}

/// The parent of a fanout child: `Some("orders")` for `"orders+audit"`.
pub fn fanout_parent(name: &str) -> Option<&str> {
    name.split_once('+')
        .map(|(parent, _)| parent)
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_check_agrees_with_the_unicode_one() {
        for b in 0..=127u8 {
            assert_eq!(forbidden_ascii(b), forbidden(char::from(b)), "{b:#04x}");
        }
    }

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "a",
            "jobs",
            "Jobs-2_x",
            "orders+audit",
            "файл",
            &"x".repeat(255),
        ] {
            assert_eq!(validate(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate(""), Err(NameError::Empty));
        assert_eq!(validate(&"x".repeat(256)), Err(NameError::TooLong));
        for (name, c) in [
            ("a/b", '/'),
            ("a.b", '.'),
            ("a~b", '~'),
            ("a b", ' '),
            ("a\tb", '\t'),
            ("a\nb", '\n'),
            ("a\u{7f}", '\u{7f}'),
            ("a\u{0}", '\u{0}'),
            ("evil\u{202e}gpj", '\u{202e}'),
            ("\u{feff}bom", '\u{feff}'),
            ("zero\u{200b}width", '\u{200b}'),
            ("line\u{2028}sep", '\u{2028}'),
            ("para\u{2029}sep", '\u{2029}'),
            ("soft\u{ad}hyphen", '\u{ad}'),
            ("tag\u{e0041}", '\u{e0041}'),
            ("c1\u{85}", '\u{85}'),
        ] {
            assert_eq!(validate(name), Err(NameError::BadChar(c)), "{name:?}");
        }
    }

    #[test]
    fn finds_fanout_parent() {
        assert_eq!(fanout_parent("orders+audit"), Some("orders"));
        assert_eq!(fanout_parent("orders"), None);
        assert_eq!(fanout_parent("+x"), None);
    }
}
