//! Results per provider × filesystem, the verdicts, and their rendering (Markdown, JSON; JUnit
//! and TAP in [`crate::qa`]). The JSON is the stable report: its schema is
//! `report.schema.json` beside this crate's manifest (installed in
//! `/usr/share/doc/snapshot-certify/`), versioned by [`SCHEMA_VERSION`].

use crate::invariants::{Invariant, Violation};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One snapshot session.
#[derive(Debug, Default, Serialize)]
pub struct CycleRecord {
    pub cycle: u32,
    pub session: Option<String>,
    /// The manifest's `consistent`.
    pub consistent: Option<bool>,
    /// Spawn → manifest (stdout EOF).
    pub ready_ms: Option<f64>,
    /// From the session's `-v` log: first writer `freeze` → last writer `thaw`.
    pub frozen_ms: Option<f64>,
    /// stdin closed → exit.
    pub teardown_ms: Option<f64>,
    pub exit: Option<i32>,
    pub violations: Vec<Violation>,
    pub leaks: Vec<String>,
    /// The session did not do its job (no manifest, wrong provider, non-zero exit).
    pub failure: Option<String>,
}

/// One provider × filesystem.
#[derive(Debug, Serialize)]
pub struct ComboReport {
    pub provider: String,
    pub fs: String,
    pub filesystems: u32,
    /// `--cycles` (`None`: as many as `budget_s` allows).
    pub cycles_requested: Option<u32>,
    /// This run's share of the `--duration` budget, in seconds (`None`: no budget).
    pub budget_s: Option<f64>,
    pub duration_s: f64,
    /// Operations per second of each workload over the run.
    pub ops_per_s: BTreeMap<String, f64>,
    /// A harness error that ended the run early.
    pub error: Option<String>,
    pub cycles: Vec<CycleRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// Declared consistent, and it was.
    Pass,
    /// Declared consistent and violated an invariant, leaked, or a session failed.
    Fail,
    /// Declared not consistent (the negative control), and the harness caught it.
    Caught { after: u32 },
    /// Declared not consistent and never caught: the harness is too weak.
    TooWeak,
}

impl Verdict {
    pub fn ok(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::Caught { .. })
    }

    fn text(self) -> String {
        match self {
            Verdict::Pass => "**PASS**".into(),
            Verdict::Fail => "**FAIL**".into(),
            Verdict::Caught { after } => format!(
                "negative control: caught after {after} cycle{}",
                if after == 1 { "" } else { "s" }
            ),
            Verdict::TooWeak => "**FAIL**: negative control not caught (harness too weak)".into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub median: f64,
    pub max: f64,
}

fn stats(values: impl Iterator<Item = Option<f64>>) -> Option<Stats> {
    let mut v: Vec<f64> = values.flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        max: v[n - 1],
    })
}

/// What the table shows of one provider × filesystem.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub cycles_run: u32,
    /// The manifest's word (the same in every cycle, or `None`).
    pub consistent: Option<bool>,
    /// Cycles in which each invariant was violated.
    pub cycles_violating: BTreeMap<&'static str, u32>,
    /// The first cycle in which each violated invariant was.
    pub first_violation: BTreeMap<&'static str, u32>,
    /// Cycles with a violation of an invariant the provider must keep.
    pub cycles_with_required_violation: u32,
    /// First cycle caught by a content invariant (negative control).
    pub first_caught: Option<u32>,
    pub leaks: u32,
    pub failed_sessions: u32,
    pub ready_ms: Option<Stats>,
    pub frozen_ms: Option<Stats>,
    pub teardown_ms: Option<Stats>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Why the verdict is not a pass, and first examples of each violated invariant.
    pub notes: Vec<String>,
}

impl ComboReport {
    pub fn summary(&self) -> Summary {
        let mut cycles_violating = BTreeMap::new();
        let mut first_violation = BTreeMap::new();
        for inv in Invariant::all() {
            let hit: Vec<u32> = self
                .cycles
                .iter()
                .filter(|c| c.violations.iter().any(|v| v.invariant == inv))
                .map(|c| c.cycle)
                .collect();
            cycles_violating.insert(inv.name(), hit.len() as u32);
            if let Some(&first) = hit.first() {
                first_violation.insert(inv.name(), first);
            }
        }
        let required = self
            .cycles
            .iter()
            .filter(|c| c.violations.iter().any(|v| v.invariant.required()))
            .count() as u32;
        let first_caught = self
            .cycles
            .iter()
            .find(|c| {
                c.violations
                    .iter()
                    .any(|v| v.invariant.catches_negative_control())
            })
            .map(|c| c.cycle);
        let leaks = self.cycles.iter().map(|c| c.leaks.len() as u32).sum();
        let failed = self.cycles.iter().filter(|c| c.failure.is_some()).count() as u32;
        let words: Vec<bool> = self.cycles.iter().filter_map(|c| c.consistent).collect();
        let consistent = match words.first() {
            Some(&w) if words.iter().all(|&x| x == w) => Some(w),
            _ => None,
        };

        let mut notes = Vec::new();
        if let Some(e) = &self.error {
            notes.push(format!("run aborted: {e}"));
        }
        if words.iter().any(|&x| x) && words.iter().any(|&x| !x) {
            notes.push("the manifest's `consistent` changed between cycles".into());
        }
        for c in &self.cycles {
            if let Some(f) = &c.failure {
                notes.push(format!("cycle {}: session failed: {f}", c.cycle));
            }
            for l in &c.leaks {
                notes.push(format!("cycle {}: leak: {l}", c.cycle));
            }
        }
        for inv in Invariant::all() {
            if let Some((c, v)) = self.cycles.iter().find_map(|c| {
                c.violations
                    .iter()
                    .find(|v| v.invariant == inv)
                    .map(|v| (c.cycle, v))
            }) {
                notes.push(format!(
                    "{} first violated in cycle {}: {}",
                    inv.name(),
                    c,
                    v.detail
                ));
            }
        }
        let cycles_run = self.cycles.len() as u32;
        let clean_run = self.error.is_none() && failed == 0 && leaks == 0 && cycles_run > 0;
        let verdict = match consistent {
            _ if !clean_run => Verdict::Fail,
            Some(true) if required == 0 => Verdict::Pass,
            Some(false) => match first_caught {
                Some(after) => Verdict::Caught { after },
                None => Verdict::TooWeak,
            },
            _ => Verdict::Fail,
        };
        Summary {
            cycles_run,
            consistent,
            cycles_violating,
            first_violation,
            cycles_with_required_violation: required,
            first_caught,
            leaks,
            failed_sessions: failed,
            ready_ms: stats(self.cycles.iter().map(|c| c.ready_ms)),
            frozen_ms: stats(self.cycles.iter().map(|c| c.frozen_ms)),
            teardown_ms: stats(self.cycles.iter().map(|c| c.teardown_ms)),
            verdict,
            notes,
        }
    }
}

/// Version of the JSON report's schema (`report.schema.json`): raised when a field changes
/// meaning or goes away; new fields may appear within a version.
pub const SCHEMA_VERSION: u32 = 1;

/// What was run, where, with what.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    /// `snapshot-certify` and its version.
    pub tool: Tool,
    /// The `snapshot` binary driven, and what its `--version` said.
    pub snapshot: Binary,
    /// `uname -r`.
    pub kernel: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os: Option<String>,
    /// `--cycles` per provider × filesystem (`None`: until the `--duration` budget is spent).
    pub cycles: Option<u32>,
    /// `--duration`, in seconds, for the whole run.
    pub duration_budget_s: Option<f64>,
    /// `--client`: who read each view.
    pub client: crate::client::Client,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Binary {
    pub path: String,
    pub version: Option<String>,
}

/// A provider × filesystem that was not run, and why. `requested`: named with `--provider`,
/// so not running it is a failure; otherwise (`--provider all`) a skip.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub provider: String,
    pub fs: String,
    pub reason: String,
    pub requested: bool,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    #[serde(flatten)]
    pub header: Header,
    /// Every run passed (or caught the negative control), and no requested run was skipped.
    pub ok: bool,
    pub results: Vec<Entry>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize)]
pub struct Entry {
    pub summary: Summary,
    #[serde(flatten)]
    pub run: ComboReport,
}

impl Report {
    pub fn new(header: Header, runs: Vec<ComboReport>, skipped: Vec<Skipped>) -> Self {
        let results: Vec<Entry> = runs
            .into_iter()
            .map(|run| Entry {
                summary: run.summary(),
                run,
            })
            .collect();
        Report {
            schema_version: SCHEMA_VERSION,
            header,
            ok: !results.is_empty()
                && results.iter().all(|e| e.summary.verdict.ok())
                && skipped.iter().all(|s| !s.requested),
            results,
            skipped,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serialises") + "\n"
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        self.summary_table(&mut s);
        self.violations_table(&mut s);
        self.throughput_table(&mut s);
        self.skipped_and_findings(&mut s);
        s
    }

    /// The title and one line per provider × filesystem: cycles, leaks, timings, verdict.
    fn summary_table(&self, s: &mut String) {
        let h = &self.header;
        let _ = writeln!(
            s,
            "## snapshot certification (kernel {}, {})\n",
            h.kernel,
            match (h.cycles, h.duration_budget_s) {
                (Some(n), None) => format!("{n} cycles each"),
                (Some(n), Some(d)) => format!("{n} cycles each, at most {d:.0} s in all"),
                (None, Some(d)) => format!("cycles for {d:.0} s in all"),
                (None, None) => "no cycles".into(),
            }
        );
        s.push_str(
            "| provider | filesystems | cycles | manifest | cycles violating | leaks \
             | failed sessions | ready (median) | frozen window (median) | teardown (median) \
             | verdict |\n|---|---|--:|---|--:|--:|--:|--:|--:|--:|---|\n",
        );
        for e in &self.results {
            let (r, m) = (&e.run, &e.summary);
            let _ = writeln!(
                s,
                "| {} | {} × {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.provider,
                r.filesystems,
                r.fs,
                m.cycles_run,
                match m.consistent {
                    Some(true) => "consistent",
                    Some(false) => "not consistent",
                    None => "?",
                },
                m.cycles_with_required_violation,
                m.leaks,
                m.failed_sessions,
                ms(&m.ready_ms),
                ms(&m.frozen_ms),
                ms(&m.teardown_ms),
                m.verdict.text()
            );
        }
    }

    /// Cycles violating each invariant, with the first such cycle.
    fn violations_table(&self, s: &mut String) {
        s.push_str("\n### Cycles violating each invariant\n\n");
        s.push_str("(first: the first cycle that violated it)\n\n| provider | fs |");
        let invs: Vec<Invariant> = Invariant::all().collect();
        for inv in &invs {
            let _ = write!(
                s,
                " {}{} |",
                inv.name(),
                if inv.required() { "" } else { " (info)" }
            );
        }
        s.push_str("\n|---|---|");
        s.push_str(&"--:|".repeat(invs.len()));
        s.push('\n');
        for e in &self.results {
            let _ = write!(s, "| {} | {} |", e.run.provider, e.run.fs);
            for inv in &invs {
                let n = e.summary.cycles_violating[inv.name()];
                match e.summary.first_violation.get(inv.name()) {
                    Some(first) => {
                        let _ = write!(s, " {n} (first: {first}) |");
                    }
                    None => {
                        let _ = write!(s, " {n} |");
                    }
                }
            }
            s.push('\n');
        }
    }

    /// The workloads' operations per second.
    fn throughput_table(&self, s: &mut String) {
        s.push_str("\n### Workload throughput (operations/s)\n\n| provider | fs |");
        let names: Vec<&String> = self
            .results
            .first()
            .map(|e| e.run.ops_per_s.keys().collect())
            .unwrap_or_default();
        for n in &names {
            let _ = write!(s, " {n} |");
        }
        s.push_str("\n|---|---|");
        s.push_str(&"--:|".repeat(names.len()));
        s.push('\n');
        for e in &self.results {
            let _ = write!(s, "| {} | {} |", e.run.provider, e.run.fs);
            for n in &names {
                let v = e.run.ops_per_s.get(*n).copied().unwrap_or(0.0);
                let _ = write!(s, " {v:.0} |");
            }
            s.push('\n');
        }
    }

    /// What did not run here, and the findings' notes.
    fn skipped_and_findings(&self, s: &mut String) {
        if !self.skipped.is_empty() {
            s.push_str("\n### Not run on this machine\n\n");
            for k in &self.skipped {
                let _ = writeln!(
                    s,
                    "- {}/{}: {}{}",
                    k.provider,
                    k.fs,
                    if k.requested {
                        "**FAIL** (requested, cannot run here): "
                    } else {
                        "skipped: "
                    },
                    k.reason
                );
            }
        }

        let noted: Vec<&Entry> = self
            .results
            .iter()
            .filter(|e| !e.summary.notes.is_empty())
            .collect();
        if !noted.is_empty() {
            s.push_str("\n### Findings\n\n");
            for e in noted {
                for n in &e.summary.notes {
                    let _ = writeln!(s, "- {}/{}: {}", e.run.provider, e.run.fs, one_line(n));
                }
            }
        }
    }
}

fn ms(s: &Option<Stats>) -> String {
    match s {
        Some(s) if s.median >= 100.0 => format!("{:.0} ms", s.median),
        Some(s) => format!("{:.1} ms", s.median),
        None => "–".into(),
    }
}

/// One line, at most 300 characters (an integrity report can be long; JSON has it all).
pub fn one_line(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::workloads::Workload;
    use serde_json::Value;

    pub fn combo(provider: &str, consistent: bool, cycles: Vec<Vec<Invariant>>) -> ComboReport {
        ComboReport {
            provider: provider.into(),
            fs: "ext4".into(),
            filesystems: 2,
            cycles_requested: Some(cycles.len() as u32),
            budget_s: None,
            duration_s: 1.0,
            ops_per_s: BTreeMap::new(),
            error: None,
            cycles: cycles
                .into_iter()
                .enumerate()
                .map(|(i, v)| CycleRecord {
                    cycle: i as u32 + 1,
                    consistent: Some(consistent),
                    ready_ms: Some(10.0 + i as f64),
                    exit: Some(0),
                    violations: v
                        .into_iter()
                        .map(|invariant| Violation {
                            invariant,
                            detail: "x".into(),
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    pub fn header() -> Header {
        Header {
            tool: Tool {
                name: "snapshot-certify".into(),
                version: Some("0.1.0".into()),
            },
            snapshot: Binary {
                path: "/usr/sbin/snapshot".into(),
                version: Some("snapshot 0.1.0".into()),
            },
            kernel: "6.1".into(),
            os: Some("Debian GNU/Linux 12 (bookworm)".into()),
            cycles: Some(2),
            duration_budget_s: None,
            client: crate::client::Client::Copy,
        }
    }

    #[test]
    fn verdicts() {
        let pair = Invariant::Of(Workload::PairHook);
        let info = Invariant::Of(Workload::PairNoHook);
        let pit = Invariant::PointInTime;
        assert_eq!(
            combo("btrfs", true, vec![vec![], vec![info]])
                .summary()
                .verdict,
            Verdict::Pass
        );
        assert_eq!(
            combo("btrfs", true, vec![vec![], vec![pit]])
                .summary()
                .verdict,
            Verdict::Fail
        );
        assert_eq!(
            combo("bind", false, vec![vec![pit], vec![pair]])
                .summary()
                .verdict,
            Verdict::Caught { after: 2 }
        );
        // Only "too new" or the informational pair: the content checks caught nothing.
        assert_eq!(
            combo("bind", false, vec![vec![pit, info], vec![]])
                .summary()
                .verdict,
            Verdict::TooWeak
        );
        let mut leaky = combo("btrfs", true, vec![vec![]]);
        leaky.cycles[0].leaks.push("x".into());
        assert_eq!(leaky.summary().verdict, Verdict::Fail);
        let mut leaky = combo("bind", false, vec![vec![pair]]);
        leaky.cycles[0].leaks.push("x".into());
        assert_eq!(leaky.summary().verdict, Verdict::Fail);
    }

    #[test]
    fn renders_markdown_and_json() {
        let r = Report::new(
            header(),
            vec![
                combo("btrfs", true, vec![vec![], vec![]]),
                combo(
                    "bind",
                    false,
                    vec![vec![Invariant::Of(Workload::PairHook)], vec![]],
                ),
            ],
            vec![Skipped {
                provider: "lvm".into(),
                fs: "ext4".into(),
                reason: "missing device-mapper".into(),
                requested: false,
            }],
        );
        assert!(r.ok);
        assert!(r
            .markdown()
            .contains("- lvm/ext4: skipped: missing device-mapper"));
        let md = r.markdown();
        assert!(md.contains("| btrfs | 2 × ext4 | 2 | consistent | 0 | 0 | 0 | 10.5 ms"));
        assert!(
            md.contains("negative control: caught after 1 cycle |"),
            "{md}"
        );
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["schema_version"], SCHEMA_VERSION);
        assert_eq!(j["skipped"][0]["requested"], false);
        assert_eq!(j["results"][1]["summary"]["verdict"], "caught");
        assert_eq!(j["results"][1]["summary"]["after"], 1);
        assert_eq!(
            j["results"][1]["summary"]["cycles_violating"]["pair-hook"],
            1
        );
    }

    /// Checks `value` against the subset of JSON Schema that `report.schema.json` uses;
    /// stricter than the schema in one way: an object key the schema does not document is an
    /// error (so that the document keeps up with the code).
    fn validate(schema: &Value, root: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/$defs/").expect("local $ref");
            return validate(&root["$defs"][name], root, value, at, errors);
        }
        if let Some(c) = schema.get("const") {
            if c != value {
                errors.push(format!("{at}: {value} is not {c}"));
            }
        }
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            if !e.contains(value) {
                errors.push(format!("{at}: {value} not in {e:?}"));
            }
        }
        if let Some(ty) = schema.get("type") {
            let types: Vec<&str> = match ty {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => panic!("{at}: type {ty}"),
            };
            let is = |t: &str| match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "null" => value.is_null(),
                _ => panic!("{at}: type {t}"),
            };
            if !types.iter().any(|t| is(t)) {
                errors.push(format!("{at}: {value} is not {types:?}"));
                return;
            }
        }
        if let (Some(min), Some(v)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) {
            if v < min {
                errors.push(format!("{at}: {v} < {min}"));
            }
        }
        if let Some(obj) = value.as_object() {
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap();
                if !obj.contains_key(r) {
                    errors.push(format!("{at}: {r} missing"));
                }
            }
            for (k, v) in obj {
                let at = format!("{at}.{k}");
                match (
                    schema.get("properties").and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) | (None, Some(s)) => validate(s, root, v, &at, errors),
                    (None, None) => errors.push(format!("{at}: not in the schema")),
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
            for (i, v) in arr.iter().enumerate() {
                validate(items, root, v, &format!("{at}[{i}]"), errors);
            }
        }
    }

    #[test]
    fn the_json_report_follows_its_schema() {
        let schema: Value =
            serde_json::from_str(include_str!("../report.schema.json")).expect("schema parses");
        let mut report = crate::qa::tests::report();
        // Every optional field filled somewhere.
        let c = &mut report.results[0].run.cycles[0];
        c.session = Some("s".into());
        c.frozen_ms = Some(1.5);
        c.teardown_ms = Some(2.0);
        c.failure = Some("exit status 70".into());
        report.results[0].run.error = Some("stopping after cycle 1".into());
        report.results[0].run.ops_per_s.insert("log".into(), 10.0);
        report.header.duration_budget_s = Some(60.0);
        let report = Report::new(
            report.header.clone(),
            report.results.into_iter().map(|e| e.run).collect(),
            report.skipped,
        );
        let value: Value = serde_json::from_str(&report.json()).unwrap();
        let mut errors = Vec::new();
        validate(&schema, &schema, &value, "$", &mut errors);
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(value["schema_version"], SCHEMA_VERSION);
        // The validator catches what it should.
        let mut broken = value.clone();
        broken["results"][0]["summary"]["verdict"] = "maybe".into();
        broken["results"][0]["extra"] = 1.into();
        broken["skipped"][0]
            .as_object_mut()
            .unwrap()
            .remove("reason");
        let mut errors = Vec::new();
        validate(&schema, &schema, &broken, "$", &mut errors);
        assert_eq!(errors.len(), 3, "{errors:#?}");
    }
}
