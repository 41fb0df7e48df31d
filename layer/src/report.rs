//! `WINSYS_LAYER_REPORT=FILE`: one JSON line per swapchain event, appended,
//! so that a test (or a user) can see what the layer did for an app it
//! cannot change: which sync mode and buffer path each swapchain got, and
//! how many frames it presented.

use std::io::Write;

/// The environment variable naming the report file.
pub const REPORT_ENV: &str = "WINSYS_LAYER_REPORT";

/// A JSON value of a report line.
#[derive(Debug, Clone)]
pub enum Value {
    /// A string.
    Str(String),
    /// A number.
    Num(u64),
    /// A boolean.
    Bool(bool),
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The JSON object of `fields`.
pub fn line(fields: &[(&str, Value)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Str(s) => format!("\"{}\"", escape(s)),
                Value::Num(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            format!("\"{}\":{v}", escape(k))
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Append `fields` as one line to the report file, if one is named.
/// Failures are printed, never fatal: the app's frames matter more.
pub fn write(fields: &[(&str, Value)]) {
    let Some(path) = std::env::var_os(REPORT_ENV) else {
        return;
    };
    let mut text = line(fields);
    text.push('\n');
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "winsys layer: cannot write the report {}: {e}",
            path.to_string_lossy()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_escaped_strings() {
        let l = line(&[
            ("event", Value::Str("create".into())),
            ("path", Value::Str("a \"b\"\\\n".into())),
            ("frames", Value::Num(7)),
            ("fifo", Value::Bool(true)),
        ]);
        assert_eq!(
            l,
            r#"{"event":"create","path":"a \"b\"\\\u000a","frames":7,"fifo":true}"#
        );
    }
}
