//! Metrics as Prometheus text (exposition format 0.0.4, through the
//! `prometheus-client` crate): the gauges of a one-shot run that `drover
//! apply --metrics-file` leaves for node_exporter's textfile collector, and
//! the label values every drover metric uses, chosen so that a metric's
//! series stay bounded: a playbook's file name rather than its free-text
//! `name:`, words of fixed sets for statuses and kinds, never a job id.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::model::outcome::Status;
use crate::model::report::JobReport;

/// The `playbook` label of a job: its file's name without the extension
/// (a runbook's name in `drover serve`), or for the one-step jobs the
/// command line and the routes make, which have no file, the operation
/// (`<drover service>` is `drover-service`).
pub fn playbook_label(path: &Path) -> String {
    let text = path.to_string_lossy();
    if let Some(inner) = text.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        return inner.replace(' ', "-");
    }
    match path.file_stem().map(|s| s.to_string_lossy()) {
        Some(stem) if !stem.is_empty() => stem.into_owned(),
        _ => "playbook".into(),
    }
}

/// Whether a job is one of those one-step operations (their step ids
/// hold the unit a request named, so they are no label).
pub fn is_adhoc(path: &Path) -> bool {
    path.to_string_lossy().starts_with('<')
}

/// A value of a fixed set (a status, a kind, an outcome) as the report
/// spells it.
pub fn word(v: impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".into(),
    }
}

/// What a run left for the textfile collector.
#[derive(Debug, Clone)]
pub struct LastRun<'a> {
    /// The `playbook` label ([`playbook_label`]).
    pub playbook: &'a str,
    /// When it ended, in Unix seconds.
    pub finished: f64,
    /// How long it took, in seconds.
    pub duration: f64,
    /// Its exit code (0: success).
    pub exit_code: i32,
    /// Its report, when it got as far as one (not when refused).
    pub report: Option<&'a JobReport>,
    /// When this playbook last succeeded, this run or an earlier one.
    pub last_success: Option<f64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaybookLabels {
    playbook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    playbook: String,
    status: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// The textfile: gauges, since a one-shot run's counters would start
/// from zero every time; one file per playbook, each series labelled
/// with it, so that the files of two playbooks never collide.
pub fn textfile(run: &LastRun) -> String {
    let mut registry = Registry::default();
    let pb = PlaybookLabels {
        playbook: run.playbook.to_string(),
    };
    let gauge = |registry: &mut Registry, name: &str, help: &str, v: Option<f64>| {
        let family = Family::<PlaybookLabels, F64Gauge>::default();
        if let Some(v) = v {
            family.get_or_create(&pb).set(v);
        }
        registry.register(name, help, family);
    };
    gauge(
        &mut registry,
        "drover_last_run_timestamp_seconds",
        "When the last run of the playbook ended (Unix time)",
        Some(run.finished),
    );
    gauge(
        &mut registry,
        "drover_last_success_timestamp_seconds",
        "When a run of the playbook last succeeded (exit 0; Unix time)",
        run.last_success,
    );
    gauge(
        &mut registry,
        "drover_last_run_duration_seconds",
        "How long the last run took",
        Some(run.duration),
    );
    gauge(
        &mut registry,
        "drover_last_run_success",
        "1 if the last run exited 0, else 0",
        Some(if run.exit_code == 0 { 1.0 } else { 0.0 }),
    );
    gauge(
        &mut registry,
        "drover_last_run_exit_code",
        "The last run's exit code (book: reference/exit-codes.md)",
        Some(f64::from(run.exit_code)),
    );
    let results = Family::<ResultLabels, F64Gauge>::default();
    let mut counts = [
        (Status::Ok, 0u32),
        (Status::Failed, 0),
        (Status::Skipped, 0),
    ];
    for r in run.report.map(|r| r.results.as_slice()).unwrap_or_default() {
        if let Some(c) = counts.iter_mut().find(|(s, _)| *s == r.status) {
            c.1 += 1;
        }
    }
    for (status, n) in counts {
        results
            .get_or_create(&ResultLabels {
                playbook: run.playbook.to_string(),
                status: word(status),
            })
            .set(f64::from(n));
    }
    registry.register(
        "drover_last_run_results",
        "Results (host x step) of the last run, by status",
        results,
    );
    encode(&registry)
}

/// The registry as Prometheus text.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String fails only if an encoder reports an error, which
    // those of gauges, counters and histograms never do.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
    text
}

/// `drover_last_success_timestamp_seconds` of a textfile this module
/// wrote, to carry over a success past runs that fail.
pub fn previous_success(text: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with("drover_last_success_timestamp_seconds{"))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_file_names_or_the_operation_never_free_text() {
        assert_eq!(
            playbook_label(Path::new("/etc/drover/nightly-restart.yml")),
            "nightly-restart"
        );
        assert_eq!(
            playbook_label(Path::new("<drover service>")),
            "drover-service"
        );
        assert!(is_adhoc(Path::new("<consul register>")));
        assert!(!is_adhoc(Path::new("runbooks/roll.yaml")));
        assert_eq!(word(Status::Skipped), "skipped");
        assert_eq!(
            word(crate::model::outcome::Kind::ConnectionLost),
            "connection-lost"
        );
    }

    #[test]
    fn the_last_success_is_read_back_from_a_textfile() {
        let text = textfile(&LastRun {
            playbook: "nightly",
            finished: 1.0,
            duration: 0.0,
            exit_code: 3,
            report: None,
            last_success: Some(1_699_990_000.5),
        });
        assert_eq!(previous_success(&text), Some(1_699_990_000.5));
        let never = textfile(&LastRun {
            last_success: None,
            playbook: "nightly",
            finished: 1.0,
            duration: 0.0,
            exit_code: 3,
            report: None,
        });
        assert_eq!(previous_success(&never), None);
        assert!(never.contains("drover_last_run_results{playbook=\"nightly\",status=\"ok\"} 0.0"));
    }
}
