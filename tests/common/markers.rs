//! The line protocol between a guest test script and the harness.
//!
//! The guest runner (installed by `tools/guest-artifacts test-image`) prints
//! `SHIMVMM-MARKER <name> <value...>` for each `marker` call and
//! `SHIMVMM-EXIT <status>` when the script ends. Serial consoles interleave
//! these with other output (openrc's `ebegin` leaves lines unterminated), so a
//! token may appear mid-line; a token directly after a quote is a shell trace
//! (`set -x`) of the command, not its output, and is ignored.

use std::time::Duration;

/// Token that starts a marker.
pub const MARKER_TOKEN: &str = "SHIMVMM-MARKER ";
/// Token that reports the test script's exit status.
pub const EXIT_TOKEN: &str = "SHIMVMM-EXIT ";
/// Marker the guest runner prints (value: guest uptime in seconds) just
/// before it starts the test script.
pub const SCRIPT_START_MARKER: &str = "script-start";

/// One `marker NAME VALUE` from the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The marker's name (first word).
    pub name: String,
    /// Everything after the name, trimmed; may be empty.
    pub value: String,
    /// When the line arrived, relative to the process spawn.
    pub at: Duration,
}

/// Finds `token` in `line`, skipping occurrences right after a quote (shell
/// traces); returns the text after the token.
fn after_token<'a>(line: &'a str, token: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(pos) = line[from..].find(token) {
        let start = from + pos;
        let quoted = line[..start].ends_with(['\'', '"']);
        if !quoted {
            return Some(&line[start + token.len()..]);
        }
        from = start + token.len();
    }
    None
}

/// Parses a console line into `(name, value)` if it carries a marker.
pub fn parse_marker(line: &str) -> Option<(String, String)> {
    let rest = after_token(line, MARKER_TOKEN)?;
    let rest = rest.trim_end_matches(['\r', '\n']).trim_start();
    let (name, value) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest.trim(), ""),
    };
    if name.is_empty() {
        return None;
    }
    Some((name.to_string(), value.to_string()))
}

/// Parses a console line into the test script's exit status if it carries one.
pub fn parse_exit(line: &str) -> Option<i32> {
    let rest = after_token(line, EXIT_TOKEN)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_at_line_start() {
        assert_eq!(parse_marker("SHIMVMM-MARKER rx-bytes 1500"), Some(("rx-bytes".into(), "1500".into())));
    }

    #[test]
    fn marker_value_keeps_inner_spaces_and_drops_cr() {
        assert_eq!(parse_marker("SHIMVMM-MARKER hello  world 42 \r"), Some(("hello".into(), "world 42".into())));
    }

    #[test]
    fn marker_without_value() {
        assert_eq!(parse_marker("SHIMVMM-MARKER ready"), Some(("ready".into(), String::new())));
    }

    #[test]
    fn marker_after_unterminated_openrc_line() {
        assert_eq!(
            parse_marker("local                | * Starting local ...SHIMVMM-MARKER script-start 29.64"),
            Some(("script-start".into(), "29.64".into()))
        );
    }

    #[test]
    fn shell_trace_of_marker_is_not_a_marker() {
        assert_eq!(parse_marker("+ echo 'SHIMVMM-MARKER hello world'"), None);
        assert_eq!(parse_marker("+ echo \"SHIMVMM-MARKER hello world\""), None);
    }

    #[test]
    fn trace_then_real_marker_on_one_line() {
        assert_eq!(parse_marker("+ echo 'SHIMVMM-MARKER a 1' ...SHIMVMM-MARKER b 2"), Some(("b".into(), "2".into())));
    }

    #[test]
    fn non_markers() {
        assert_eq!(parse_marker("SHIMVMM-MARKER "), None);
        assert_eq!(parse_marker("SHIMVMM-MARKERx a b"), None);
        assert_eq!(parse_marker("[    3.5] Run /init as init process"), None);
        assert_eq!(parse_marker(""), None);
    }

    #[test]
    fn exit_status_lines() {
        assert_eq!(parse_exit("SHIMVMM-EXIT 0"), Some(0));
        assert_eq!(parse_exit("SHIMVMM-EXIT 3\r"), Some(3));
        assert_eq!(parse_exit("noise SHIMVMM-EXIT 127"), Some(127));
        assert_eq!(parse_exit("+ echo 'SHIMVMM-EXIT 0'"), None);
        assert_eq!(parse_exit("SHIMVMM-EXIT $status"), None);
        assert_eq!(parse_exit("SHIMVMM-MARKER x 1"), None);
    }
}
