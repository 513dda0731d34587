//! A replica's reads of hosts, asked of the worker that owns each (by
//! request/reply on the host's subject: only the owner listens there, so
//! NATS routes the request, and a replica needs to know no lease).

use std::time::Duration;

use crate::model::cluster::{read_subject, ReadReply, ReadRequest, ReadUnits, PROTOCOL};
use crate::model::facts::HostFacts;

/// Reads through the workers.
#[derive(Debug, Clone)]
pub struct ClusterReads {
    client: async_nats::Client,
    /// How long a worker may take to answer (its own read bound, plus the
    /// trip).
    pub timeout: Duration,
}

/// One host's read through its owner.
#[derive(Debug, Clone)]
pub struct OwnerRead {
    /// The host's facts (an error in them when it could not be read).
    pub facts: HostFacts,
    /// The host itself could not be reached (vs. no owner, or a failed
    /// read).
    pub unreachable: bool,
}

impl OwnerRead {
    fn failed(why: String) -> Self {
        OwnerRead {
            facts: HostFacts::unreachable(why),
            unreachable: false,
        }
    }
}

impl ClusterReads {
    /// Reads over `client`, each bounded by `timeout`.
    pub fn new(client: async_nats::Client, timeout: Duration) -> Self {
        ClusterReads { client, timeout }
    }

    /// Read `units` on `host` (resolved in the inventory of digest
    /// `inventory`) from its owning worker. Never fails: what went wrong
    /// is the host's error, as an unreachable host's is.
    pub async fn read(&self, inventory: &str, host: &str, units: ReadUnits) -> OwnerRead {
        let req = ReadRequest {
            protocol: PROTOCOL,
            inventory: inventory.to_string(),
            host: host.to_string(),
            units,
        };
        let payload = match serde_json::to_vec(&req) {
            Ok(p) => p,
            Err(e) => return OwnerRead::failed(format!("cannot encode the read: {e}")),
        };
        let sent = self
            .client
            .send_request(
                read_subject(host),
                async_nats::Request::new()
                    .payload(payload.into())
                    .timeout(Some(self.timeout)),
            )
            .await;
        let msg = match sent {
            Ok(m) => m,
            Err(e) => {
                use async_nats::RequestErrorKind as K;
                return OwnerRead::failed(match e.kind() {
                    K::NoResponders => format!(
                        "no drover worker owns {host} now (its region's workers are down, \
                         not yet holding its lease, or cut off from NATS); retry in a few seconds"
                    ),
                    K::TimedOut => format!(
                        "the worker owning {host} did not answer within {}s",
                        self.timeout.as_secs()
                    ),
                    _ => format!("asking the worker owning {host}: {e}"),
                });
            }
        };
        match serde_json::from_slice::<ReadReply>(&msg.payload) {
            Ok(ReadReply::Facts { facts, unreachable }) => OwnerRead { facts, unreachable },
            Ok(ReadReply::Refused(why)) => OwnerRead::failed(format!("the worker refused: {why}")),
            Err(e) => OwnerRead::failed(format!("the worker's answer is not one drover reads: {e}")),
        }
    }
}
