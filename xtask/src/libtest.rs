//! Reading the output of test binaries: libtest summary lines, per-test
//! result lines, and `SKIP` lines, and turning them into pass/fail counts.

use serde::{Deserialize, Serialize};

/// The numbers of one libtest `test result:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Whether libtest said `ok` (as opposed to `FAILED`).
    pub ok: bool,
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests that were ignored (`#[ignore]`).
    pub ignored: u64,
    /// Benchmarks that were measured.
    pub measured: u64,
    /// Tests filtered out by a name filter.
    pub filtered_out: u64,
}

/// Parses a libtest summary line such as
/// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
/// The line may carry other text before `test result:` (interleaved output).
pub fn parse_summary(line: &str) -> Option<Summary> {
    let rest = &line[line.find("test result: ")? + "test result: ".len()..];
    let (verdict, counts) = rest.split_once('.')?;
    let ok = match verdict.trim() {
        "ok" => true,
        "FAILED" => false,
        _ => return None,
    };
    let mut summary = Summary {
        ok,
        ..Summary::default()
    };
    let mut seen_any = false;
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        let slot = match what {
            "passed" => &mut summary.passed,
            "failed" => &mut summary.failed,
            "ignored" => &mut summary.ignored,
            "measured" => &mut summary.measured,
            "filtered" => &mut summary.filtered_out,
            _ => continue,
        };
        *slot = n;
        seen_any = true;
    }
    seen_any.then_some(summary)
}

/// The outcome of one test named on a libtest `test NAME ... RESULT` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestLine {
    /// `test NAME ... ok`
    Ok(String),
    /// `test NAME ... FAILED`
    Failed(String),
    /// `test NAME ... ignored` (possibly with a reason)
    Ignored(String),
}

/// Parses a libtest per-test line (`test a::b ... ok`).
pub fn parse_test_line(line: &str) -> Option<TestLine> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.split_once(" ... ")?;
    let name = name.trim().to_string();
    let result = result.trim();
    if result == "ok" {
        Some(TestLine::Ok(name))
    } else if result == "FAILED" {
        Some(TestLine::Failed(name))
    } else if result.starts_with("ignored") {
        Some(TestLine::Ignored(name))
    } else {
        None
    }
}

/// Whether a line is a `SKIP` line printed by a test (a test that did not
/// really run): the line starts with the word `SKIP` (`SKIP`, `SKIP: no vgem`,
/// `SKIP no /dev/udmabuf`).
pub fn is_skip_line(line: &str) -> bool {
    let t = line.trim_start();
    match t.strip_prefix("SKIP") {
        Some(rest) => rest
            .chars()
            .next()
            .filter(|c| c.is_alphanumeric() || *c == '_')
            .is_none(),
        None => false,
    }
}

/// What kind of binary ran; decides how its output is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A libtest (or harness-less) test binary.
    Test,
    /// An example: one unit that must exit 0.
    Example,
    /// A benchmark binary: one unit that must exit 0.
    Bench,
}

/// The judgement of one binary's run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether everything about this binary was fine.
    pub ok: bool,
    /// Tests counted as passed.
    pub passed: u64,
    /// Tests counted as failed (failed + ignored + skipped + crashes).
    pub failed: u64,
    /// Sum of the libtest ignored counts.
    pub ignored: u64,
    /// Sum of the libtest "filtered out" counts.
    #[serde(default)]
    pub filtered_out: u64,
    /// The libtest summary lines, verbatim.
    pub summaries: Vec<String>,
    /// Names of failed tests (from `test NAME ... FAILED` lines).
    pub failed_tests: Vec<String>,
    /// Names of ignored tests.
    pub ignored_tests: Vec<String>,
    /// The `SKIP` lines the binary printed.
    pub skip_lines: Vec<String>,
    /// Human-readable reasons this binary is not ok.
    pub problems: Vec<String>,
}

/// Judges one binary's run from its output and how it ended. `exited_ok`
/// means it exited by itself with status 0; `end` describes how it ended
/// (for messages); `strict` turns ignored tests and `SKIP` lines into
/// failures (always in the VM).
pub fn evaluate(
    kind: Kind,
    output: &str,
    exited_ok: bool,
    timed_out: bool,
    end: &str,
    strict: bool,
) -> Verdict {
    let mut v = Verdict::default();
    let mut sums = Vec::new();
    for line in output.lines() {
        if let Some(s) = parse_summary(line) {
            sums.push(s);
            v.summaries.push(line.trim().to_string());
        } else if let Some(t) = parse_test_line(line) {
            match t {
                TestLine::Failed(n) => v.failed_tests.push(n),
                TestLine::Ignored(n) => v.ignored_tests.push(n),
                TestLine::Ok(_) => {}
            }
        } else if is_skip_line(line) {
            v.skip_lines.push(line.trim().to_string());
        }
    }
    let skips = if strict { v.skip_lines.len() as u64 } else { 0 };
    if timed_out || !exited_ok {
        v.problems.push(end.to_string());
    }
    if !v.skip_lines.is_empty() && strict {
        v.problems.push(format!(
            "{} SKIP line(s): a test did not really run",
            v.skip_lines.len()
        ));
    }

    match kind {
        Kind::Test if !sums.is_empty() => {
            let passed: u64 = sums.iter().map(|s| s.passed).sum();
            let failed: u64 = sums.iter().map(|s| s.failed).sum();
            let ignored: u64 = sums.iter().map(|s| s.ignored).sum();
            v.ignored = ignored;
            v.filtered_out = sums.iter().map(|s| s.filtered_out).sum();
            v.passed = passed.saturating_sub(skips);
            v.failed = failed + skips.min(passed);
            if strict {
                v.failed += ignored;
                if ignored > 0 {
                    v.problems.push(format!("{ignored} ignored test(s)"));
                }
            }
            if failed > 0 {
                v.problems.push(format!("{failed} failed test(s)"));
            }
            // A crash, timeout or non-zero exit that libtest did not count.
            if (timed_out || !exited_ok) && failed == 0 {
                v.failed += 1;
            }
        }
        Kind::Test => {
            // No libtest summary (harness = false, or it died early):
            // the whole binary is one test.
            if exited_ok && !timed_out && skips == 0 {
                v.passed = 1;
            } else {
                v.failed = 1;
                if exited_ok && !timed_out && skips > 0 {
                    // Counted via the SKIP problem above.
                } else if sums.is_empty() && !output.contains("running ") {
                    v.problems.push("no libtest output".to_string());
                }
            }
        }
        Kind::Example | Kind::Bench => {
            if exited_ok && !timed_out && skips == 0 {
                v.passed = 1;
            } else {
                v.failed = 1;
            }
        }
    }
    v.ok = v.problems.is_empty() && v.failed == 0;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_ok() {
        let s = parse_summary(
            "test result: ok. 12 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.52s",
        )
        .unwrap();
        assert_eq!(
            s,
            Summary {
                ok: true,
                passed: 12,
                failed: 0,
                ignored: 2,
                measured: 0,
                filtered_out: 0
            }
        );
    }

    #[test]
    fn summary_failed_and_interleaved() {
        let s = parse_summary(
            "noise from a thread test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.00s",
        )
        .unwrap();
        assert!(!s.ok);
        assert_eq!((s.passed, s.failed, s.filtered_out), (1, 3, 5));
        assert_eq!(parse_summary("test result: maybe. 1 passed"), None);
        assert_eq!(parse_summary("running 3 tests"), None);
    }

    #[test]
    fn test_lines() {
        assert_eq!(
            parse_test_line("test a::b ... ok"),
            Some(TestLine::Ok("a::b".into()))
        );
        assert_eq!(
            parse_test_line("test x ... FAILED"),
            Some(TestLine::Failed("x".into()))
        );
        assert_eq!(
            parse_test_line("test y ... ignored, needs a GPU"),
            Some(TestLine::Ignored("y".into()))
        );
        assert_eq!(parse_test_line("test result: ok. 1 passed;"), None);
    }

    #[test]
    fn skip_lines() {
        assert!(is_skip_line("SKIP"));
        assert!(is_skip_line("  SKIP: no /dev/udmabuf"));
        assert!(is_skip_line("SKIP no vgem"));
        assert!(!is_skip_line("SKIPPED_CONST is set"));
        assert!(!is_skip_line("test skip_me ... ok"));
        assert!(!is_skip_line("do not SKIP"));
    }

    const OK: &str = "running 2 tests\ntest a ... ok\ntest b ... ok\n\ntest result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";

    #[test]
    fn evaluate_pass() {
        let v = evaluate(Kind::Test, OK, true, false, "exit status 0", true);
        assert!(v.ok, "{v:?}");
        assert_eq!((v.passed, v.failed), (2, 0));
        assert_eq!(v.summaries.len(), 1);
    }

    #[test]
    fn evaluate_ignored_is_failure_in_strict_mode() {
        let out = "test a ... ok\ntest b ... ignored\ntest result: ok. 1 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let v = evaluate(Kind::Test, out, true, false, "exit status 0", true);
        assert!(!v.ok);
        assert_eq!((v.passed, v.failed), (1, 1));
        assert_eq!(v.ignored_tests, vec!["b"]);
        let lax = evaluate(Kind::Test, out, true, false, "exit status 0", false);
        assert!(lax.ok);
    }

    #[test]
    fn evaluate_skip_line_is_failure() {
        let out = format!("SKIP: no vgem\n{OK}");
        let v = evaluate(Kind::Test, &out, true, false, "exit status 0", true);
        assert!(!v.ok);
        assert_eq!((v.passed, v.failed), (1, 1));
    }

    #[test]
    fn evaluate_failures_and_crashes() {
        let out = "test a ... FAILED\ntest result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let v = evaluate(Kind::Test, out, false, false, "exit status 101", true);
        assert!(!v.ok);
        assert_eq!((v.passed, v.failed), (1, 1));
        assert_eq!(v.failed_tests, vec!["a"]);

        // All passed, but the process then died: one more failure.
        let v = evaluate(Kind::Test, OK, false, false, "killed by signal 11", true);
        assert_eq!((v.passed, v.failed), (2, 1));

        // Hung: timed out without a summary.
        let v = evaluate(
            Kind::Test,
            "running 2 tests\ntest a ... ok\n",
            false,
            true,
            "timed out",
            true,
        );
        assert!(!v.ok);
        assert_eq!((v.passed, v.failed), (0, 1));
    }

    #[test]
    fn evaluate_examples() {
        let v = evaluate(Kind::Example, "hello\n", true, false, "exit status 0", true);
        assert!(v.ok);
        assert_eq!((v.passed, v.failed), (1, 0));
        let v = evaluate(Kind::Example, "", false, false, "exit status 1", true);
        assert!(!v.ok);
        assert_eq!((v.passed, v.failed), (0, 1));
    }
}
