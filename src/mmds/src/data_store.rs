//! The metadata document and the rules for reading it: what the host PUTs
//! and PATCHes through the API, and what the guest GETs by path.

use std::time::Instant;

use serde_json::{Map, Value};
use vmm_config::{MmdsVersion, MMDS_DEFAULT_SIZE_LIMIT};

use crate::token::{TokenAuthority, TokenError};

/// How a GET wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The value as JSON (`Accept: application/json`).
    Json,
    /// EC2 IMDS text: an object's keys one a line (objects with a trailing
    /// `/`), a string's value as is.
    Imds,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataStoreError {
    #[error("The MMDS data store is larger than its limit of {0} bytes; send a smaller document or raise --mmds-size-limit.")]
    LimitExceeded(usize),
    #[error("The MMDS resource does not exist.")]
    NotFound,
    #[error("The MMDS data store is not initialized; PUT /mmds before PATCH /mmds.")]
    NotInitialized,
    #[error("Cannot retrieve value. The value has an unsupported type.")]
    UnsupportedValueType,
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The metadata service's state, shared by the API and every interface
/// that reaches MMDS (behind one mutex).
#[derive(Debug)]
pub struct Mmds {
    version: MmdsVersion,
    imds_compat: bool,
    data: Value,
    initialized: bool,
    limit: usize,
    tokens: TokenAuthority,
}

impl Default for Mmds {
    fn default() -> Self {
        Mmds::new(MMDS_DEFAULT_SIZE_LIMIT)
    }
}

impl Mmds {
    /// An empty store whose document may take at most `limit` bytes of JSON.
    pub fn new(limit: usize) -> Self {
        Mmds {
            version: MmdsVersion::V1,
            imds_compat: false,
            data: Value::Null,
            initialized: false,
            limit,
            tokens: TokenAuthority::default(),
        }
    }

    pub fn version(&self) -> MmdsVersion {
        self.version
    }

    pub fn set_version(&mut self, version: MmdsVersion) {
        self.version = version;
    }

    pub fn imds_compat(&self) -> bool {
        self.imds_compat
    }

    pub fn set_imds_compat(&mut self, on: bool) {
        self.imds_compat = on;
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The whole document (`{}` before the first PUT, as Firecracker answers).
    pub fn document(&self) -> Value {
        if self.initialized {
            self.data.clone()
        } else {
            Value::Object(Map::new())
        }
    }

    /// Replaces the document.
    pub fn put(&mut self, data: Value) -> Result<(), DataStoreError> {
        self.check_size(&data)?;
        self.data = data;
        self.initialized = true;
        Ok(())
    }

    /// Merges `patch` into the document (JSON merge patch, RFC 7396); the
    /// document stays as it was if the result would be over the limit.
    pub fn patch(&mut self, patch: &Value) -> Result<(), DataStoreError> {
        if !self.initialized {
            return Err(DataStoreError::NotInitialized);
        }
        let mut next = self.data.clone();
        merge_patch(&mut next, patch);
        self.check_size(&next)?;
        self.data = next;
        Ok(())
    }

    fn check_size(&self, v: &Value) -> Result<(), DataStoreError> {
        // Serializing a Value cannot fail (string keys only).
        let len = serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
        if len > self.limit {
            return Err(DataStoreError::LimitExceeded(self.limit));
        }
        Ok(())
    }

    /// The value at `path` (`/a/b`, a trailing `/` allowed, `//` read as
    /// `/`), formatted as asked (always IMDS text with `imds_compat`).
    pub fn get(&self, path: &str, format: OutputFormat) -> Result<String, DataStoreError> {
        let mut p = path.to_string();
        while p.contains("//") {
            p = p.replace("//", "/");
        }
        let pointer = p.strip_suffix('/').unwrap_or(&p);
        let value = self.data.pointer(pointer).ok_or(DataStoreError::NotFound)?;
        if self.imds_compat || format == OutputFormat::Imds {
            format_imds(value)
        } else {
            Ok(value.to_string())
        }
    }

    /// A session token valid for `ttl_seconds`.
    pub fn issue_token(&mut self, ttl_seconds: u32, now: Instant) -> Result<String, DataStoreError> {
        Ok(self.tokens.issue(ttl_seconds, now)?)
    }

    pub fn token_valid(&self, token: &str, now: Instant) -> bool {
        self.tokens.is_valid(token, now)
    }
}

/// RFC 7396: objects merge key by key, `null` removes a key, anything
/// else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// EC2 IMDS text of `v`: an object's keys (objects marked with `/`), a
/// string as is; other types are not served in this format.
fn format_imds(v: &Value) -> Result<String, DataStoreError> {
    match v {
        Value::Object(m) => Ok(m
            .iter()
            .map(|(k, v)| if v.is_object() { format!("{k}/") } else { k.clone() })
            .collect::<Vec<_>>()
            .join("\n")),
        Value::String(s) => Ok(s.clone()),
        _ => Err(DataStoreError::UnsupportedValueType),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn store() -> Mmds {
        let mut m = Mmds::default();
        m.put(json!({"latest": {"meta-data": {"instance-id": "i-123", "ami-id": "ami-9", "tags": {"a": "b"}}},
                     "age": 43}))
            .unwrap();
        m
    }

    #[test]
    fn nested_paths_as_text_and_json() {
        let m = store();
        assert_eq!(m.get("/latest/meta-data/instance-id", OutputFormat::Imds).unwrap(), "i-123");
        assert_eq!(m.get("/latest/meta-data/", OutputFormat::Imds).unwrap(), "ami-id\ninstance-id\ntags/");
        assert_eq!(m.get("//latest//meta-data", OutputFormat::Imds).unwrap(), "ami-id\ninstance-id\ntags/");
        assert_eq!(m.get("/latest/meta-data/tags", OutputFormat::Json).unwrap(), r#"{"a":"b"}"#);
        assert_eq!(m.get("/latest/meta-data/instance-id", OutputFormat::Json).unwrap(), r#""i-123""#);
        assert_eq!(m.get("/age", OutputFormat::Json).unwrap(), "43");
        assert_eq!(m.get("/age", OutputFormat::Imds), Err(DataStoreError::UnsupportedValueType));
        assert_eq!(m.get("/latest/nope", OutputFormat::Imds), Err(DataStoreError::NotFound));
        assert_eq!(m.get("/", OutputFormat::Imds).unwrap(), "age\nlatest/");
    }

    #[test]
    fn imds_compat_ignores_accept() {
        let mut m = store();
        m.set_imds_compat(true);
        assert_eq!(m.get("/latest/meta-data/tags", OutputFormat::Json).unwrap(), "a");
    }

    #[test]
    fn patch_merges_and_respects_limit() {
        let mut m = Mmds::new(100);
        assert_eq!(m.patch(&json!({"a": 1})), Err(DataStoreError::NotInitialized));
        assert_eq!(m.document(), json!({}));
        m.put(json!({"a": {"b": 1, "c": 2}, "d": 3})).unwrap();
        m.patch(&json!({"a": {"b": null, "e": "x"}, "d": null, "f": [1]})).unwrap();
        assert_eq!(m.document(), json!({"a": {"c": 2, "e": "x"}, "f": [1]}));
        let big = "x".repeat(200);
        assert_eq!(m.patch(&json!({"g": big})), Err(DataStoreError::LimitExceeded(100)));
        assert_eq!(m.document(), json!({"a": {"c": 2, "e": "x"}, "f": [1]}), "a refused patch changed the store");
        assert_eq!(m.put(json!({"g": big})), Err(DataStoreError::LimitExceeded(100)));
    }
}
