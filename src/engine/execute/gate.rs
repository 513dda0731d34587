//! `wait:` gates: active state, HTTP and TCP probes, health, each
//! within its timeout.

use std::time::Duration;

use futures_util::stream::StreamExt;

use crate::model::playbook::Wait;
use crate::model::unit::UnitName;
use crate::remote::systemd::Systemd;

/// What a gate waits for, in words (for the event).
pub(super) fn gate_words(w: &Wait) -> String {
    let mut parts = Vec::new();
    if w.active {
        parts.push("active".to_string());
    }
    if let Some(h) = w.health {
        parts.push(format!("health {}", h.as_str().to_lowercase()));
    }
    if w.tcp.is_some() {
        parts.push("tcp".into());
    }
    if w.http.is_some() {
        parts.push("http".into());
    }
    format!(
        "{} within {}",
        parts.join(", "),
        humantime::format_duration(w.timeout)
    )
}

/// How often [`wait_active`] reads the state when no signal comes.
const ACTIVE_RECHECK: Duration = Duration::from_millis(200);

/// Wait for ActiveState=active; `failed`/`inactive` end the wait at once.
/// systemd's PropertiesChanged wakes it early, but systemd sends those
/// only while some client on the host is subscribed, and drover does not
/// subscribe (a resumed run waits on a restart its killed predecessor
/// queued): so the state is also read again every [`ACTIVE_RECHECK`],
/// each time from systemd (a caching proxy would answer its cache).
pub(super) async fn wait_active(
    sd: &Systemd,
    unit: &UnitName,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> std::result::Result<(), String> {
    // Built only once there is something to wait for: most waits follow
    // a start or restart whose job has finished, and end at the first read.
    let mut changes = None;
    loop {
        let state = sd
            .unit_state(unit, crate::remote::systemd::StateRead::default())
            .await
            .map_err(|e| format!("wait for {unit}: {e}"))?
            .active_state;
        match state.as_str() {
            "active" => return Ok(()),
            "failed" | "inactive" => {
                return Err(format!("wait: unit {unit} is {state}, not active"));
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "wait: unit {unit} not active within {} (still {state})",
                humantime::format_duration(timeout)
            ));
        }
        if changes.is_none() {
            let proxy = crate::remote::systemd::UnitProxy::builder(sd.connection())
                .path(crate::remote::systemd::unit_object_path(unit.as_str()))
                .map_err(|e| e.to_string())?
                .build()
                .await
                .map_err(|e| format!("wait for {unit}: {e}"))?;
            changes = Some(proxy.receive_active_state_changed().await);
        }
        let recheck = (tokio::time::Instant::now() + ACTIVE_RECHECK).min(deadline);
        let next = async {
            match changes.as_mut() {
                Some(c) => c.next().await,
                None => None,
            }
        };
        tokio::select! {
            // A closed stream (no signals here) leaves the rechecks.
            Some(_) = next => {}
            _ = tokio::time::sleep_until(recheck) => {}
        }
    }
}

/// Retry a network probe until it passes or the deadline passes. Probing a
/// remote endpoint has no event to wait for, so this is the one place that
/// retries on an interval.
pub(super) async fn probe<F, Fut>(
    deadline: tokio::time::Instant,
    timeout: Duration,
    what: &str,
    mut attempt: F,
) -> std::result::Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let mut last = String::from("no attempt");
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(format!(
                "wait: {what} did not pass within {}: {last}",
                humantime::format_duration(timeout)
            ));
        }
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep_until(
            (tokio::time::Instant::now() + Duration::from_millis(250)).min(deadline),
        )
        .await;
    }
}
