//! The engine: jobs (a validated playbook over an inventory), plan, apply,
//! status, facts, health, unit logs, locks, journals and saved plans. It is
//! a library: the command line, a server and tests call the same async
//! functions with the same types. It emits typed [`events::Event`]s to a
//! sink the caller gives and returns typed values; it never prints and
//! never builds a runtime of its own.

pub mod apply;
pub mod carry;
pub mod claims;
pub mod clock;
pub mod events;
mod execute;
pub mod files;
pub mod health;
pub mod inventory;
pub mod job;
pub mod job_store;
pub mod journal;
pub mod live;
mod lock;
pub mod logs;
pub mod plan;
pub mod private;
pub mod saved;
pub mod status;
mod walk;

pub use apply::{apply, Applied, ApplyOptions, DEFAULT_FAILURE_LOGS};
pub use clock::Clock;
pub use events::{Event, EventSink, NoEvents, StopFlag};
pub use job::{AdHoc, Job, ServiceAction};
pub use lock::lock_dir;
pub use plan::{plan, FactsSource, Plan, PlanOptions, Planned};
