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
    /// The lowest and highest ratio of the rounds behind a row whose two
    /// sides were measured in several rounds (each round's runs taken
    /// next to each other); `None`: one figure per side.
    pub spread: Option<(f64, f64)>,
}

impl Row {
    /// Whether the goal is met: `met` or `missed` when every round says
    /// so, `undecided` when the rounds disagree (the run-to-run noise of
    /// this machine is larger than the distance to the goal), `-` for a
    /// row without a goal. A row of one figure per side is judged by its
    /// ratio.
    pub fn verdict(&self) -> &'static str {
        let Some((op, goal)) = self
            .goal
            .split_once(' ')
            .and_then(|(op, x)| Some((op, x.trim_end_matches('x').parse::<f64>().ok()?)))
        else {
            return "-";
        };
        let (lo, hi) = self.spread.unwrap_or((self.ratio, self.ratio));
        if !(lo.is_finite() && hi.is_finite()) {
            return "-";
        }
        let (met, missed) = match op {
            ">=" => (lo >= goal, hi < goal),
            ">" => (lo > goal, hi <= goal),
            "<=" => (hi <= goal, lo > goal),
            "<" => (hi < goal, lo >= goal),
            _ => return "-",
        };
        match (met, missed) {
            (true, _) => "met",
            (_, true) => "missed",
            _ => "undecided",
        }
    }
}

/// The lowest and highest of per-round ratios `values[i] / baselines[i]`.
#[allow(dead_code)] // not every bench measures in rounds
pub fn spread(values: &[f64], baselines: &[f64]) -> Option<(f64, f64)> {
    let ratios: Vec<f64> = values
        .iter()
        .zip(baselines)
        .filter(|(v, &b)| v.is_finite() && b.is_finite() && b > 0.0)
        .map(|(v, b)| v / b)
        .collect();
    if ratios.len() < 2 {
        return None;
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo, hi))
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
        "{:<72} {:>12} {:>12} {:>8} {:>13} {:>8} {:>9}",
        "benchmark", "value", "baseline", "ratio", "rounds", "goal", "verdict"
    );
    for r in rows {
        let rounds = r
            .spread
            .map_or("-".to_string(), |(lo, hi)| format!("{lo:.2}-{hi:.2}"));
        println!(
            "{:<72} {:>7.3} {:<4} {:>7.3} {:<4} {:>8.3} {:>13} {:>8} {:>9}",
            r.name,
            r.value,
            r.unit,
            r.baseline_value,
            r.unit,
            r.ratio,
            rounds,
            r.goal,
            r.verdict()
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
            let (lo, hi) = r.spread.unwrap_or((f64::NAN, f64::NAN));
            format!(
                "  {{\"name\": \"{}\", \"value\": {}, \"unit\": \"{}\", \"baseline\": \"{}\", \"baseline_value\": {}, \"ratio\": {}, \"ratio_low\": {}, \"ratio_high\": {}, \"goal\": \"{}\", \"verdict\": \"{}\"}}",
                json_escape(&r.name),
                num(r.value, 6),
                r.unit,
                json_escape(&r.baseline),
                num(r.baseline_value, 6),
                num(r.ratio, 4),
                num(lo, 4),
                num(hi, 4),
                r.goal,
                r.verdict()
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
