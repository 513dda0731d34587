//! Cluster mode over NATS JetStream: workers that own hosts by leases and
//! answer their reads ([`worker`]), and the replicas' side that asks the
//! owner ([`reads`]). Subjects, buckets and leases are `model::cluster`'s;
//! the connection is `remote::nats`'s.

pub mod claims;
pub mod clock;
pub mod coordination;
mod groups;
pub mod jobs;
pub mod rate;
pub mod reads;
pub mod sessions;
pub mod tasks;
pub mod worker;
