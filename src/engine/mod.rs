//! The engine: jobs (a validated playbook over an inventory), plan, apply,
//! status, facts, health, unit logs, locks, journals and saved plans. It is
//! a library: the command line, a server and tests call the same async
//! functions with the same types. It emits typed [`events::Event`]s to a
//! sink the caller gives and returns typed values; it never prints and
//! never builds a runtime of its own.

internal_mod! {
    apply;
    carry;
    claims;
    cluster;
    clock;
    events;
    files;
    fleet;
    health;
    inventory;
    job;
    job_store;
    journal;
    live;
    logs;
    plan;
    plan_store;
    private;
    saved;
    status;
}
mod execute;
mod lock;
mod walk;

// The library's surface: what a program needs to load files into a
// [`Job`], plan it, apply it, read state and health, and follow a run by
// its events. Everything else in the engine (and the `remote` and
// `render` layers) is crate-private unless built with the `internals`
// feature, which only the tests and benches turn on.
pub use apply::{apply, Applied, ApplyOptions, Continue, DEFAULT_FAILURE_LOGS};
pub use carry::{Carry, Origin};
pub use clock::Clock;
pub use events::{Event, EventSink, NoEvents, StopFlag};
pub use execute::{HostTasks, Unanswered};
pub use health::{health, HealthRequest};
pub use inventory::load as load_inventory;
pub use job::{AdHoc, Job, ServiceAction};
pub use journal::{load_report, save_report};
pub use live::{read_facts, UnitSet};
pub use lock::lock_dir;
pub use plan::{
    plan, FactsSource, HostChanges, Plan, PlanOptions, PlanParams, Planned, PlannedResult, Source,
    StepPlan, Summary, UnitChange,
};
pub use saved::{Drift, SavedParams, SavedPlan, SavedResult, SavedSource, SavedStep};
pub use status::{status, MaintenanceEntry, ServiceStatus, StatusEntry, StatusError, StatusReport};
// The connection settings the options above carry: how many hosts at once,
// how long to wait, and a pool of warm connections a long-lived caller
// keeps between runs.
pub use crate::remote::{fanout::Reach, pool::Pool};
