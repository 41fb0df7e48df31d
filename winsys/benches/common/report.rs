//! The result rows every bench binary reports: a table on stdout and a
//! JSON array in `$WINSYS_BENCH_OUT` (default `target/bench/results.json`).

use std::path::PathBuf;

/// One result row.
pub struct Row {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: String,
    pub baseline_value: f64,
    /// value / baseline_value (NaN: no baseline).
    pub ratio: f64,
    pub goal: &'static str,
}

/// The rows of a bench binary, each appended to the results file the
/// moment it is pushed: a run that is killed or fails later keeps the rows
/// it measured.
#[derive(Default)]
pub struct Rows(Vec<Row>);

impl Rows {
    /// Keep `row` and append it to the results file at once.
    pub fn push(&mut self, row: Row) {
        write(std::slice::from_ref(&row));
        self.0.push(row);
    }
}

impl std::ops::Deref for Rows {
    type Target = [Row];
    fn deref(&self) -> &[Row] {
        &self.0
    }
}

/// Print `rows` as a table.
pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<72} {:>12} {:>12} {:>8} {:>8}",
        "benchmark", "value", "baseline", "ratio", "goal"
    );
    for r in rows {
        println!(
            "{:<72} {:>7.3} {:<4} {:>7.3} {:<4} {:>8.3} {:>8}",
            r.name, r.value, r.unit, r.baseline_value, r.unit, r.ratio, r.goal
        );
    }
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A JSON number, or `null` for NaN and infinities.
fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "null".into()
    }
}

/// `$WINSYS_BENCH_OUT`, default `target/bench/results.json`.
pub fn out_path() -> PathBuf {
    std::env::var_os("WINSYS_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/bench/results.json"
            ))
        })
}

/// Add `rows` to `$WINSYS_BENCH_OUT`, after the rows other benches of the
/// same run wrote there (`cargo xtask bench` removes the file before a
/// run); returns the path.
pub fn write(rows: &[Row]) -> PathBuf {
    let out = out_path();
    let entries: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"name\": \"{}\", \"value\": {}, \"unit\": \"{}\", \"baseline\": \"{}\", \"baseline_value\": {}, \"ratio\": {}, \"goal\": \"{}\"}}",
                json_escape(&r.name),
                num(r.value, 6),
                r.unit,
                json_escape(&r.baseline),
                num(r.baseline_value, 6),
                num(r.ratio, 4),
                r.goal
            )
        })
        .collect();
    let existing = std::fs::read_to_string(&out).unwrap_or_default();
    let body = existing.trim().trim_end_matches(']').trim_end();
    let json = if body.starts_with('[') && body.len() > 1 {
        format!("{body},\n{}\n]\n", entries.join(",\n"))
    } else {
        format!("[\n{}\n]\n", entries.join(",\n"))
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("create the bench output directory");
    }
    std::fs::write(&out, json).expect("write the bench results");
    out
}
