//! The live snapshot's flags, shared by `drover serve` and `drover
//! worker`: both keep their hosts' state current from systemd's signals
//! (`engine::fleet`) and answer reads from it while it is fresh.

use std::time::Duration;

use clap::Args;

use crate::engine::fleet::{Fleet, LiveSettings};
use crate::model::error::{Error, Result};
use crate::model::parse_duration;
use crate::remote::pool::Pool;

/// The live snapshot's flags (`serve`, and `worker`, which keeps the
/// snapshot of its hosts in cluster mode).
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Read hosts on every request instead of answering from the live
    /// snapshot kept from systemd's signals.
    #[arg(long)]
    pub no_live: bool,
    /// Answer from a host's snapshot only if it was confirmed current
    /// within this (a full read, or a ping to systemd answered after its
    /// signals).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub live_fresh: Duration,
    /// Read each watched host in full this often, to heal a missed signal
    /// and see maintenance flags changed by hand.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub live_heal: Duration,
    /// Watch at most this many hosts (reads of others read them).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub live_hosts: usize,
}

impl LiveArgs {
    /// The snapshot these flags ask for (None with `--no-live`); must be
    /// called inside the runtime.
    pub fn fleet(&self, pool: Pool, read_timeout: Duration) -> Result<Option<Fleet>> {
        if self.no_live {
            return Ok(None);
        }
        if self.live_fresh.is_zero() || self.live_heal.is_zero() || self.live_hosts == 0 {
            return Err(Error::Usage(
                "--live-fresh, --live-heal and --live-hosts must be more than 0 (--no-live turns the snapshot off)".into(),
            ));
        }
        let mut s = LiveSettings::new(read_timeout);
        s.fresh = self.live_fresh;
        s.heal = self.live_heal;
        s.max_hosts = self.live_hosts;
        Ok(Some(Fleet::new(pool, s)))
    }
}
