//! Value types of the config that check themselves while they are read, so that
//! a bad glob, regex, address, size or duration is reported with its line and key.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A size in bytes, written as a number or with a unit (`256KiB`, `1 MiB`, `10MB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// Parses `123`, `4KiB`, `1.5 MB`, `2g`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("expected a size such as 256KiB or 1048576, found {s:?}"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
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
                    "expected a size unit (B, KiB, MiB, GiB, KB, MB, GB), found {other:?}"
                ));
            }
        };
        let v = n * mult as f64;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(format!("size {s:?} is out of range"));
        }
        Ok(ByteSize(v as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A duration written with a unit: `500ms`, `1s`, `5m`, `1h`, `7d`, or a
/// combination (`1m30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parses `500ms`, `1s`, `1m30s`, `2h`, `7d`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || format!("expected a duration such as 500ms, 10s, 5m or 1h, found {s:?}");
        if t.is_empty() {
            return Err(bad());
        }
        let mut total = std::time::Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if split == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..split].parse().map_err(|_| bad())?;
            rest = &rest[split..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let part = match unit {
                "ns" => std::time::Duration::from_nanos(n),
                "us" | "µs" => std::time::Duration::from_micros(n),
                "ms" => std::time::Duration::from_millis(n),
                "s" => std::time::Duration::from_secs(n),
                "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
                "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
                "d" => std::time::Duration::from_secs(n.saturating_mul(86_400)),
                _ => return Err(bad()),
            };
            total = total.saturating_add(part);
        }
        Ok(Duration(total))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// A listen address, or `off` to disable the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl Listen {
    /// Parses `host:port`, `:port` (all interfaces) or `off`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if matches!(t, "off" | "disabled" | "none") {
            return Ok(Listen(None));
        }
        let t = if t.starts_with(':') {
            format!("0.0.0.0{t}")
        } else if t == "localhost" || t.starts_with("localhost:") {
            t.replacen("localhost", "127.0.0.1", 1)
        } else {
            t.to_string()
        };
        t.parse::<SocketAddr>()
            .map(|a| Listen(Some(a)))
            .map_err(|_| {
                format!("expected an address such as 127.0.0.1:8080, :8080 or off, found {s:?}")
            })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("off"),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Listen::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A file glob, checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobPattern(pub String);

impl GlobPattern {
    /// Checks a glob.
    pub fn parse(s: &str) -> Result<Self, String> {
        globset::Glob::new(s)
            .map(|_| GlobPattern(s.to_string()))
            .map_err(|e| format!("invalid glob {s:?}: {}", e.kind()))
    }
}

impl<'de> Deserialize<'de> for GlobPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GlobPattern::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for GlobPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A regular expression, checked when read.
#[derive(Debug, Clone)]
pub struct RegexPattern(pub regex::Regex);

impl PartialEq for RegexPattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl<'de> Deserialize<'de> for RegexPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::RegexBuilder::new(&s)
            .size_limit(1 << 20)
            .build()
            .map(RegexPattern)
            .map_err(|e| de::Error::custom(format!("invalid regex {s:?}: {e}")))
    }
}

impl Serialize for RegexPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_and_without_units() {
        assert_eq!(ByteSize::parse("256KiB"), Ok(ByteSize(256 * 1024)));
        assert_eq!(ByteSize::parse("1 MiB"), Ok(ByteSize(1 << 20)));
        assert_eq!(ByteSize::parse("10MB"), Ok(ByteSize(10_000_000)));
        assert_eq!(ByteSize::parse("42"), Ok(ByteSize(42)));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("").is_err());
        assert!(ByteSize::parse("99999999999999999999999TiB").is_err());
    }

    #[test]
    fn durations_read_compound_units() {
        assert_eq!(Duration::parse("500ms").map(|d| d.0.as_millis()), Ok(500));
        assert_eq!(Duration::parse("1m30s").map(|d| d.0.as_secs()), Ok(90));
        assert_eq!(Duration::parse("7d").map(|d| d.0.as_secs()), Ok(7 * 86_400));
        assert!(Duration::parse("10").is_err());
        assert!(Duration::parse("s").is_err());
        assert!(Duration::parse("5 parsecs").is_err());
    }

    #[test]
    fn listen_accepts_off_and_port_only() {
        assert_eq!(Listen::parse("off"), Ok(Listen(None)));
        assert_eq!(
            Listen::parse(":9600").map(|l| l.to_string()),
            Ok("0.0.0.0:9600".to_string())
        );
        assert_eq!(
            Listen::parse("localhost:80").map(|l| l.to_string()),
            Ok("127.0.0.1:80".to_string())
        );
        assert!(Listen::parse("elastic:9200").is_err());
    }
}
