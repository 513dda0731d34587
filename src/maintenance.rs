//! Maintenance mode: a host or one of its units set aside, with a reason
//! and a time. The flag lives ON the host, in [`STATE_FILE`], so it
//! survives reboots and is seen by every drover that reads the host; facts
//! carry it, `plan` and `apply` skip what is in maintenance, `status` and
//! `health` show it.
//!
//! The file is read with a constant remote command and written by a
//! constant remote script that takes the JSON document on stdin and
//! renames it into place: no user data is ever part of a command line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::carrier::Session;
use crate::cli::ReportFormat;
use crate::error::{Error, Result};
use crate::facts::{HostFacts, Maintenance};
use crate::module::Action;
use crate::unit::UnitName;

/// Where the maintenance state of a host is kept, on the host.
pub const STATE_FILE: &str = "/var/lib/drover/maintenance.json";

/// The report name of a host-wide maintenance result: the root slice, the
/// unit that contains everything on the host.
pub const HOST_SCOPE: &str = "-.slice";

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// Prints the file if it exists, nothing otherwise (a constant script).
const READ_SCRIPT: &str =
    "f=/var/lib/drover/maintenance.json; if [ -e \"$f\" ]; then cat \"$f\"; fi";

/// Writes stdin to the state file atomically: temp file in the same
/// directory, flushed, renamed over the old one (a constant script).
const WRITE_SCRIPT: &str = "set -e; umask 022; mkdir -p /var/lib/drover; \
t=$(mktemp /var/lib/drover/.maintenance.json.XXXXXX); \
trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; chmod 644 \"$t\"; sync \"$t\" 2>/dev/null || true; \
mv -f \"$t\" /var/lib/drover/maintenance.json; trap - EXIT";

/// The content of [`STATE_FILE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceState {
    /// Format version ([`STATE_VERSION`]).
    #[serde(default)]
    pub version: u32,
    /// Host-wide maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Maintenance>,
    /// Per-unit maintenance, by full unit name.
    #[serde(default)]
    pub units: BTreeMap<String, Maintenance>,
}

impl MaintenanceState {
    /// The state recorded in a host's facts.
    pub fn of_facts(hf: &HostFacts) -> Self {
        MaintenanceState {
            version: STATE_VERSION,
            host: hf.maintenance.clone(),
            units: hf.unit_maintenance.clone(),
        }
    }

    /// Copy this state into a host's facts.
    pub fn into_facts(self, hf: &mut HostFacts) {
        hf.maintenance = self.host;
        hf.unit_maintenance = self.units;
    }

    /// Why a step on `unit` must skip this host, if it must.
    pub fn skip_reason(&self, unit: &str) -> Option<String> {
        skip_reason(self.host.as_ref(), &self.units, unit)
    }
}

/// Why a step on `unit` must skip a host, given its maintenance flags:
/// "skipped: in maintenance: REASON" (host-wide first).
pub fn skip_reason(
    host: Option<&Maintenance>,
    units: &BTreeMap<String, Maintenance>,
    unit: &str,
) -> Option<String> {
    host.or_else(|| units.get(unit))
        .map(|m| format!("skipped: in maintenance: {}", m.reason))
}

/// What a `maintenance:` step wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceGoal {
    /// On or off.
    pub enable: bool,
    /// Why (kept with the flag; ignored when disabling).
    pub reason: String,
    /// The unit, or None for the whole host.
    pub unit: Option<UnitName>,
}

/// The decision of a `maintenance:` step on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceDecision {
    /// The operation, None when the state already holds.
    pub action: Option<Action>,
    /// The state afterwards.
    pub after: MaintenanceState,
}

/// Decide a maintenance step from the host's current flags; `now` stamps a
/// new flag. Idempotent: enabling what is enabled with the same reason and
/// disabling what is not set change nothing; a new reason updates the flag
/// and keeps its `since`. Used by both plan and apply.
pub fn decide_maintenance(
    goal: &MaintenanceGoal,
    current: &MaintenanceState,
    now: &str,
) -> MaintenanceDecision {
    let mut after = current.clone();
    after.version = STATE_VERSION;
    let slot = match &goal.unit {
        None => &mut after.host,
        Some(u) => {
            let mut v = after.units.remove(u.as_str());
            let changed = apply_goal(&mut v, goal, now);
            if let Some(m) = v {
                after.units.insert(u.as_str().to_string(), m);
            }
            return MaintenanceDecision {
                action: changed,
                after,
            };
        }
    };
    let action = apply_goal(slot, goal, now);
    MaintenanceDecision { action, after }
}

fn apply_goal(slot: &mut Option<Maintenance>, goal: &MaintenanceGoal, now: &str) -> Option<Action> {
    match (goal.enable, slot.as_mut()) {
        (true, Some(m)) if m.reason == goal.reason => None,
        (true, Some(m)) => {
            m.reason = goal.reason.clone();
            Some(Action::MaintenanceOn)
        }
        (true, None) => {
            *slot = Some(Maintenance {
                reason: goal.reason.clone(),
                since: now.to_string(),
            });
            Some(Action::MaintenanceOn)
        }
        (false, Some(_)) => {
            *slot = None;
            Some(Action::MaintenanceOff)
        }
        (false, None) => None,
    }
}

/// Read a host's maintenance state over its session (empty when the file
/// does not exist). A file drover cannot parse is an error, never "no
/// maintenance": silently ignoring a flag would be the unsafe choice.
pub async fn read(session: &Session) -> std::result::Result<MaintenanceState, String> {
    // The session's preread read the file when it opened: use that once
    // instead of logging in again.
    match session.take_preread() {
        Some(crate::carrier::Preread::Missing) => return parse_state(b""),
        Some(crate::carrier::Preread::Content(bytes)) => return parse_state(&bytes),
        Some(crate::carrier::Preread::Unreadable) => {
            return Err(format!(
                "cannot read {STATE_FILE}: permission denied or I/O error"
            ))
        }
        None => {}
    }
    let out = session
        .run("sh", &["-c", READ_SCRIPT])
        .await
        .map_err(|e| format!("cannot read {STATE_FILE}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot read {STATE_FILE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_state(&out.stdout)
}

/// Parse the state file's bytes (empty: no maintenance).
pub fn parse_state(bytes: &[u8]) -> std::result::Result<MaintenanceState, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(MaintenanceState {
            version: STATE_VERSION,
            ..Default::default()
        });
    }
    let st: MaintenanceState = serde_json::from_slice(bytes)
        .map_err(|e| format!("{STATE_FILE} is not valid drover state: {e}"))?;
    if st.version > STATE_VERSION {
        return Err(format!(
            "{STATE_FILE} has version {} (this drover reads {STATE_VERSION})",
            st.version
        ));
    }
    Ok(st)
}

/// Write a host's maintenance state atomically over its session.
pub async fn write(session: &Session, state: &MaintenanceState) -> std::result::Result<(), String> {
    let mut json = serde_json::to_vec_pretty(state)
        .map_err(|e| format!("cannot serialise maintenance state: {e}"))?;
    json.push(b'\n');
    let out = session
        .run_input("sh", &["-c", WRITE_SCRIPT], &json)
        .await
        .map_err(|e| format!("cannot write {STATE_FILE}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot write {STATE_FILE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Apply a maintenance step on one host: re-read the state file (another
/// drover may have changed it), decide, write when it changes. Returns the
/// action done (None: already so) and the state now on the host.
pub async fn apply_goal_on(
    session: &Session,
    goal: &MaintenanceGoal,
) -> std::result::Result<(Option<Action>, MaintenanceState), String> {
    let current = read(session).await?;
    let d = decide_maintenance(goal, &current, &crate::report::now_rfc3339());
    if d.action.is_some() {
        write(session, &d.after).await?;
    }
    Ok((d.action, d.after))
}

/// The one-step playbook of an ad-hoc `drover maintenance` command. Values
/// are validated first and written as JSON strings, which YAML reads verbatim.
pub fn maintenance_playbook(
    enable: bool,
    unit: Option<&str>,
    target: &str,
    reason: Option<&str>,
) -> Result<String> {
    let unit = unit
        .map(|u| UnitName::parse(u).map_err(|m| Error::Usage(format!("UNIT `{u}`: {m}"))))
        .transpose()?;
    crate::cli::parse_selector("--target", target)?;
    if enable && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(Error::Usage(
            "`maintenance enable` needs --reason: say why, it is shown to everyone".into(),
        ));
    }
    let q = |v: &str| serde_json::Value::from(v).to_string();
    let word = if enable { "enable" } else { "disable" };
    let what = unit.as_ref().map_or("host", |u| u.as_str());
    let mut body = format!("enable: {enable}");
    if let Some(r) = reason {
        body.push_str(&format!(", reason: {}", q(r)));
    }
    if let Some(u) = &unit {
        body.push_str(&format!(", unit: {}", q(u.as_str())));
    }
    Ok(format!(
        "name: {}\nsteps:\n  - id: {}\n    target: {}\n    maintenance: {{ {body} }}\n",
        q(&format!("drover maintenance {word} {what}")),
        q(&format!(
            "maintenance-{word}-{}",
            what.replace(['@', ':', '\\'], "_")
        )),
        q(target),
    ))
}

/// `drover maintenance enable|disable [UNIT] --target SEL`: the same
/// engine and report as `apply`.
pub fn maintenance_cmd(a: &crate::cli::MaintenanceArgs, color: bool) -> Result<i32> {
    let enable = a.action == crate::cli::MaintenanceAction::Enable;
    let text = maintenance_playbook(enable, a.unit.as_deref(), &a.target, a.reason.as_deref())?;
    let l = crate::cli::load_generated(&text, "<drover maintenance>", &a.inventory)?;
    let step_timeout =
        crate::parse_duration(&a.timeout).map_err(|m| Error::Usage(format!("--timeout: {m}")))?;
    crate::apply::run_loaded(
        &l,
        &crate::apply::Output {
            format: a.format,
            color: color && a.format == ReportFormat::Text,
            report: a.report.clone(),
            forks: a.forks,
            step_timeout,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(enable: bool, reason: &str, unit: Option<&str>) -> MaintenanceGoal {
        MaintenanceGoal {
            enable,
            reason: reason.into(),
            unit: unit.map(|u| UnitName::parse(u).unwrap()),
        }
    }

    #[test]
    fn enabling_is_idempotent_and_keeps_since() {
        let empty = MaintenanceState::default();
        let d = decide_maintenance(&goal(true, "disk", None), &empty, "T1");
        assert_eq!(d.action, Some(Action::MaintenanceOn));
        assert_eq!(d.after.host.as_ref().unwrap().since, "T1");
        let again = decide_maintenance(&goal(true, "disk", None), &d.after, "T2");
        assert_eq!(again.action, None);
        let new_reason = decide_maintenance(&goal(true, "ram", None), &d.after, "T3");
        assert_eq!(new_reason.action, Some(Action::MaintenanceOn));
        assert_eq!(new_reason.after.host.as_ref().unwrap().since, "T1");
        let off = decide_maintenance(&goal(false, "", None), &d.after, "T4");
        assert_eq!(off.action, Some(Action::MaintenanceOff));
        assert!(off.after.host.is_none());
        assert_eq!(
            decide_maintenance(&goal(false, "", None), &off.after, "T5").action,
            None
        );
    }

    #[test]
    fn unit_flags_are_separate_from_the_host() {
        let d = decide_maintenance(
            &goal(true, "drain", Some("demo-web")),
            &MaintenanceState::default(),
            "T",
        );
        assert!(d.after.host.is_none());
        assert_eq!(d.after.units["demo-web.service"].reason, "drain");
        assert_eq!(
            d.after.skip_reason("demo-web.service").as_deref(),
            Some("skipped: in maintenance: drain")
        );
        assert_eq!(d.after.skip_reason("demo-worker.service"), None);
    }

    #[test]
    fn state_files_parse_strictly() {
        assert_eq!(parse_state(b"").unwrap().host, None);
        assert!(parse_state(b"{not json").is_err());
        assert!(parse_state(b"{\"version\": 99}").is_err());
        let st =
            parse_state(br#"{"version":1,"host":{"reason":"r","since":"s"},"units":{}}"#).unwrap();
        assert_eq!(st.host.unwrap().reason, "r");
    }

    #[test]
    fn ad_hoc_playbook_quotes_everything() {
        let text =
            maintenance_playbook(true, Some("demo-web"), "lab-1", Some("x\"; rm -rf / #")).unwrap();
        let pb = crate::playbook::Playbook::from_str(&text, std::path::Path::new("t")).unwrap();
        assert_eq!(pb.steps.len(), 1);
        assert!(maintenance_playbook(true, None, "lab-1", None).is_err());
        assert!(maintenance_playbook(false, Some("bad name;"), "lab-1", None).is_err());
    }
}
