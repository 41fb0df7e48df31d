//! The report's data model: a JSON value, written as JSON or as a
//! readable outline.

use std::fmt::Write as _;

/// A JSON value, and the outline the text output is.
#[derive(Debug, Clone)]
pub enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl From<bool> for J {
    fn from(b: bool) -> J {
        J::Bool(b)
    }
}
impl From<&str> for J {
    fn from(s: &str) -> J {
        J::Str(s.into())
    }
}
impl From<String> for J {
    fn from(s: String) -> J {
        J::Str(s)
    }
}
impl From<u64> for J {
    fn from(n: u64) -> J {
        J::Num(n as f64)
    }
}
impl From<u32> for J {
    fn from(n: u32) -> J {
        J::Num(n as f64)
    }
}
impl<T: Into<J>> From<Option<T>> for J {
    fn from(o: Option<T>) -> J {
        o.map_or(J::Null, Into::into)
    }
}
impl<T: Into<J>> From<Vec<T>> for J {
    fn from(v: Vec<T>) -> J {
        J::Arr(v.into_iter().map(Into::into).collect())
    }
}

/// An object built field by field.
#[derive(Default)]
pub struct Obj(Vec<(String, J)>);

impl Obj {
    pub fn set(mut self, key: &str, value: impl Into<J>) -> Self {
        self.0.push((key.into(), value.into()));
        self
    }
    pub fn j(self) -> J {
        J::Obj(self.0)
    }
}

/// The outcome of trying something: `true`, or the reason it failed.
pub fn tried<T, E: std::fmt::Display>(r: Result<T, E>) -> J {
    match r {
        Ok(_) => J::Bool(true),
        Err(e) => J::Str(format!("no: {e}")),
    }
}

pub fn json(v: &J, out: &mut String, indent: usize) {
    let pad = |n| "  ".repeat(n);
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(n) if n.fract() == 0.0 && n.abs() < 9e15 => {
            let _ = write!(out, "{}", *n as i64);
        }
        J::Num(n) => {
            let _ = write!(out, "{n}");
        }
        J::Str(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        J::Arr(items) if items.is_empty() => out.push_str("[]"),
        J::Arr(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                json(item, out, indent + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        J::Obj(fields) if fields.is_empty() => out.push_str("{}"),
        J::Obj(fields) => {
            out.push_str("{\n");
            for (i, (k, item)) in fields.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                json(&J::Str(k.clone()), out, indent + 1);
                out.push_str(": ");
                json(item, out, indent + 1);
                out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
    }
}

/// A scalar as text; `None` for arrays and objects.
pub fn scalar(v: &J) -> Option<String> {
    Some(match v {
        J::Null => "-".into(),
        J::Bool(true) => "yes".into(),
        J::Bool(false) => "no".into(),
        J::Num(n) if n.fract() == 0.0 => format!("{}", *n as i64),
        J::Num(n) => format!("{n:.3}"),
        J::Str(s) => s.clone(),
        J::Arr(items) if items.iter().all(|i| scalar(i).is_some()) => {
            if items.is_empty() {
                "-".into()
            } else {
                items
                    .iter()
                    .filter_map(scalar)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
        _ => return None,
    })
}

/// The readable outline: nested keys indented, lists of objects as
/// numbered entries.
pub fn text(v: &J, out: &mut String, indent: usize) {
    let pad = "  ".repeat(indent);
    match v {
        J::Obj(fields) => {
            let width = fields
                .iter()
                .filter(|(_, v)| scalar(v).is_some())
                .map(|(k, _)| k.len())
                .max()
                .unwrap_or(0);
            for (k, item) in fields {
                match scalar(item) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}{k:width$}  {s}");
                    }
                    None => {
                        let _ = writeln!(out, "{pad}{k}:");
                        text(item, out, indent + 1);
                    }
                }
            }
        }
        J::Arr(items) => {
            for item in items {
                match scalar(item) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}- {s}");
                    }
                    None => {
                        let mut inner = String::new();
                        text(item, &mut inner, indent + 1);
                        // The first line of an entry carries the dash.
                        let body = inner.trim_start();
                        let _ = write!(out, "{pad}- {body}");
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other).unwrap_or_default());
        }
    }
}

/// HTML-escape `s`.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained page (no scripts, no network) showing `outline`.
pub fn html_page(title: &str, outline: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n\
<style>body{{font-family:sans-serif;margin:2em}}pre{{font-size:90%}}</style></head>\n\
<body><h1>{t}</h1>\n<pre>{}</pre>\n</body></html>\n",
        esc(outline),
        t = esc(title)
    )
}
