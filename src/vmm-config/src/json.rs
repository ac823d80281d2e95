//! JSON bodies and files, with errors that name the offending field.

use std::fmt;

/// Why a JSON text is not the object expected; shown as one line that
/// starts with the field's path (`drives[0].is_root_device: ...`) when
/// there is one.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("the JSON ends early (empty body?)")]
    Empty,
    #[error("expected a JSON object ({{...}})")]
    NotAnObject,
    #[error("{}the JSON ends early (truncated body?)", FieldPrefix(path))]
    Truncated { path: String },
    #[error("{}malformed JSON: {source}", FieldPrefix(path))]
    Syntax { path: String, source: serde_json::Error },
    /// A field is missing, unknown, of the wrong type or has a bad value.
    #[error("{}{source}", FieldPrefix(path))]
    Invalid { path: String, source: serde_json::Error },
}

/// `"path: "`, or nothing for the top level (or an unknown place, "?").
struct FieldPrefix<'a>(&'a str);

impl fmt::Display for FieldPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            "" | "." | "?" => Ok(()),
            path => write!(f, "{path}: "),
        }
    }
}

impl From<serde_path_to_error::Error<serde_json::Error>> for JsonError {
    fn from(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = err.path().to_string();
        let source = err.into_inner();
        if source.is_eof() {
            JsonError::Truncated { path }
        } else if source.is_syntax() {
            JsonError::Syntax { path, source }
        } else {
            JsonError::Invalid { path, source }
        }
    }
}

/// Parse `body` as `T`, naming the field that is wrong when it fails.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, JsonError> {
    // serde would also take a struct as an array of its fields; nobody means that.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(JsonError::Empty),
        Some(_) => return Err(JsonError::NotAnObject),
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de)?;
    // Trailing garbage after the object is as malformed as a bad object.
    de.end().map_err(|source| JsonError::Syntax { path: String::new(), source })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MachineConfig, NetworkInterface, VmConfig};

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<MachineConfig>(br#"{"vcpu_count":"2","mem_size_mib":128}"#).unwrap_err().to_string();
        assert!(e.starts_with("vcpu_count: invalid type: string"), "{e}");
        let e = parse_json::<VmConfig>(br#"{"drives":[{"drive_id":"a","path_on_host":"/x","is_root_device":1}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("drives[0].is_root_device: invalid type"), "{e}");
        let e = parse_json::<MachineConfig>(br#"{"vcpu_count":2,"#).unwrap_err().to_string();
        assert_eq!(e, "the JSON ends early (truncated body?)");
        let e = parse_json::<MachineConfig>(br#"{"vcpu_count":2,"mem_size_mib":128} x"#).unwrap_err().to_string();
        assert!(e.starts_with("malformed JSON"), "{e}");
        let e = parse_json::<MachineConfig>(br#"{"vcpu_count":2,"mem_size_mib":128,"bogus":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        let e = parse_json::<NetworkInterface>(br#"{"iface_id":"e","guest_mac":"nope"}"#).unwrap_err().to_string();
        assert!(e.starts_with("guest_mac: invalid MAC address \"nope\""), "{e}");
        assert!(matches!(parse_json::<MachineConfig>(b"  "), Err(JsonError::Empty)));
        assert!(matches!(parse_json::<MachineConfig>(b"[1]"), Err(JsonError::NotAnObject)));
    }
}
