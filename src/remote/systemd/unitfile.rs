//! Unit-file calls: enable, disable, mask, unmask, daemon-reload.

use crate::model::unit::UnitName;
use crate::remote::systemd::Systemd;
use crate::remote::systemd::SystemdError;
use crate::remote::systemd::UnitFileChange;

fn file_names(changes: &[UnitFileChange]) -> Vec<String> {
    changes.iter().map(|(_, file, _)| file.clone()).collect()
}

impl Systemd {
    /// Enable a unit file (then daemon-reload if anything changed).
    /// Returns the files systemd changed; empty means it already was.
    pub async fn enable(&self, unit: &UnitName) -> Result<Vec<String>, SystemdError> {
        let r = self
            .manager
            .enable_unit_files(&[unit.as_str()], false, false)
            .await
            .map(|(_, changes)| changes);
        self.file_change(format!("EnableUnitFiles {unit}"), r).await
    }

    /// Disable a unit file (then daemon-reload if anything changed).
    pub async fn disable(&self, unit: &UnitName) -> Result<Vec<String>, SystemdError> {
        let r = self
            .manager
            .disable_unit_files(&[unit.as_str()], false)
            .await;
        self.file_change(format!("DisableUnitFiles {unit}"), r)
            .await
    }

    /// Mask a unit (then daemon-reload if anything changed).
    pub async fn mask(&self, unit: &UnitName) -> Result<Vec<String>, SystemdError> {
        let r = self
            .manager
            .mask_unit_files(&[unit.as_str()], false, false)
            .await;
        self.file_change(format!("MaskUnitFiles {unit}"), r).await
    }

    /// Unmask a unit (then daemon-reload if anything changed).
    pub async fn unmask(&self, unit: &UnitName) -> Result<Vec<String>, SystemdError> {
        let r = self
            .manager
            .unmask_unit_files(&[unit.as_str()], false)
            .await;
        self.file_change(format!("UnmaskUnitFiles {unit}"), r).await
    }

    /// The common tail of the unit-file calls: reload if files changed,
    /// return their names.
    async fn file_change(
        &self,
        what: String,
        reply: zbus::Result<Vec<UnitFileChange>>,
    ) -> Result<Vec<String>, SystemdError> {
        let changes = reply.map_err(SystemdError::bus(what))?;
        self.reload_if(&changes).await?;
        Ok(file_names(&changes))
    }

    /// `daemon-reload`: systemd re-reads unit files; returns when done.
    pub async fn daemon_reload(&self) -> Result<(), SystemdError> {
        self.manager
            .reload()
            .await
            .map_err(SystemdError::bus("Reload"))
    }

    /// The enablement state of a unit file (`systemctl is-enabled`): the
    /// lab tests' check of enable and disable (facts read it in bulk).
    #[cfg(feature = "internals")]
    pub async fn unit_file_state(&self, unit: &UnitName) -> Result<String, SystemdError> {
        self.manager
            .get_unit_file_state(unit.as_str())
            .await
            .map_err(SystemdError::bus(format!("GetUnitFileState {unit}")))
    }

    async fn reload_if(&self, changes: &[UnitFileChange]) -> Result<(), SystemdError> {
        // Unit-file changes are invisible to the running manager until a
        // reload; an unchanged file needs none.
        if changes.is_empty() {
            Ok(())
        } else {
            self.daemon_reload().await
        }
    }
}
