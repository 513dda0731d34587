//! systemd's own account of its units as it changes: after `Subscribe`,
//! systemd emits `PropertiesChanged` for every unit that changes,
//! `UnitNew`/`UnitRemoved` as units are loaded and collected, `JobRemoved`
//! and `Reloading`. A long-running watcher (the server's live snapshot)
//! follows them instead of reading hosts per request.
//!
//! Signals are believed only from systemd's unique name on the bus,
//! learnt from its reply to `Subscribe`: any peer may send a signal to
//! our connection, and the match rule's well-known sender is no proof.

use std::collections::HashMap;

use futures_util::StreamExt;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use crate::remote::systemd::{Systemd, SystemdError, DEST, MANAGER_INTERFACE, MANAGER_PATH};
use crate::remote::systemd::UNIT_PATH_PREFIX;

/// Signals queued per watch before the connection's reader waits for the
/// watcher to take them: the watcher only records them (no round trip),
/// so this is headroom for a burst (a daemon-reload announces every unit).
const QUEUED: usize = 1024;

/// What changed in one unit, as far as its signal says (a property the
/// signal does not carry is None: unchanged, or not sent with a value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitChange {
    /// LoadState.
    pub load_state: Option<String>,
    /// ActiveState.
    pub active_state: Option<String>,
    /// SubState.
    pub sub_state: Option<String>,
    /// UnitFileState (systemd does not emit it; kept for completeness).
    pub unit_file_state: Option<String>,
    /// ActiveEnterTimestamp, µs since the epoch.
    pub active_enter_timestamp: Option<u64>,
    /// InvocationID, hex.
    pub invocation_id: Option<String>,
    /// The pending job: Some(None) when there is none, Some(Some(path))
    /// when one is queued (its type takes a read).
    pub job: Option<Option<String>>,
    /// Description.
    pub description: Option<String>,
    /// MainPID (from the Service interface).
    pub main_pid: Option<u32>,
}

/// One signal from systemd, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitEvent {
    /// A unit's properties changed.
    Changed {
        /// The unit's name.
        unit: String,
        /// What the signal said.
        change: UnitChange,
    },
    /// A unit was loaded.
    New(String),
    /// A unit was unloaded (garbage-collected: inactive, no job).
    Removed(String),
    /// A job on the unit ended.
    JobRemoved(String),
    /// A daemon-reload began: systemd unloads every unit (UnitRemoved for
    /// each, running ones too) and loads them again.
    Reloading,
    /// A daemon-reload finished: unit files may have changed under every
    /// unit, and systemd does not announce each.
    Reloaded,
}

/// systemd's signals on one connection, from `Subscribe` on.
pub struct UnitEvents {
    stream: zbus::MessageStream,
    systemd: String,
}

impl std::fmt::Debug for UnitEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitEvents")
            .field("systemd", &self.systemd)
            .finish()
    }
}

/// A unit's name from its object path (systemd's bus-label escaping
/// undone); None for a path that is not a unit's.
pub fn unit_of_path(path: &str) -> Option<String> {
    let label = path.strip_prefix(UNIT_PATH_PREFIX)?;
    if label.is_empty() || label.contains('/') {
        return None;
    }
    if label == "_" {
        return Some(String::new());
    }
    let b = label.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The properties drover keeps, from a PropertiesChanged's dictionary.
pub fn change_of(interface: &str, props: &HashMap<String, OwnedValue>) -> UnitChange {
    let s = |k: &str| props.get(k).and_then(|v| String::try_from(v.clone()).ok());
    let mut c = UnitChange::default();
    match interface {
        "org.freedesktop.systemd1.Unit" => {
            c.load_state = s("LoadState");
            c.active_state = s("ActiveState");
            c.sub_state = s("SubState");
            c.unit_file_state = s("UnitFileState");
            c.description = s("Description");
            c.active_enter_timestamp = props
                .get("ActiveEnterTimestamp")
                .and_then(|v| u64::try_from(v.clone()).ok());
            c.invocation_id = props
                .get("InvocationID")
                .and_then(|v| Vec::<u8>::try_from(v.clone()).ok())
                .map(|b| hex(&b));
            c.job = props
                .get("Job")
                .and_then(|v| <(u32, OwnedObjectPath)>::try_from(v.clone()).ok())
                .map(|(id, p)| (id != 0).then(|| p.to_string()));
        }
        "org.freedesktop.systemd1.Service" => {
            c.main_pid = props
                .get("MainPID")
                .and_then(|v| u32::try_from(v.clone()).ok());
        }
        _ => {}
    }
    c
}

impl Systemd {
    /// Follow systemd's signals on this connection: the match rule is
    /// installed before `Subscribe`, so nothing emitted after systemd
    /// answers is missed. The connection's other users (jobs, reads) go on
    /// beside it; dropping the stream removes its match rule (systemd
    /// drops the subscription with the connection, or on [`UnitEvents::
    /// unsubscribe`]).
    ///
    /// One stream for every signal systemd sends (a rule per member would
    /// give queues whose relative order is lost): unit changes are nearly
    /// all of them.
    pub async fn unit_events(&self) -> Result<UnitEvents, SystemdError> {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(DEST)
            .map(|b| b.build())
            .map_err(SystemdError::bus("match systemd's signals"))?;
        let stream = zbus::MessageStream::for_match_rule(rule, &self.conn, Some(QUEUED))
            .await
            .map_err(SystemdError::bus("match systemd's signals"))?;
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                MANAGER_PATH,
                Some(MANAGER_INTERFACE),
                "Subscribe",
                &(),
            )
            .await;
        let sender = match reply {
            Ok(r) => r.header().sender().map(|s| s.to_string()),
            // Subscribed already (a watch before this one on the same
            // connection): systemd's name then comes from a ping.
            Err(zbus::Error::MethodError(name, _, r))
                if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" =>
            {
                r.header().sender().map(|s| s.to_string())
            }
            Err(e) => return Err(SystemdError::bus("Subscribe")(e)),
        };
        let Some(systemd) = sender else {
            return Err(SystemdError::bus("Subscribe")(zbus::Error::Failure(
                "systemd's reply names no sender".into(),
            )));
        };
        Ok(UnitEvents { stream, systemd })
    }

    /// One round trip to systemd itself (`Peer.Ping`): when it answers,
    /// every signal it sent before has reached this connection.
    pub async fn ping(&self) -> Result<(), SystemdError> {
        self.conn
            .call_method(
                Some(DEST),
                MANAGER_PATH,
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            )
            .await
            .map(|_| ())
            .map_err(SystemdError::bus("Ping"))
    }

    /// Stop systemd's signals for this connection (best effort: a closed
    /// connection has no subscription left anyway).
    pub async fn unsubscribe(&self) {
        let _ = self
            .conn
            .call_method(
                Some(DEST),
                MANAGER_PATH,
                Some(MANAGER_INTERFACE),
                "Unsubscribe",
                &(),
            )
            .await;
    }

    /// The UnitFileState of a unit systemd has not loaded, without loading
    /// it (loading it would have it collected again, and signalled):
    /// None when no unit file defines it.
    pub async fn file_state_unloaded(&self, unit: &str) -> Result<Option<String>, SystemdError> {
        match self.manager.get_unit_file_state(unit).await {
            Ok(s) => Ok(Some(s)),
            Err(zbus::Error::MethodError(..)) => Ok(None),
            Err(e) => Err(SystemdError::bus(format!("GetUnitFileState {unit}"))(e)),
        }
    }

    /// The type of a queued job (start, restart, ...), None when it has
    /// already finished.
    pub async fn job_type(&self, job: &str) -> Option<String> {
        let p = crate::remote::systemd::SystemdJobProxy::builder(&self.conn)
            .path(job.to_string())
            .ok()?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .ok()?;
        p.job_type().await.ok()
    }
}

impl UnitEvents {
    /// The next signal from systemd; None when the connection is gone.
    /// Signals from anyone else, and those drover has no use for, are
    /// skipped.
    pub async fn next(&mut self) -> Option<UnitEvent> {
        loop {
            let msg = self.stream.next().await?;
            // A malformed message is not systemd's state.
            let Ok(msg) = msg else { continue };
            if let Some(e) = self.decode(&msg) {
                return Some(e);
            }
        }
    }

    /// The next signal if one is already queued: a watcher drains these
    /// before it believes a ping (the ping's reply may overtake them in
    /// zbus's queues, never on the wire).
    pub fn ready(&mut self) -> Option<Option<UnitEvent>> {
        use futures_util::FutureExt;
        self.next().now_or_never()
    }

    fn decode(&self, msg: &zbus::Message) -> Option<UnitEvent> {
        let header = msg.header();
        if header.sender().map(|s| s.as_str()) != Some(self.systemd.as_str()) {
            return None;
        }
        let member = header.member()?.as_str().to_string();
        let path = header.path()?.as_str().to_string();
        let body = msg.body();
        match member.as_str() {
            "PropertiesChanged" => {
                let unit = unit_of_path(&path)?;
                let (iface, props, _invalidated): (String, HashMap<String, OwnedValue>, Vec<String>) =
                    body.deserialize().ok()?;
                let change = change_of(&iface, &props);
                (change != UnitChange::default()).then_some(UnitEvent::Changed { unit, change })
            }
            "UnitNew" if path == MANAGER_PATH => {
                let (unit, _): (String, OwnedObjectPath) = body.deserialize().ok()?;
                Some(UnitEvent::New(unit))
            }
            "UnitRemoved" if path == MANAGER_PATH => {
                let (unit, _): (String, OwnedObjectPath) = body.deserialize().ok()?;
                Some(UnitEvent::Removed(unit))
            }
            "JobRemoved" if path == MANAGER_PATH => {
                let (_, _, unit, _): (u32, OwnedObjectPath, String, String) =
                    body.deserialize().ok()?;
                Some(UnitEvent::JobRemoved(unit))
            }
            // Reloading(true) as it begins, (false) once it is done.
            "Reloading" if path == MANAGER_PATH => {
                let active: bool = body.deserialize().ok()?;
                Some(if active {
                    UnitEvent::Reloading
                } else {
                    UnitEvent::Reloaded
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::systemd::unit_object_path;

    #[test]
    fn unit_paths_round_trip() {
        for u in ["demo-web.service", "getty@tty1.service", "1a.service", "a\\x2db.mount"] {
            assert_eq!(unit_of_path(&unit_object_path(u)).as_deref(), Some(u));
        }
        assert_eq!(unit_of_path("/org/freedesktop/systemd1/job/4"), None);
        assert_eq!(unit_of_path("/org/freedesktop/systemd1/unit/a_zz"), None);
        assert_eq!(unit_of_path("/org/freedesktop/systemd1/unit/a_2"), None);
    }

    #[test]
    fn a_change_keeps_only_what_the_signal_says() {
        let mut props = HashMap::new();
        props.insert("ActiveState".to_string(), OwnedValue::from(zbus::zvariant::Str::from("inactive")));
        props.insert("SubState".to_string(), OwnedValue::from(zbus::zvariant::Str::from("dead")));
        let c = change_of("org.freedesktop.systemd1.Unit", &props);
        assert_eq!(c.active_state.as_deref(), Some("inactive"));
        assert_eq!(c.sub_state.as_deref(), Some("dead"));
        assert_eq!(c.load_state, None);
        assert_eq!(c.main_pid, None);
        let mut pid = HashMap::new();
        pid.insert("MainPID".to_string(), OwnedValue::from(42u32));
        assert_eq!(change_of("org.freedesktop.systemd1.Service", &pid).main_pid, Some(42));
        assert_eq!(change_of("org.freedesktop.systemd1.Socket", &pid), UnitChange::default());
    }
}
