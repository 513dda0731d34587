//! The local carrier: this machine's system bus.

use crate::model::inventory::Host;
use crate::remote::carrier::CarrierError;
use crate::remote::carrier::FailureKind;
use crate::remote::carrier::Link;
use crate::remote::carrier::Session;
use crate::remote::systemd::{Systemd, SystemdError};

pub(super) async fn connect_local(host: &Host) -> Result<Session, CarrierError> {
    let bus_err = |e: zbus::Error| CarrierError::new(FailureKind::Bus, e.to_string());
    let builder = match host.bus.as_deref() {
        Some(addr) => zbus::connection::Builder::address(addr).map_err(bus_err)?,
        // zbus reads DBUS_SYSTEM_BUS_ADDRESS, else the default socket.
        None => zbus::connection::Builder::system().map_err(bus_err)?,
    };
    let conn = tokio::time::timeout(host.connect_timeout, builder.build())
        .await
        .map_err(|_| {
            CarrierError::new(
                FailureKind::Timeout,
                format!(
                    "no answer from the system bus within {}",
                    humantime::format_duration(host.connect_timeout)
                ),
            )
        })?
        .map_err(|e| {
            let text = e.to_string();
            let kind = if text.contains("No such file") || text.contains("Connection refused") {
                FailureKind::Unreachable
            } else {
                FailureKind::Bus
            };
            CarrierError::new(
                kind,
                format!(
                    "system bus {}: {text}",
                    host.bus.as_deref().unwrap_or("(default)")
                ),
            )
        })?;
    let systemd = Systemd::new(conn).await.map_err(bus_failure)?;
    Ok(Session {
        host: host.name.clone(),
        systemd,
        link: Link::Local,
        preread: std::sync::Mutex::new(None),
        resident: tokio::sync::Mutex::new(None),
        become_: false,
    })
}

pub(super) fn bus_failure(e: SystemdError) -> CarrierError {
    CarrierError::new(FailureKind::Bus, e.to_string())
}
