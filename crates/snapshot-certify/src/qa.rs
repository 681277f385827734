//! The report as QA systems read it: JUnit XML (`--junit FILE`) and TAP version 13 (`--tap`).
//! Both list the same test cases ([`cases`]): per provider × filesystem (a suite, named
//! `PROVIDER/FS`), one case per invariant, then `sessions` (every session exited 0 with a
//! manifest), `cleanup` (nothing left behind) and `run` (the run itself: it completed; or it
//! was skipped, or could not run although requested). A violated required invariant fails its
//! case, with the first violating cycle and its finding as the message. For the negative
//! control (a provider whose manifest says `consistent: false`, i.e. bind) the invariant
//! cases pass — violations are what a live copy shows — and a case `negative-control` passes
//! when the harness caught it and fails when it did not.

use crate::invariants::Invariant;
use crate::report::{one_line, Entry, Header, Report, Verdict};
use std::fmt::Write;

/// How a case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Passed; with a note for the record (an informational invariant's violations, the
    /// negative control's).
    Pass(Option<String>),
    /// Failed: the message, and the details.
    Fail(String, String),
    /// The harness could not complete the run.
    Error(String),
    Skip(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `PROVIDER/FS`.
    pub suite: String,
    pub name: String,
    pub outcome: Outcome,
}

/// Every test case of the report, in report order: the runs, then what was not run.
pub fn cases(report: &Report) -> Vec<Case> {
    let mut out = Vec::new();
    for e in &report.results {
        let suite = format!("{}/{}", e.run.provider, e.run.fs);
        let mut case = |name: &str, outcome: Outcome| {
            out.push(Case {
                suite: suite.clone(),
                name: name.to_owned(),
                outcome,
            })
        };
        let control = e.summary.consistent == Some(false);
        for inv in Invariant::all() {
            case(inv.name(), invariant(e, inv, control));
        }
        case("sessions", sessions(e));
        case("cleanup", cleanup(e));
        if control {
            case("negative-control", negative_control(e));
        }
        case(
            "run",
            match &e.run.error {
                Some(err) => Outcome::Error(format!(
                    "the run stopped after {} cycles: {err}",
                    e.run.cycles.len()
                )),
                None => Outcome::Pass(Some(format!(
                    "{} cycles in {:.1} s",
                    e.run.cycles.len(),
                    e.run.duration_s
                ))),
            },
        );
    }
    for s in &report.skipped {
        out.push(Case {
            suite: format!("{}/{}", s.provider, s.fs),
            name: "run".into(),
            outcome: if s.requested {
                Outcome::Fail(
                    format!("requested, but cannot run on this machine: {}", s.reason),
                    s.reason.clone(),
                )
            } else {
                Outcome::Skip(s.reason.clone())
            },
        });
    }
    out
}

fn invariant(e: &Entry, inv: Invariant, control: bool) -> Outcome {
    let hit: Vec<_> = e
        .run
        .cycles
        .iter()
        .filter_map(|c| {
            c.violations
                .iter()
                .find(|v| v.invariant == inv)
                .map(|v| (c.cycle, v))
        })
        .collect();
    let Some((first, v)) = hit.first() else {
        return Outcome::Pass(None);
    };
    let said = format!(
        "violated in {} of {} cycles; first in cycle {first}: {}",
        hit.len(),
        e.run.cycles.len(),
        one_line(&v.detail)
    );
    if control {
        Outcome::Pass(Some(format!("{said} (a live copy: expected)")))
    } else if !inv.required() {
        Outcome::Pass(Some(format!("{said} (information only)")))
    } else {
        Outcome::Fail(said, v.detail.clone())
    }
}

fn sessions(e: &Entry) -> Outcome {
    if let Some(c) = e.run.cycles.iter().find(|c| c.failure.is_some()) {
        let f = c.failure.as_deref().unwrap_or_default();
        return Outcome::Fail(
            format!(
                "{} of {} sessions failed; first in cycle {}: {}",
                e.summary.failed_sessions,
                e.run.cycles.len(),
                c.cycle,
                one_line(f)
            ),
            f.to_owned(),
        );
    }
    if e.run.cycles.is_empty() {
        return Outcome::Fail("no session ran".into(), String::new());
    }
    if e.summary.consistent.is_none() {
        return Outcome::Fail(
            "the manifest's `consistent` changed between cycles".into(),
            String::new(),
        );
    }
    Outcome::Pass(None)
}

fn cleanup(e: &Entry) -> Outcome {
    match e.run.cycles.iter().find(|c| !c.leaks.is_empty()) {
        Some(c) => Outcome::Fail(
            format!("cycle {} left {}", c.cycle, one_line(&c.leaks.join("; "))),
            c.leaks.join("\n"),
        ),
        None => Outcome::Pass(None),
    }
}

fn negative_control(e: &Entry) -> Outcome {
    match e.summary.verdict {
        Verdict::Caught { after } => {
            let by: Vec<&str> = e
                .run
                .cycles
                .iter()
                .find(|c| c.cycle == after)
                .map(|c| {
                    let mut v: Vec<&str> = c
                        .violations
                        .iter()
                        .filter(|v| v.invariant.catches_negative_control())
                        .map(|v| v.invariant.name())
                        .collect();
                    v.dedup();
                    v
                })
                .unwrap_or_default();
            Outcome::Pass(Some(format!(
                "caught after {after} cycle{} (by {})",
                if after == 1 { "" } else { "s" },
                by.join(", ")
            )))
        }
        _ => Outcome::Fail(
            format!(
                "the negative control was not caught in {} cycles: the harness is too weak",
                e.run.cycles.len()
            ),
            String::new(),
        ),
    }
}

/// JUnit XML as Jenkins, GitLab, openQA and the others read it: `<testsuites>`, one
/// `<testsuite>` per provider × filesystem with the run's facts as properties, a
/// `<testcase>` per case with `<failure>`, `<error>` or `<skipped>`.
pub fn junit(report: &Report) -> String {
    let cases = cases(report);
    let count = |cs: &[&Case], f: fn(&Outcome) -> bool| cs.iter().filter(|c| f(&c.outcome)).count();
    let failed = |o: &Outcome| matches!(o, Outcome::Fail(..));
    let errored = |o: &Outcome| matches!(o, Outcome::Error(_));
    let skipped = |o: &Outcome| matches!(o, Outcome::Skip(_));
    let all: Vec<&Case> = cases.iter().collect();
    let total_time: f64 = report.results.iter().map(|e| e.run.duration_s).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"snapshot-certify\" tests=\"{}\" failures=\"{}\" errors=\"{}\" \
         skipped=\"{}\" time=\"{total_time:.3}\">",
        all.len(),
        count(&all, failed),
        count(&all, errored),
        count(&all, skipped)
    );
    let mut suites: Vec<&str> = Vec::new();
    for c in &cases {
        if !suites.contains(&c.suite.as_str()) {
            suites.push(&c.suite);
        }
    }
    let h = &report.header;
    for suite in suites {
        let these: Vec<&Case> = cases.iter().filter(|c| c.suite == suite).collect();
        let entry = report
            .results
            .iter()
            .find(|e| format!("{}/{}", e.run.provider, e.run.fs) == suite);
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" \
             time=\"{:.3}\">",
            xml(suite),
            these.len(),
            count(&these, failed),
            count(&these, errored),
            count(&these, skipped),
            entry.map_or(0.0, |e| e.run.duration_s)
        );
        properties(&mut s, h, entry);
        for c in these {
            testcase(&mut s, c);
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

/// A suite's `<properties>`: the machine, the `snapshot` driven, and the run's figures.
fn properties(s: &mut String, h: &Header, entry: Option<&Entry>) {
    s.push_str("    <properties>\n");
    let mut prop = |name: &str, value: &str| {
        let _ = writeln!(
            s,
            "      <property name=\"{}\" value=\"{}\"/>",
            xml(name),
            xml(value)
        );
    };
    prop("kernel", &h.kernel);
    if let Some(os) = &h.os {
        prop("os", os);
    }
    prop("snapshot", &h.snapshot.path);
    if let Some(v) = &h.snapshot.version {
        prop("snapshot-version", v);
    }
    if let Some(e) = entry {
        prop("cycles", &e.run.cycles.len().to_string());
        prop("verdict", &verdict_word(e.summary.verdict));
        for (what, st) in [
            ("ready-ms-median", &e.summary.ready_ms),
            ("frozen-window-ms-median", &e.summary.frozen_ms),
            ("teardown-ms-median", &e.summary.teardown_ms),
        ] {
            if let Some(st) = st {
                prop(what, &format!("{:.1}", st.median));
            }
        }
    }
    s.push_str("    </properties>\n");
}

/// One `<testcase>`, with its outcome.
fn testcase(s: &mut String, c: &Case) {
    let classname = format!("snapshot-certify.{}", c.suite.replace('/', "."));
    let open = format!(
        "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"",
        xml(&classname),
        xml(&c.name)
    );
    match &c.outcome {
        Outcome::Pass(None) => {
            let _ = writeln!(s, "{open}/>");
        }
        Outcome::Pass(Some(note)) => {
            let _ = writeln!(
                s,
                "{open}>\n      <system-out>{}</system-out>\n    </testcase>",
                xml(note)
            );
        }
        Outcome::Fail(message, detail) => {
            let _ = writeln!(
                s,
                "{open}>\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    \
                 </testcase>",
                xml(message),
                if c.name == "run" {
                    "unavailable"
                } else {
                    "violation"
                },
                xml(detail)
            );
        }
        Outcome::Error(message) => {
            let _ = writeln!(
                s,
                "{open}>\n      <error message=\"{}\" type=\"harness\"/>\n    </testcase>",
                xml(message)
            );
        }
        Outcome::Skip(reason) => {
            let _ = writeln!(
                s,
                "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                xml(reason)
            );
        }
    }
}

/// TAP version 13: `ok N - PROVIDER/FS CASE`, a YAML block with the message under a failure,
/// `# SKIP reason` for what was skipped.
pub fn tap(report: &Report) -> String {
    let cases = cases(report);
    let mut s = format!("TAP version 13\n1..{}\n", cases.len());
    for (i, c) in cases.iter().enumerate() {
        let n = i + 1;
        let title = format!("{} {}", c.suite, c.name);
        match &c.outcome {
            Outcome::Pass(None) => {
                let _ = writeln!(s, "ok {n} - {title}");
            }
            Outcome::Pass(Some(note)) => {
                let _ = writeln!(s, "ok {n} - {title}\n# {}", one_line(note));
            }
            Outcome::Skip(reason) => {
                let _ = writeln!(s, "ok {n} - {title} # SKIP {}", one_line(reason));
            }
            Outcome::Fail(message, _) | Outcome::Error(message) => {
                let severity = if matches!(c.outcome, Outcome::Error(_)) {
                    "error"
                } else {
                    "fail"
                };
                let _ = writeln!(
                    s,
                    "not ok {n} - {title}\n  ---\n  message: {}\n  severity: {severity}\n  ...",
                    serde_json::to_string(message).expect("a string serialises")
                );
            }
        }
    }
    s
}

fn verdict_word(v: Verdict) -> String {
    match v {
        Verdict::Pass => "pass".into(),
        Verdict::Fail => "fail".into(),
        Verdict::Caught { after } => format!("caught after {after}"),
        Verdict::TooWeak => "too-weak".into(),
    }
}

/// Text for an XML attribute or element: the five entities escaped, and the characters XML 1.0
/// does not allow (controls but tab and newline) shown as U+FFFD.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::tests::{combo, header};
    use crate::report::Skipped;
    use crate::workloads::Workload;

    /// btrfs clean, btrfs violating, bind caught, bind not caught, freeze leaking; lvm
    /// skipped, zfs requested and unavailable.
    pub fn report() -> Report {
        let pair = Invariant::Of(Workload::PairHook);
        let mut bad = combo("btrfs", true, vec![vec![], vec![pair], vec![pair]]);
        bad.fs = "btrfs".into();
        bad.cycles[1].violations[0].detail = "A is <gen 7> & B is \"gen 6\"\u{1}".into();
        let mut bind_xfs = combo("bind", false, vec![vec![]]);
        bind_xfs.fs = "xfs".into();
        let mut leaky = combo("freeze", true, vec![vec![]]);
        leaky.cycles[0].leaks.push("left in TARGET: /x".into());
        Report::new(
            header(),
            vec![
                combo("btrfs", true, vec![vec![], vec![]]),
                bad,
                combo("bind", false, vec![vec![], vec![pair]]),
                bind_xfs,
                leaky,
            ],
            vec![
                Skipped {
                    provider: "lvm".into(),
                    fs: "ext4".into(),
                    reason: "missing device-mapper".into(),
                    requested: false,
                },
                Skipped {
                    provider: "zfs".into(),
                    fs: "zfs".into(),
                    reason: "missing ZFS in the kernel".into(),
                    requested: true,
                },
            ],
        )
    }

    fn outcome<'a>(cases: &'a [Case], suite_index: usize, suite: &str, name: &str) -> &'a Outcome {
        &cases
            .iter()
            .filter(|c| c.suite == suite && c.name == name)
            .nth(suite_index)
            .unwrap_or_else(|| panic!("{suite} {name}"))
            .outcome
    }

    #[test]
    fn cases_follow_the_verdicts() {
        let r = report();
        assert!(!r.ok);
        let c = cases(&r);
        // Per run: 7 invariants, sessions, cleanup, run (+ negative-control); one per skip.
        assert_eq!(c.len(), 10 + 10 + 11 + 11 + 10 + 2);
        assert_eq!(
            outcome(&c, 0, "btrfs/ext4", "pair-hook"),
            &Outcome::Pass(None)
        );
        match outcome(&c, 0, "btrfs/btrfs", "pair-hook") {
            Outcome::Fail(m, _) => assert!(
                m.starts_with("violated in 2 of 3 cycles; first in cycle 2: A is <gen 7>"),
                "{m}"
            ),
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            outcome(&c, 0, "bind/ext4", "pair-hook"),
            Outcome::Pass(Some(_))
        ));
        assert_eq!(
            outcome(&c, 0, "bind/ext4", "negative-control"),
            &Outcome::Pass(Some("caught after 2 cycles (by pair-hook)".into()))
        );
        assert!(matches!(
            outcome(&c, 0, "bind/xfs", "negative-control"),
            Outcome::Fail(m, _) if m.contains("not caught in 1 cycles")
        ));
        assert!(matches!(
            outcome(&c, 0, "freeze/ext4", "cleanup"),
            Outcome::Fail(m, _) if m == "cycle 1 left left in TARGET: /x"
        ));
        assert!(matches!(
            outcome(&c, 0, "lvm/ext4", "run"),
            Outcome::Skip(m) if m == "missing device-mapper"
        ));
        assert!(matches!(
            outcome(&c, 0, "zfs/zfs", "run"),
            Outcome::Fail(m, _) if m.contains("requested, but cannot run")
        ));
    }

    /// The JUnit XML parses, and says what the cases say, in the structure JUnit readers
    /// expect: counts on `<testsuites>` and each `<testsuite>` match their children.
    #[test]
    fn junit_is_well_formed_and_counts_match() {
        let r = report();
        let text = junit(&r);
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        let attr = |n: roxmltree::Node, a: &str| -> usize {
            n.attribute(a)
                .unwrap_or_else(|| panic!("{a} missing"))
                .parse()
                .unwrap()
        };
        fn kids<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Vec<roxmltree::Node<'a, 'i>> {
            n.children()
                .filter(|c| c.is_element() && c.tag_name().name() == tag)
                .collect()
        }
        let suites = kids(root, "testsuite");
        assert_eq!(suites.len(), 7, "btrfs ×2, bind ×2, freeze, lvm, zfs");
        let (mut tests, mut failures, mut errors, mut skipped) = (0, 0, 0, 0);
        for s in &suites {
            let cases = kids(*s, "testcase");
            let with =
                |tag: &'static str| cases.iter().filter(|c| !kids(**c, tag).is_empty()).count();
            assert_eq!(attr(*s, "tests"), cases.len());
            assert_eq!(attr(*s, "failures"), with("failure"));
            assert_eq!(attr(*s, "errors"), with("error"));
            assert_eq!(attr(*s, "skipped"), with("skipped"));
            assert!(s.attribute("name").is_some() && s.attribute("time").is_some());
            for c in &cases {
                assert!(c
                    .attribute("classname")
                    .unwrap()
                    .starts_with("snapshot-certify."));
                assert!(c.attribute("name").is_some());
                for f in kids(*c, "failure") {
                    assert!(!f.attribute("message").unwrap().is_empty());
                }
            }
            tests += cases.len();
            failures += with("failure");
            errors += with("error");
            skipped += with("skipped");
        }
        assert_eq!(attr(root, "tests"), tests);
        assert_eq!(attr(root, "failures"), failures);
        assert_eq!(attr(root, "errors"), errors);
        assert_eq!(attr(root, "skipped"), skipped);
        assert_eq!((tests, failures, skipped), (cases(&r).len(), 4, 1));
        // The finding survives escaping, the control character replaced.
        let msg = doc
            .descendants()
            .filter(|n| n.has_tag_name("failure"))
            .filter_map(|n| n.attribute("message"))
            .find(|m| m.contains("first in cycle 2"))
            .unwrap();
        assert!(
            msg.ends_with("A is <gen 7> & B is \"gen 6\"\u{FFFD}"),
            "{msg}"
        );
        // Properties: the machine.
        assert!(text.contains("<property name=\"kernel\" value=\"6.1\"/>"));
    }

    #[test]
    fn tap_plan_matches_its_lines() {
        let r = report();
        let text = tap(&r);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("TAP version 13"));
        let plan: usize = lines
            .next()
            .and_then(|l| l.strip_prefix("1.."))
            .unwrap()
            .parse()
            .unwrap();
        let results: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
            .collect();
        assert_eq!(results.len(), plan);
        for (i, l) in results.iter().enumerate() {
            let n = l.trim_start_matches("not ").trim_start_matches("ok ");
            assert!(n.starts_with(&format!("{} - ", i + 1)), "{l}");
        }
        assert_eq!(
            results.iter().filter(|l| l.starts_with("not ok")).count(),
            4
        );
        assert!(
            text.contains("ok 53 - lvm/ext4 run # SKIP missing device-mapper"),
            "{text}"
        );
        assert!(text.contains("  message: \"violated in 2 of 3 cycles; first in cycle 2:"));
    }
}
