//! drover: a declarative batch runbook executor for systemd services.
//!
//! Data flows one way: files → model (inventory, playbook, targets) → DAG
//! → facts → plan → diff → executor → report. The code is layered the same
//! way, each folder importing only the ones below it (a test checks):
//!
//! - [`cmd`]: the command line; the only place that prints, picks exit
//!   codes and owns the tokio runtime;
//! - [`render`]: pure functions from engine values to text;
//! - [`engine`]: jobs, plan, apply, status, facts, health, locks,
//!   journals — a library that emits typed events and returns typed values;
//! - [`remote`]: the systemd client and its carriers (local bus, ssh);
//! - [`model`]: file formats, targets, DAG, templates, decisions (pure).

#![warn(missing_docs)]

#[macro_use]
pub mod cmd;
pub mod engine;
pub mod model;
pub mod remote;
pub mod render;

// ARCHITECTURE.md's examples are doctests: `cargo test --doc` compiles them
// (and runs the one that needs no host), so the map cannot drift from the
// library it shows.
#[cfg(doctest)]
#[doc = include_str!("../ARCHITECTURE.md")]
pub struct ArchitectureDoctests;
