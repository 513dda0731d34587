//! Typed zbus proxies of the systemd objects drover talks to: the
//! Manager, units, services and jobs.

use zbus::zvariant::{DeserializeDict, OwnedObjectPath, Type};

use crate::remote::systemd::UnitFileChange;

/// The systemd Manager object (`/org/freedesktop/systemd1`).
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
pub trait Manager {
    /// The object path of a loaded unit (fails for units not loaded).
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// The object path of a unit, loading it from disk if needed.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queue a start job; returns the job's object path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queue a stop job.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queue a restart job.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queue a reload job.
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Enable unit files; returns (carries install info, changes).
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<UnitFileChange>)>;
    /// Disable unit files; returns the changes.
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<UnitFileChange>>;
    /// Mask unit files; returns the changes.
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<UnitFileChange>>;
    /// Unmask unit files; returns the changes.
    fn unmask_unit_files(&self, files: &[&str], runtime: bool)
        -> zbus::Result<Vec<UnitFileChange>>;
    /// `systemctl daemon-reload`; the reply comes after the reload is done.
    fn reload(&self) -> zbus::Result<()>;
    /// Every loaded unit.
    #[allow(clippy::type_complexity)]
    fn list_units(&self) -> zbus::Result<Vec<ListedUnit>>;
    /// The same rows for named units, loading them if needed.
    fn list_units_by_names(&self, names: &[&str]) -> zbus::Result<Vec<ListedUnit>>;
    /// Unit files matching states and glob patterns: (path, state).
    fn list_unit_files_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<(String, String)>>;
    /// The enablement state of one unit file.
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;
}

/// One row of `ListUnits`: name, description, load, active, sub, following,
/// unit path, job id, job type, job path.
pub type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

/// A unit object (`/org/freedesktop/systemd1/unit/...`).
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Unit {
    /// The unit's primary name.
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    /// active, inactive, failed, activating, deactivating, reloading.
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    /// Type-specific state: running, dead, exited, auto-restart, ...
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    /// loaded, not-found, masked, error, ...
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    /// enabled, disabled, static, masked, ... ("" for no file).
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
    /// When the unit last entered `active`, µs since the epoch (0: never).
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
    /// 128-bit id of the unit's current run (empty when it never ran).
    #[zbus(property, name = "InvocationID")]
    fn invocation_id(&self) -> zbus::Result<Vec<u8>>;
    /// The pending job: (id, path); id 0 when none.
    #[zbus(property)]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
}

/// The service-specific interface of a `.service` unit object.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Service {
    /// PID of the main process, 0 when none.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    /// Why the service last stopped: success, exit-code, signal, timeout, ...
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    /// The service's own sd_notify STATUS= text.
    #[zbus(property)]
    fn status_text(&self) -> zbus::Result<String>;
}

/// A job object (`/org/freedesktop/systemd1/job/N`).
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Job",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait SystemdJob {
    /// start, stop, restart, reload, ...
    #[zbus(property)]
    fn job_type(&self) -> zbus::Result<String>;
}

/// The Unit interface's properties drover reads, fetched with one GetAll
/// (one message per unit instead of one per property).
#[derive(Debug, Default, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "PascalCase")]
pub(super) struct UnitProps {
    pub(super) load_state: Option<String>,
    pub(super) active_state: Option<String>,
    pub(super) sub_state: Option<String>,
    pub(super) unit_file_state: Option<String>,
    pub(super) active_enter_timestamp: Option<u64>,
    #[zvariant(rename = "InvocationID")]
    pub(super) invocation_id: Option<Vec<u8>>,
    pub(super) job: Option<(u32, OwnedObjectPath)>,
    pub(super) description: Option<String>,
}
