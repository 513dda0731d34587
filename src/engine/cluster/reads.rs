//! A replica's reads of hosts, asked of the worker that owns each (by
//! request/reply on the host's subject: only the owner listens there, so
//! NATS routes the request, and a replica needs to know no lease).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::engine::logs::HostLogs;
use crate::engine::Unanswered;
use crate::model::cluster::{
    read_subject, region_of, task_subject, LogsAsk, TaskReply, TaskRequest, ReadReply, ReadRequest, ReadUnits, PROTOCOL, WORKERS_BUCKET,
};
use crate::model::logs::LogQuery;
use crate::model::outcome::Status;
use crate::model::facts::HostFacts;
use crate::model::inventory::Host;
use crate::model::target::Selector;
use crate::remote::nats::Nats;

/// How often a replica reads which regions the live workers announce.
const REGIONS_EVERY: Duration = Duration::from_secs(2);

/// The live workers' regions, and the selectors of those that are one
/// (the empty region, workers of every host, has none).
#[derive(Debug, Default)]
struct Known {
    names: Vec<String>,
    selectors: HashMap<String, Selector>,
}

type Regions = Arc<RwLock<Known>>;

/// Reads through the workers.
#[derive(Debug, Clone)]
pub struct ClusterReads {
    client: async_nats::Client,
    /// The live workers' regions.
    regions: Regions,
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

/// What one read asks of a host's owner.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The units.
    pub units: ReadUnits,
    /// Unit files too (a `unit:` step's), by unit name.
    pub files: Vec<String>,
    /// From the host itself, not the worker's snapshot (a dry run).
    pub from_host: bool,
}

impl Ask {
    /// `units`, answered from the snapshot while it is fresh.
    pub fn units(units: ReadUnits) -> Self {
        Ask {
            units,
            files: Vec::new(),
            from_host: false,
        }
    }
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
    /// Reads over `nats`, each bounded by `timeout`; the live workers'
    /// regions are followed from their bucket in the background (must be
    /// called inside a tokio runtime).
    pub fn new(nats: &Nats, timeout: Duration) -> Self {
        let regions: Regions = Arc::default();
        let (n, r) = (nats.clone(), regions.clone());
        tokio::spawn(async move {
            let mut workers = None;
            loop {
                if workers.is_none() {
                    workers = n.js.get_key_value(WORKERS_BUCKET).await.ok();
                }
                if let Some(w) = &workers {
                    match crate::engine::cluster::worker::live_regions(w).await {
                        Ok(names) => {
                            let selectors = names
                                .iter()
                                .filter(|n| !n.is_empty())
                                .filter_map(|n| Selector::parse(n).ok().map(|s| (n.clone(), s)))
                                .collect();
                            if let Ok(mut g) = r.write() {
                                *g = Known { names, selectors };
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot list the workers' regions"),
                    }
                }
                tokio::time::sleep(REGIONS_EVERY).await;
            }
        });
        ClusterReads {
            client: nats.client.clone(),
            regions,
            timeout,
        }
    }

    /// The region `host` is asked in.
    fn region(&self, host: &Host) -> String {
        let Ok(g) = self.regions.read() else {
            return String::new();
        };
        region_of(&g.names, |r| g.selectors.get(r).is_some_and(|s| s.matches(host))).to_string()
    }

    /// Read what `ask` says on `host` (resolved in the inventory of
    /// digest `inventory`) from its owning worker. Never fails: what went
    /// wrong is the host's error, as an unreachable host's is.
    pub async fn read(&self, inventory: &str, host: &Host, ask: Ask) -> OwnerRead {
        let req = ReadRequest {
            protocol: PROTOCOL,
            inventory: inventory.to_string(),
            host: host.name.clone(),
            units: ask.units,
            files: ask.files,
            from_host: ask.from_host,
            logs: None,
        };
        match self.ask(host, &req).await {
            Ok(ReadReply::Facts { facts, unreachable }) => OwnerRead { facts, unreachable },
            Ok(ReadReply::Logs(_)) => {
                OwnerRead::failed("the worker answered a read of facts with logs".into())
            }
            Ok(ReadReply::Refused(why)) => OwnerRead::failed(format!("the worker refused: {why}")),
            Err(why) => OwnerRead::failed(why),
        }
    }

    /// `q`'s journal entries on `host`, read by its owning worker. Never
    /// fails: what went wrong is the host's error.
    pub async fn logs(&self, inventory: &str, host: &Host, q: &LogQuery) -> HostLogs {
        let req = ReadRequest {
            protocol: PROTOCOL,
            inventory: inventory.to_string(),
            host: host.name.clone(),
            units: ReadUnits::These(Vec::new()),
            files: Vec::new(),
            from_host: true,
            logs: Some(LogsAsk::of(q)),
        };
        let failed = |why: String| HostLogs {
            hostname: host.name.clone(),
            status: Status::Failed,
            entries: Vec::new(),
            error: Some(why),
            unreachable: false,
            truncated: false,
            unit_unknown: false,
        };
        match self.ask(host, &req).await {
            Ok(ReadReply::Logs(r)) => HostLogs {
                hostname: host.name.clone(),
                status: match r.error {
                    None => Status::Ok,
                    Some(_) => Status::Failed,
                },
                entries: r.entries,
                error: r.error,
                unreachable: r.unreachable,
                truncated: r.truncated,
                unit_unknown: r.unit_unknown,
            },
            Ok(ReadReply::Facts { .. }) => {
                failed("the worker answered a read of logs with facts".into())
            }
            Ok(ReadReply::Refused(why)) => failed(format!("the worker refused: {why}")),
            Err(why) => failed(why),
        }
    }

    /// Send `req` to the owner of `host` and read its reply; `Err` says
    /// why there is none, in the host's words.
    async fn ask(&self, host: &Host, req: &ReadRequest) -> Result<ReadReply, String> {
        let subject = read_subject(&self.region(host), &host.name);
        self.ask_on(subject, &host.name, req, self.timeout)
            .await
            .map_err(|e| match e {
                Unanswered::NotDelivered(m) | Unanswered::NoAnswer(m) => m,
            })
    }

    /// Send `req` on `subject`, where `host`'s owner listens, and read its
    /// reply within `timeout`.
    async fn ask_on<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        host: &str,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, Unanswered> {
        let payload = serde_json::to_vec(req)
            .map_err(|e| Unanswered::NotDelivered(format!("cannot encode the request: {e}")))?;
        let msg = self
            .client
            .send_request(
                subject,
                async_nats::Request::new()
                    .payload(payload.into())
                    .timeout(Some(timeout)),
            )
            .await
            .map_err(|e| {
                use async_nats::RequestErrorKind as K;
                match e.kind() {
                    K::NoResponders => Unanswered::NotDelivered(format!(
                        "no drover worker owns {host} now (its region's workers are down, \
                         not yet holding its lease, or cut off from NATS); retry in a few seconds"
                    )),
                    K::TimedOut => Unanswered::NoAnswer(format!(
                        "the worker owning {host} did not answer within {}s",
                        timeout.as_secs()
                    )),
                    _ => Unanswered::NoAnswer(format!("asking the worker owning {host}: {e}")),
                }
            })?;
        serde_json::from_slice::<A>(&msg.payload).map_err(|e| {
            Unanswered::NoAnswer(format!("the worker's answer is not one drover reads: {e}"))
        })
    }
}

/// A job's host work, asked of each host's owner on its task subject.
#[async_trait::async_trait]
impl crate::engine::execute::HostTasks for ClusterReads {
    async fn ask(
        &self,
        host: &Host,
        req: TaskRequest,
        bound: Duration,
    ) -> Result<TaskReply, Unanswered> {
        let subject = task_subject(&self.region(host), &host.name);
        self.ask_on(subject, &host.name, &req, bound).await
    }
}
