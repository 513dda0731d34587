//! Renderers: pure functions from engine values and events to text
//! (terminal, markdown, json). They print nothing; the command line writes
//! what they return. Their output is snapshot-tested.

pub mod apply;
pub mod health;
pub mod plan;
pub mod status;
