//! Reaching hosts: the one systemd client (typed zbus proxies) and its two
//! carriers (the local system bus, ssh), fan-out over many hosts, and the
//! few files drover keeps on a host (maintenance flags, unit files), the
//! health probes that reach out, and a unit's journal (`logs`).

pub mod carrier;
pub mod fence;
pub mod connect;
pub mod fanout;
pub mod logs;
pub mod maintenance;
pub mod nats;
pub mod pool;
pub mod probe;
pub mod script;
pub mod systemd;
pub mod unitfile;
