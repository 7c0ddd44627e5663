//! Value types used by the settings: Go-style durations, human byte sizes,
//! secrets that never print, and header maps whose values may be lists.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Cores per instance of a stage sized `auto`. Chosen for the indexer: in
/// the one-core profile (loadtest/README.md) it does about 40 % of the
/// server's work per event, so one indexer thread becomes the ceiling once
/// the server has roughly two and a half cores busy; one instance per three
/// cores keeps it below that.
pub const CORES_PER_AUTO_INSTANCE: usize = 3;

/// Most instances `auto` resolves to.
pub const MAX_AUTO_INSTANCES: usize = 16;

/// Instances `auto` means on a host where this process may run on `cores`
/// cores: one per [`CORES_PER_AUTO_INSTANCE`], at least one.
pub const fn auto_instances_for(cores: usize) -> usize {
    let n = cores.div_ceil(CORES_PER_AUTO_INSTANCE);
    if n == 0 {
        1
    } else if n > MAX_AUTO_INSTANCES {
        MAX_AUTO_INSTANCES
    } else {
        n
    }
}

/// Instances `auto` means on this host (the cores this process may use:
/// affinity and cgroup quota included).
pub fn auto_instances() -> usize {
    auto_instances_for(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A stage's `instances`: a number, or `auto` ([`auto_instances`]),
/// resolved when the configuration is read.
pub fn deserialize_instances<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number of instances or \"auto\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom("instances out of range"))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom("instances must not be negative"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            let v = v.trim();
            if v.eq_ignore_ascii_case("auto") {
                Ok(auto_instances())
            } else {
                v.parse().map_err(|_| {
                    E::custom(format!("{v:?} is not a number of instances or \"auto\""))
                })
            }
        }
    }
    d.deserialize_any(V)
}

/// A Go duration (`30s`, `5m`, `1h30m`, `250ms`); a bare number is seconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const fn secs(s: u64) -> Self {
        GoDuration(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        GoDuration(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}ns", d.as_nanos())
        }
    }
}

/// Parses a Go duration string. Units: ns, us, µs, ms, s, m, h.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<f64>() {
        if n < 0.0 || !n.is_finite() {
            return Err(format!("invalid duration {s:?}"));
        }
        return Ok(Duration::from_secs_f64(n));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        if num_end == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = NumOrStr::deserialize(d)?;
        match v {
            NumOrStr::Int(n) if n >= 0 => Ok(GoDuration(Duration::from_secs(n as u64))),
            NumOrStr::Float(f) if f >= 0.0 && f.is_finite() => {
                Ok(GoDuration(Duration::from_secs_f64(f)))
            }
            NumOrStr::Str(s) => parse_go_duration(&s)
                .map(GoDuration)
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom("invalid duration: negative")),
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Int(i64),
    Float(f64),
    Str(String),
}

/// A byte size: `500MiB`, `5mib` (binary), `5mb` (decimal), or a bare integer (bytes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b != 0 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b != 0 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b != 0 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{}", b)
        }
    }
}

/// Parses a human byte size. Negative, zero-length or unknown units are errors.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size {s:?}"));
    }
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024f64.powi(4),
        u => return Err(format!("unknown unit {u:?} in size {s:?}")),
    };
    Ok((n * mult) as u64)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Int(n) if n >= 0 => Ok(ByteSize(n as u64)),
            NumOrStr::Float(f) if f >= 0.0 && f.is_finite() => Ok(ByteSize(f as u64)),
            NumOrStr::Str(s) => parse_byte_size(&s).map(ByteSize).map_err(de::Error::custom),
            _ => Err(de::Error::custom("invalid size: negative")),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A secret (token, password, API key). `Debug`, `Display` and `Serialize`
/// print a placeholder, so config dumps and logs cannot leak it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself. Call only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { REDACTED })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(String::deserialize(d)?))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Header values in config: a single string or a list of strings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

impl HeaderValues {
    pub fn values(&self) -> Vec<&str> {
        match self {
            HeaderValues::One(s) => vec![s.as_str()],
            HeaderValues::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

pub type HeaderMap = BTreeMap<String, HeaderValues>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_go_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("500MiB").unwrap(), 524_288_000);
        assert_eq!(parse_byte_size("5mib").unwrap(), 5_242_880);
        assert_eq!(parse_byte_size("5mb").unwrap(), 5_000_000);
        assert_eq!(parse_byte_size("2048").unwrap(), 2048);
        assert!(parse_byte_size("invalid_size").is_err());
        assert!(parse_byte_size("").is_err());
        assert!(parse_byte_size("-10").is_err());
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
