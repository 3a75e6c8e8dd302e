//! The value syntax of settings: sizes with units (`16MiB`), durations with
//! units (`100ms`), sync modes, ports and durations that may be `off`, read
//! alike from TOML and from environment variables.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::SyncMode;

/// A size in bytes: a number, or a number with a unit (`KB`, `MiB`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Size(pub(super) u64);

/// A duration with a unit (`ms`, `s`, `m`, `h`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dur(pub(super) Duration);

/// `always`, `never`, or an fsync interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sync(pub(super) SyncMode);

/// A port number, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Port(pub(super) Option<u16>);

/// A duration, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OptDur(pub(super) Option<Duration>);

/// A number or a string, as TOML and environment variables give them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(u64),
    Text(String),
    Bool(bool),
}

fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
    Raw::deserialize(d)
}

/// Parses a size: `1024`, `16MiB`, `512 KB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad size {text:?}: expected a number with an optional unit"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "bad size {text:?}: unknown unit {other:?} (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Parses a duration: `100ms`, `30s`, `5m`, `1h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad duration {text:?}: expected a number and a unit"))?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("duration {text:?} needs a unit (ms, s, m, h, d)")),
        other => {
            return Err(format!(
                "bad duration {text:?}: unknown unit {other:?} (ms, s, m, h, d)"
            ));
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

fn is_off(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "off" | "none" | "disabled" | "never"
    )
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(t) => parse_size(&t).map(Size).map_err(de::Error::custom),
            Raw::Bool(_) => Err(de::Error::custom("expected a size such as 16MiB")),
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Text(t) => parse_duration(&t).map(Dur).map_err(de::Error::custom),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "duration {n} needs a unit, e.g. \"{n}ms\" or \"{n}s\""
            ))),
            Raw::Bool(_) => Err(de::Error::custom("expected a duration such as 100ms")),
        }
    }
}

impl<'de> Deserialize<'de> for OptDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Text(t) if is_off(&t) => Ok(OptDur(None)),
            Raw::Text(t) => parse_duration(&t)
                .map(|d| OptDur(Some(d)))
                .map_err(de::Error::custom),
            Raw::Bool(false) => Ok(OptDur(None)),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "duration {n} needs a unit, e.g. \"{n}s\""
            ))),
            Raw::Bool(true) => Err(de::Error::custom("expected a duration such as 30s, or off")),
        }
    }
}

impl<'de> Deserialize<'de> for Sync {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Text(t) if t.trim().eq_ignore_ascii_case("always") => Ok(Sync(SyncMode::Always)),
            Raw::Text(t) if t.trim().eq_ignore_ascii_case("never") => Ok(Sync(SyncMode::Never)),
            Raw::Text(t) => match parse_duration(&t) {
                Ok(d) if d.is_zero() => Ok(Sync(SyncMode::Always)),
                Ok(d) => Ok(Sync(SyncMode::Every(d))),
                Err(e) => Err(de::Error::custom(format!("{e}; or always, or never"))),
            },
            _ => Err(de::Error::custom(
                "expected always, never, or an interval such as 100ms",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Int(n) => u16::try_from(n)
                .map(|p| Port(Some(p)))
                .map_err(|_| de::Error::custom(format!("port {n} is out of range"))),
            Raw::Text(t) if is_off(&t) => Ok(Port(None)),
            Raw::Bool(false) => Ok(Port(None)),
            _ => Err(de::Error::custom("expected a port number, or off")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512 KB"), Ok(512_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(
            parse_size("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("30").unwrap_err().contains("needs a unit"));
    }
}
