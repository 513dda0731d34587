//! The journal's format: one JSON object per line, written as the run goes,
//! so that a run killed at any moment leaves what it did on disk. Version 2
//! (documented in the book's reference, `reference/journal.md`):
//!
//! - `header`: the job, its inputs' digests, the hosts and each step's
//!   shape, written before anything connects;
//! - `intent`: written before each change on a host (step, host, unit,
//!   action, the unit's InvocationID before it), so that a resume can tell
//!   whether the change happened;
//! - `result`: a step × host's final result (the report's `results[]`);
//! - `resumed`: a resume continued the journal from here;
//! - `end`: the run ended, with its outcome.
//!
//! A skip caused by an abort, a cancel, a signal or the window's close is a
//! result line like any other, but not final for a resume: that host's step
//! never ran.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::error::{Error, Position, Result};
use crate::model::outcome::{Kind, Status};
use crate::model::report::{Inputs, JobResult, RunOutcome};

/// The journal format this drover writes and reads.
pub const VERSION: u32 = 2;

/// One line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    /// The first line.
    Header(Header),
    /// A change is about to be made.
    Intent(Intent),
    /// A final result (or a skip that a resume redoes).
    Result(JobResult),
    /// A resume continued the journal.
    Resumed {
        /// When.
        at: String,
    },
    /// The run ended.
    End {
        /// How.
        outcome: RunOutcome,
        /// When.
        finished_at: String,
    },
}

/// What a journal is of, written before the run connects to anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// The run's id.
    pub job_id: String,
    /// The playbook's name.
    pub playbook: String,
    /// When the run started.
    pub started_at: String,
    /// The playbook and inventory files as given, and `--limit`, so that a
    /// resume can name what it needs.
    #[serde(default)]
    pub files: Files,
    /// Digests of the playbook, the inventory and the parameters.
    pub inputs: Inputs,
    /// The parameters' values (secret ones left out).
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The job this one retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// Every host some step may work on.
    pub hosts: Vec<String>,
    /// Each step's hosts and batches, in DAG order.
    pub steps: Vec<StepShape>,
}

/// Where a run's inputs came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Files {
    /// The playbook file (absolute when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    /// The inventory (absolute when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    /// `--limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The report file the run writes at its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

/// One step's hosts as the run started it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepShape {
    /// The step id.
    pub step: String,
    /// Its fixed hosts (inventory order).
    pub hosts: Vec<String>,
    /// How many `_any` picks it makes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub any: usize,
    /// Hosts per rolling batch (`serial`), 0 for all at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub serial: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A change about to be made on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// The step id.
    pub step: String,
    /// The host.
    pub host: String,
    /// The unit (or the script module's name).
    pub unit: String,
    /// The operations, `+`-joined (`restart`, `unmask+start`).
    pub action: String,
    /// The unit's InvocationID before the change (empty when not read).
    #[serde(default)]
    pub invocation_id: String,
    /// When.
    pub at: String,
}

/// A journal read back.
#[derive(Debug, Clone)]
pub struct Read {
    /// Its header.
    pub header: Header,
    /// Every result line, in order (a later line for the same step × host
    /// replaces an earlier one).
    pub results: Vec<JobResult>,
    /// Intents with no result after them: changes that may have been
    /// under way when the run died, by (step, host).
    pub in_flight: BTreeMap<(String, String), Intent>,
    /// How the last run over it ended, if it got that far.
    pub end: Option<RunOutcome>,
}

impl Read {
    /// The last result of each step × host (a resume may have written a
    /// host's step again), in journal order: what a report holds.
    pub fn last_results(&self) -> Vec<&JobResult> {
        let mut last: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (i, r) in self.results.iter().enumerate() {
            last.insert((&r.step, &r.hostname), i);
        }
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        keep.into_iter().map(|i| &self.results[i]).collect()
    }

    /// The results a resume keeps: the last of each step × host, when it
    /// is final.
    pub fn final_results(&self) -> Vec<&JobResult> {
        self.last_results()
            .into_iter()
            .filter(|r| is_final(r))
            .collect()
    }

    /// How the run over this journal ended, when that leaves nothing to
    /// resume (it completed or aborted; an interrupted run can go on).
    pub fn ended(&self) -> Option<RunOutcome> {
        self.end.filter(|e| *e != RunOutcome::Interrupted)
    }
}

/// Whether a result stands for a resume: everything but a skip caused by
/// the run stopping (an abort, a cancel, a signal, the window's close).
pub fn is_final(r: &JobResult) -> bool {
    !(r.status == Status::Skipped && matches!(r.kind, Some(Kind::Aborted | Kind::Interrupted)))
}

/// Read a journal's text (`path` names it in errors). The last line may be
/// cut short by a kill and is then ignored; any other bad line is an error.
pub fn parse(path: &Path, text: &str) -> Result<Read> {
    let bad = |line: usize, col: usize, msg: String| {
        Error::invalid(
            "journal",
            "",
            msg,
            Some(Position::at(path, text, line as u64, col as u64)),
        )
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut header = None;
    let mut results = Vec::new();
    let mut in_flight = BTreeMap::new();
    let mut end = None;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = match serde_json::from_str(line) {
            Ok(r) => r,
            // Only the last line can be half-written.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) if i == 0 => {
                let version = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
                let msg = match version {
                    Some(v) if v != u64::from(VERSION) => format!(
                        "journal format {v}; this drover reads format {VERSION}"
                    ),
                    _ if !line.contains("\"type\"") => format!(
                        "a journal from a drover before format {VERSION}: it can be read as a report but not resumed; use --retry with its report instead"
                    ),
                    _ => format!("not a journal header: {e}"),
                };
                return Err(bad(1, 1, msg));
            }
            Err(e) => return Err(bad(i + 1, e.column(), e.to_string())),
        };
        match (record, header.is_some()) {
            (Record::Header(h), false) => {
                if h.version != VERSION {
                    return Err(bad(
                        1,
                        1,
                        format!(
                            "journal format {}; this drover reads format {VERSION}",
                            h.version
                        ),
                    ));
                }
                header = Some(h);
            }
            (_, false) => return Err(bad(i + 1, 1, "the first line is not a header".into())),
            (Record::Header(_), true) => return Err(bad(i + 1, 1, "a second header line".into())),
            (Record::Intent(t), true) => {
                in_flight.insert((t.step.clone(), t.host.clone()), t);
            }
            (Record::Result(r), true) => {
                in_flight.remove(&(r.step.clone(), r.hostname.clone()));
                results.push(r);
            }
            (Record::Resumed { .. }, true) => end = None,
            (Record::End { outcome, .. }, true) => end = Some(outcome),
        }
    }
    let header = header.ok_or_else(|| bad(1, 1, "empty journal: no header line".into()))?;
    Ok(Read {
        header,
        results,
        in_flight,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> String {
        serde_json::to_string(&Record::Header(Header {
            version: VERSION,
            job_id: "j1".into(),
            playbook: "p".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            files: Files::default(),
            inputs: Inputs::default(),
            params: Default::default(),
            retry_of: None,
            hosts: vec!["a".into(), "b".into()],
            steps: Vec::new(),
        }))
        .unwrap()
    }

    fn result(host: &str, status: &str, kind: Option<&str>) -> String {
        let mut v = serde_json::json!({"type": "result", "hostname": host, "status": status,
            "name": "u.service", "changed": false, "step": "s", "action": "none", "duration_ms": 0});
        if let Some(k) = kind {
            v["kind"] = k.into();
        }
        v.to_string()
    }

    #[test]
    fn a_cut_last_line_is_ignored_and_intents_without_results_are_in_flight() {
        let intent = serde_json::json!({"type": "intent", "step": "s", "host": "b",
            "unit": "u.service", "action": "restart", "invocation_id": "abc", "at": "t"});
        let text = format!(
            "{}\n{}\n{}\n{{\"type\":\"resu",
            header(),
            result("a", "ok", None),
            intent
        );
        let r = parse(Path::new("j"), &text).unwrap();
        assert_eq!(r.results.len(), 1);
        assert_eq!(r.in_flight.len(), 1);
        assert_eq!(r.in_flight[&("s".into(), "b".into())].invocation_id, "abc");
        assert!(r.end.is_none());
    }

    #[test]
    fn skips_of_a_stopped_run_are_not_final() {
        let text = format!(
            "{}\n{}\n{}\n",
            header(),
            result("a", "skipped", Some("interrupted")),
            result("b", "skipped", Some("when"))
        );
        let r = parse(Path::new("j"), &text).unwrap();
        let kept: Vec<_> = r
            .final_results()
            .iter()
            .map(|r| r.hostname.clone())
            .collect();
        assert_eq!(kept, ["b"]);
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_with_its_line() {
        let text = format!("{}\nnot json\n{}\n", header(), result("a", "ok", None));
        let e = parse(Path::new("j"), &text).unwrap_err();
        assert!(e.details().contains("j line 2"), "{}", e.details());
    }

    #[test]
    fn an_old_journal_says_what_to_do_instead() {
        let text = "{\"job_id\":\"x\",\"playbook\":\"p\",\"started_at\":\"t\"}\n";
        let e = parse(Path::new("j"), text).unwrap_err();
        assert!(e.details().contains("--retry"), "{}", e.details());
    }
}
