//! `logger`: where and how much the VMM logs (Firecracker's `PUT /logger`,
//! `--log-path`, `--level`, `--show-level`, `--show-log-origin`).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validate::{check_path, Result};

/// A log level as Firecracker spells it (any case; `Warn` or `Warning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Off,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The name Firecracker reports (`"Warning"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "Off",
            LogLevel::Error => "Error",
            LogLevel::Warning => "Warning",
            LogLevel::Info => "Info",
            LogLevel::Debug => "Debug",
            LogLevel::Trace => "Trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => {
                return Err(format!(
                    "invalid log level {:?}; expected Off, Error, Warning, Info, Debug or Trace",
                    s.escape_debug().to_string()
                ))
            }
        })
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `PUT /logger`, `"logger"` in a config file. Every field is optional: an
/// absent one keeps its current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// A file or FIFO that must exist; log lines are appended to it.
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    #[serde(default)]
    pub level: Option<LogLevel>,
    /// Put the level in each line (`[id:thread:INFO]`).
    #[serde(default)]
    pub show_level: Option<bool>,
    /// Put the source file and line in each line.
    #[serde(default)]
    pub show_log_origin: Option<bool>,
    /// Only log from modules whose path starts with this.
    #[serde(default)]
    pub module: Option<String>,
}

impl Logger {
    pub fn validate(&self) -> Result {
        if let Some(path) = &self.log_path {
            check_path("log_path", path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_in_any_case() {
        let l: Logger = serde_json::from_str(r#"{"level":"warn","show_level":true}"#).unwrap();
        assert_eq!(l.level, Some(LogLevel::Warning));
        assert_eq!("INFO".parse::<LogLevel>(), Ok(LogLevel::Info));
        let e = serde_json::from_str::<Logger>(r#"{"level":"Bogus"}"#).unwrap_err().to_string();
        assert!(e.contains("invalid log level \"Bogus\""), "{e}");
        assert_eq!(serde_json::to_string(&LogLevel::Warning).unwrap(), "\"Warning\"");
        assert!(Logger { log_path: Some("".into()), ..Default::default() }.validate().is_err());
    }
}
