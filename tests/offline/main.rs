//! The tests that need no host: the command line, parsing, planning from
//! facts, rendering, the server on a loopback port, the docs. One binary
//! (one link on a 2-core machine instead of one per file); each module is
//! what used to be a file of its own.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/markdown.rs"]
mod markdown;
#[path = "../common/server.rs"]
mod server;

mod apply_refusals;
mod book_refs;
mod completions;
mod corpus;
mod docs;
mod engine;
mod examples;
mod examples_syntax;
mod inventory_forms;
mod job_history;
mod layers;
mod logs;
mod modules;
mod notify;
mod observability;
mod page_render;
mod params;
mod plan_offline;
mod render;
mod retry_plan;
mod safety;
mod saved_plan;
mod schema;
mod serve;
mod serve_compat;
mod serve_conn;
mod serve_files;
mod serve_held;
mod serve_osapi;
mod serve_page;
mod serve_plans;
mod serve_table;
mod spawnable;
mod usage;
