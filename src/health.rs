//! Health: per host, a unit's state plus configured checks aggregated into
//! passing, warning or critical — the levels of Consul and the exit codes
//! of the monitoring-plugin convention.
//!
//! Rules (README "Health"):
//! - unit: `active` passing; `activating`/`reloading`/`deactivating`
//!   warning; anything else (inactive, failed, not found) critical; a unit
//!   or host in maintenance is critical with the reason as its note.
//! - http (from the controller): 2xx passing, 429 warning, anything else
//!   or no answer critical (Consul's rule).
//! - tcp (from the controller): connects passing, else critical.
//! - command (on the host, `sh -c CMD`): exit 0 passing, 1 warning, other
//!   critical (Consul's and the monitoring-plugin rule).
//!
//! A host is its worst check; an unreachable host is unknown. Over hosts
//! the result is critical if any host is, else unknown if any is, else
//! warning if any is, else passing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::carrier::Session;
use crate::facts::{Maintenance, UnitFacts};
use crate::unit::UnitName;

/// A health level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// All good.
    Passing,
    /// Degraded but serving.
    Warning,
    /// Down (or in maintenance).
    Critical,
    /// Could not be determined (host unreachable, check error).
    Unknown,
}

impl Health {
    /// Severity rank for "worst of": passing < warning < unknown < critical.
    pub fn rank(self) -> u8 {
        match self {
            Health::Passing => 0,
            Health::Warning => 1,
            Health::Unknown => 2,
            Health::Critical => 3,
        }
    }

    /// The worse of two levels.
    pub fn worst(self, other: Health) -> Health {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// Whether this level is at least as good as `required` (a gate).
    pub fn satisfies(self, required: Health) -> bool {
        self.rank() <= required.rank() && self != Health::Unknown
    }

    /// Monitoring-plugin exit code: 0 passing, 1 warning, 2 critical, 3 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Health::Passing => 0,
            Health::Warning => 1,
            Health::Critical => 2,
            Health::Unknown => 3,
        }
    }

    /// Upper-case word, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "PASSING",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
            Health::Unknown => "UNKNOWN",
        }
    }
}

/// The health of a unit from its state and maintenance flag.
pub fn unit_health(u: &UnitFacts, maintenance: Option<&Maintenance>) -> (Health, String) {
    if let Some(m) = maintenance {
        return (Health::Critical, format!("in maintenance: {}", m.reason));
    }
    let word = format!("{} ({})", u.active_state, u.sub_state);
    match u.active_state.as_str() {
        "active" => (Health::Passing, word),
        "activating" | "reloading" | "deactivating" => (Health::Warning, word),
        _ if u.load_state == "not-found" => (Health::Critical, "unit not found".into()),
        _ => (Health::Critical, word),
    }
}

/// Health of an HTTP status line's code (Consul: 2xx passing, 429 warning).
pub fn http_health(code: u16) -> Health {
    match code {
        200..=299 => Health::Passing,
        429 => Health::Warning,
        _ => Health::Critical,
    }
}

/// Health of a check command's exit status.
pub fn command_health(code: Option<i32>) -> Health {
    match code {
        Some(0) => Health::Passing,
        Some(1) => Health::Warning,
        _ => Health::Critical,
    }
}

/// One check's outcome on one host.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// unit, http, tcp or command.
    pub check: String,
    /// What was checked (unit name, URL, address, command).
    pub target: String,
    /// Its level.
    pub status: Health,
    /// Why, for people.
    pub note: String,
}

/// Checks configured for a unit, already rendered for one host.
#[derive(Debug, Clone, Default)]
pub struct HostChecks {
    /// URLs (http:// only).
    pub http: Vec<String>,
    /// `host:port` addresses.
    pub tcp: Vec<String>,
    /// Shell commands run on the host.
    pub command: Vec<String>,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// GET an http:// URL with a minimal HTTP/1.0 client; the status code.
pub async fn http_status(url: &str) -> std::result::Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}`: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: drover\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "no HTTP status line".to_string())
}

/// Run every check of one host; the unit's own state comes first.
pub async fn check_host(
    session: Option<&Session>,
    unit_state: (Health, String),
    unit: &UnitName,
    checks: &HostChecks,
) -> Vec<CheckResult> {
    let mut out = vec![CheckResult {
        check: "unit".into(),
        target: unit.to_string(),
        status: unit_state.0,
        note: unit_state.1,
    }];
    for url in &checks.http {
        let (status, note) = match tokio::time::timeout(CHECK_TIMEOUT, http_status(url)).await {
            Ok(Ok(code)) => (http_health(code), format!("HTTP {code}")),
            Ok(Err(e)) => (Health::Critical, e),
            Err(_) => (Health::Critical, "timed out".into()),
        };
        out.push(CheckResult {
            check: "http".into(),
            target: url.clone(),
            status,
            note,
        });
    }
    for addr in &checks.tcp {
        let (status, note) =
            match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => (Health::Passing, "connected".into()),
                Ok(Err(e)) => (Health::Critical, e.to_string()),
                Err(_) => (Health::Critical, "timed out".into()),
            };
        out.push(CheckResult {
            check: "tcp".into(),
            target: addr.clone(),
            status,
            note,
        });
    }
    for cmd in &checks.command {
        let (status, note) = match session {
            None => (Health::Unknown, "no session to run the command".into()),
            Some(s) => match tokio::time::timeout(CHECK_TIMEOUT, s.run("sh", &["-c", cmd])).await {
                Ok(Ok(o)) => {
                    let mut text = String::from_utf8_lossy(&o.stdout).trim().to_string();
                    if text.is_empty() {
                        text = String::from_utf8_lossy(&o.stderr).trim().to_string();
                    }
                    text.truncate(200);
                    let code = o.status.code();
                    (
                        command_health(code),
                        format!(
                            "exit {}{}",
                            code.map_or("signal".to_string(), |c| c.to_string()),
                            if text.is_empty() {
                                String::new()
                            } else {
                                format!(": {text}")
                            }
                        ),
                    )
                }
                Ok(Err(e)) => (Health::Unknown, e.to_string()),
                Err(_) => (Health::Critical, "timed out".into()),
            },
        };
        out.push(CheckResult {
            check: "command".into(),
            target: cmd.clone(),
            status,
            note,
        });
    }
    out
}

/// The worst level of a list of checks (passing when empty).
pub fn worst_of<'a>(it: impl IntoIterator<Item = &'a Health>) -> Health {
    it.into_iter().fold(Health::Passing, |acc, h| acc.worst(*h))
}

/// One host's aggregated health.
#[derive(Debug, Clone, Serialize)]
pub struct HostHealth {
    /// The host's inventory name.
    pub hostname: String,
    /// The worst of its checks (unknown when unreachable).
    pub status: Health,
    /// The note of the worst check (e.g. the maintenance reason).
    pub note: String,
    /// Every check, the unit's own state first.
    pub checks: Vec<CheckResult>,
}

/// The whole `health` output.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// The unit.
    pub unit: String,
    /// The worst over the hosts.
    pub status: Health,
    /// Per host, in inventory order.
    pub hosts: Vec<HostHealth>,
}

/// Aggregate over hosts: critical if any, else unknown if any, else
/// warning if any, else passing.
pub fn aggregate(unit: &UnitName, hosts: Vec<HostHealth>) -> HealthReport {
    HealthReport {
        unit: unit.to_string(),
        status: worst_of(hosts.iter().map(|h| &h.status)),
        hosts,
    }
}

fn host_health(hostname: &str, checks: Vec<CheckResult>) -> HostHealth {
    let worst = checks
        .iter()
        .fold(None::<&CheckResult>, |acc, c| match acc {
            Some(a) if a.status.rank() >= c.status.rank() => Some(a),
            _ => Some(c),
        });
    HostHealth {
        hostname: hostname.to_string(),
        status: worst.map_or(Health::Passing, |c| c.status),
        note: worst.map(|c| c.note.clone()).unwrap_or_default(),
        checks,
    }
}

/// Text: the worst level with counts, then one line per host.
pub fn render_text(r: &HealthReport, color: bool) -> String {
    use owo_colors::OwoColorize;
    let paint = |h: Health| {
        let w = h.as_str();
        if !color {
            return w.to_string();
        }
        match h {
            Health::Passing => w.green().to_string(),
            Health::Warning => w.yellow().to_string(),
            Health::Critical => w.red().bold().to_string(),
            Health::Unknown => w.magenta().to_string(),
        }
    };
    let count = |h: Health| r.hosts.iter().filter(|x| x.status == h).count();
    let mut out = format!(
        "HEALTH {} {}: {} passing, {} warning, {} critical, {} unknown\n",
        paint(r.status),
        r.unit,
        count(Health::Passing),
        count(Health::Warning),
        count(Health::Critical),
        count(Health::Unknown)
    );
    let width = r.hosts.iter().map(|h| h.hostname.len()).max().unwrap_or(0);
    for h in &r.hosts {
        let pad = " ".repeat(8usize.saturating_sub(h.status.as_str().len()));
        out.push_str(&format!(
            "{:<width$}  {}{pad}  {}\n",
            h.hostname,
            paint(h.status),
            h.note
        ));
    }
    out
}

/// `drover health UNIT`: exit 0 passing, 1 warning, 2 critical, 3 unknown.
pub fn health_cmd(a: &crate::cli::HealthArgs, color: bool) -> crate::error::Result<i32> {
    use crate::error::Error;
    let inv = crate::inventory::Inventory::load(&a.inventory)?;
    let hosts = crate::live::select_hosts(&inv, a.target.as_deref())?;
    let unit =
        UnitName::parse(&a.unit).map_err(|m| Error::Usage(format!("UNIT `{}`: {m}", a.unit)))?;
    let mut templates = crate::template::Templates::new(&Default::default())?;
    let mut add = |flag: &str, v: &[String]| -> crate::error::Result<Vec<usize>> {
        v.iter()
            .map(|s| {
                templates
                    .add_string(s)
                    .map_err(|m| Error::Usage(format!("--{flag} `{s}`: {m}")))
            })
            .collect()
    };
    let (http, tcp, command) = (
        add("http", &a.http)?,
        add("tcp", &a.tcp)?,
        add("command", &a.command)?,
    );
    // Render every check for every host before connecting anywhere.
    let per_host: Vec<HostChecks> = hosts
        .iter()
        .map(|h| {
            let ctx = templates.host_context(h);
            let r = |ids: &[usize], flag: &str| -> crate::error::Result<Vec<String>> {
                ids.iter()
                    .map(|t| {
                        templates.render(*t, &ctx).map_err(|m| {
                            Error::Usage(format!("--{flag} for host `{}`: {m}", h.name))
                        })
                    })
                    .collect()
            };
            Ok(HostChecks {
                http: r(&http, "http")?,
                tcp: r(&tcp, "tcp")?,
                command: r(&command, "command")?,
            })
        })
        .collect::<crate::error::Result<_>>()?;
    let rt = crate::live::runtime()?;
    let unit_ref = &unit;
    let per_host_ref = &per_host;
    let results = rt.block_on(crate::fanout::fan_out(
        &hosts,
        a.forks,
        |i, session| async move {
            let sd = session.systemd();
            let (facts, maint) = tokio::join!(
                sd.unit_facts(std::slice::from_ref(unit_ref)),
                crate::maintenance::read(&session)
            );
            let u = facts?
                .remove(unit_ref.as_str())
                .unwrap_or_else(UnitFacts::not_found);
            let checks = match maint {
                Ok(m) => {
                    let flag = m.host.as_ref().or_else(|| m.units.get(unit_ref.as_str()));
                    let state = unit_health(&u, flag);
                    check_host(Some(&session), state, unit_ref, &per_host_ref[i]).await
                }
                Err(e) => {
                    check_host(
                        Some(&session),
                        (Health::Unknown, e),
                        unit_ref,
                        &per_host_ref[i],
                    )
                    .await
                }
            };
            Ok::<_, crate::fanout::HostError>(checks)
        },
    ));
    let hosts_health: Vec<HostHealth> = results
        .into_iter()
        .map(|r| match r.result {
            Ok(checks) => host_health(&r.host, checks),
            Err(e) => HostHealth {
                hostname: r.host.clone(),
                status: Health::Unknown,
                note: e.to_string(),
                checks: Vec::new(),
            },
        })
        .collect();
    let report = aggregate(&unit, hosts_health);
    if a.format == crate::cli::ReportFormat::Json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Internal(format!("cannot serialise health: {e}")))?;
        outln!("{text}");
    } else {
        use std::io::IsTerminal;
        out!(
            "{}",
            render_text(&report, color && std::io::stdout().is_terminal())
        );
    }
    Ok(report.status.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: Health, note: &str) -> CheckResult {
        CheckResult {
            check: "command".into(),
            target: "x".into(),
            status,
            note: note.into(),
        }
    }

    #[test]
    fn worst_wins_and_exit_codes_follow_the_plugin_convention() {
        let u = UnitName::parse("demo-web").unwrap();
        let r = aggregate(
            &u,
            vec![
                host_health("a", vec![check(Health::Passing, "ok")]),
                host_health(
                    "b",
                    vec![check(Health::Passing, "ok"), check(Health::Warning, "slow")],
                ),
            ],
        );
        assert_eq!(r.status, Health::Warning);
        assert_eq!(r.hosts[1].note, "slow");
        assert_eq!(r.status.exit_code(), 1);
        assert_eq!(Health::Critical.worst(Health::Unknown), Health::Critical);
        assert_eq!(Health::Unknown.worst(Health::Warning), Health::Unknown);
        assert!(Health::Passing.satisfies(Health::Warning));
        assert!(!Health::Warning.satisfies(Health::Passing));
        assert_eq!(http_health(204), Health::Passing);
        assert_eq!(http_health(429), Health::Warning);
        assert_eq!(http_health(503), Health::Critical);
        assert_eq!(command_health(Some(1)), Health::Warning);
        assert_eq!(command_health(Some(2)), Health::Critical);
    }

    #[test]
    fn maintenance_is_critical_with_its_reason() {
        let mut u = UnitFacts::not_found();
        u.load_state = "loaded".into();
        u.active_state = "active".into();
        let m = Maintenance {
            reason: "disk swap".into(),
            since: "t".into(),
        };
        assert_eq!(
            unit_health(&u, Some(&m)),
            (Health::Critical, "in maintenance: disk swap".into())
        );
        assert_eq!(unit_health(&u, None).0, Health::Passing);
    }
}
