//! drover: a declarative batch runbook executor for systemd services.
//!
//! Data flows one way: files → model (inventory, playbook, targets) → DAG
//! → facts → plan → diff → executor → report. The code is layered the same
//! way, each folder importing only the ones below it (a test checks):
//!
//! - [`cmd`]: the command line; the only place that prints, picks exit
//!   codes and owns the tokio runtime;
//! - `render`: pure functions from engine values to text;
//! - [`engine`]: jobs, plan, apply, status, facts, health, locks,
//!   journals — a library that emits typed events and returns typed values;
//! - `remote`: the systemd client and its carriers (local bus, ssh);
//! - [`model`]: file formats, targets, DAG, templates, decisions (pure).
//!
//! As a library, drover's surface is [`engine`]'s re-exports (a [`engine::Job`]
//! from files, [`engine::plan`], [`engine::apply`] and their options, status,
//! health and facts reads, [`engine::Event`]s, [`engine::StopFlag`]) and the
//! [`model`] types they take and return (inventory, playbook, facts, report,
//! outcomes, errors). `render`, `remote`, the engine's inner modules and
//! the command line's parts are crate-private; the tests and benches see
//! them through the `internals` feature.

#![warn(missing_docs)]

/// Declares modules public in the tests' and benches' build (feature
/// `internals`) and crate-private otherwise: a library user sees only the
/// surface `lib.rs` and [`engine`] export, while a lab test can still drive
/// a carrier or a renderer directly.
macro_rules! internal_mod {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "internals"))]
        pub(crate) mod $name;
    )*};
}

#[macro_use]
pub mod cmd;
pub mod engine;
pub mod model;
internal_mod! {
    remote;
    render;
}

// ARCHITECTURE.md's examples are doctests: `cargo test --doc` compiles them
// (and runs the one that needs no host), so the map cannot drift from the
// library it shows.
#[cfg(doctest)]
#[doc = include_str!("../ARCHITECTURE.md")]
pub struct ArchitectureDoctests;
