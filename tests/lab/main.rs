//! The tests against the lab: real systemd, D-Bus and sshd hosts booted
//! with systemd-nspawn (`tests/lab/lab.sh`). Without `DROVER_LAB_DIR`
//! each test says so loudly and returns, unless `DROVER_REQUIRE_LAB` is set,
//! which makes a missing lab a failure. Tests that change or compare host
//! state take the lab's lock, so they never overlap.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/markdown.rs"]
mod markdown;
#[path = "../common/nats.rs"]
mod nats;
#[path = "../common/server.rs"]
mod server;

mod apply;
mod bounded;
mod browser;
mod carrier;
mod cluster;
mod engine;
mod forged;
mod frozen;
mod inventory_forms;
mod jobs;
mod live;
mod logs;
mod logs_api;
mod maintenance;
mod maintenance_cas;
mod modules;
mod observability;
mod osapi;
mod package;
mod package_serve;
mod page;
mod page_fleet;
mod params;
mod plan;
mod plans;
mod playbooks;
mod promises;
mod resume;
mod safety;
mod scenarios;
mod secrets;
mod serve;
mod serve_compat;
mod status;
mod unreachable;
