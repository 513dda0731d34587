//! A cluster's jobs seen from every replica: the coordinating replica
//! publishes each job's start, results and end to the JetStream stream
//! [`JOBS_STREAM`] (in order, each with a `Nats-Msg-Id`, so a publish
//! retried is stored once), and every replica follows the stream into
//! [`Entry`]s of its own. Any replica then lists, shows and streams any
//! job; an event stream resumed on another replica continues at the same
//! result index, as every replica holds the results in the stream's order.
//!
//! The coordinating replica runs the job in its own [`DirJobs`] (journal
//! and report in its `--jobs-dir`, a retry and a resume there too); what
//! it publishes is what the others show.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::engine::claims::Held;
use crate::engine::events::{Event, EventSink, JobObserver};
use crate::engine::job::Job;
use crate::engine::job_store::{
    job_hosts, DirJobs, Entry, JobQuery, JobStatus, JobStore, JobSummary, JobView, Removed,
};
use crate::engine::apply::ApplyOptions;
use crate::model::cluster::{job_subject, JobMessage, JOBS_STREAM};
use crate::model::error::Result;
use crate::model::report::JobReport;
use crate::remote::nats::Nats;

/// How long the stream keeps a job's messages.
const KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Tries of one publish before the message is given up (and logged).
const PUBLISH_TRIES: usize = 5;

/// The stream, made if it does not exist.
async fn jobs_stream(nats: &Nats) -> std::result::Result<stream::Stream, String> {
    nats.js
        .get_or_create_stream(stream::Config {
            name: JOBS_STREAM.into(),
            subjects: vec!["drover.jobs.>".into()],
            max_age: KEEP_FOR,
            storage: stream::StorageType::File,
            num_replicas: nats.replicas(),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {JOBS_STREAM}: {e}"))
}

/// Publishes what the jobs this replica coordinates do, in order: one
/// task per replica sends every message and awaits its ack.
pub struct Publisher {
    inner: Option<Arc<dyn JobObserver>>,
    by: String,
    tx: mpsc::UnboundedSender<(String, String, JobMessage)>,
    /// Per running job: this run's nonce (a resume runs the same id
    /// again) and the results published so far.
    counts: Arc<Mutex<HashMap<String, (String, usize)>>>,
}

impl Publisher {
    /// A publisher over `nats` named `by`, telling `inner` too.
    pub fn new(nats: Nats, by: String, inner: Option<Arc<dyn JobObserver>>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, JobMessage)>();
        tokio::spawn(async move {
            // Made once, before the first message; retried until it is.
            while let Err(e) = jobs_stream(&nats).await {
                tracing::warn!("cannot reach the jobs stream yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            while let Some((subject, id, msg)) = rx.recv().await {
                let Ok(payload) = serde_json::to_vec(&msg) else {
                    continue;
                };
                let mut sent = false;
                for _ in 0..PUBLISH_TRIES {
                    let p = jetstream::message::PublishMessage::build()
                        .payload(payload.clone().into())
                        .message_id(&id);
                    match nats.js.send_publish(subject.clone(), p).await {
                        Ok(ack) => match ack.await {
                            Ok(_) => {
                                sent = true;
                                break;
                            }
                            Err(e) => tracing::warn!(id, error = %e, "a job message not acked; sent again"),
                        },
                        Err(e) => tracing::warn!(id, error = %e, "a job message not sent; sent again"),
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if !sent {
                    tracing::error!(id, "a job message was given up: other replicas miss it");
                }
            }
        });
        Publisher {
            inner,
            by,
            tx,
            counts: Arc::default(),
        }
    }
}

/// One job's sink: its results to the publisher, in order.
struct Publishing {
    job_id: String,
    subject: String,
    tx: mpsc::UnboundedSender<(String, String, JobMessage)>,
    counts: Arc<Mutex<HashMap<String, (String, usize)>>>,
    inner: Option<Arc<dyn EventSink>>,
}

impl EventSink for Publishing {
    fn event(&self, e: &Event) {
        if let Event::HostResult(r) = e {
            let (run, index) = {
                let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
                let (run, n) = c
                    .entry(self.job_id.clone())
                    .or_insert_with(|| (String::new(), 0));
                *n += 1;
                (run.clone(), *n - 1)
            };
            let msg = JobMessage::Result {
                job_id: self.job_id.clone(),
                index,
                result: r.clone(),
            };
            let id = format!("{}.{run}.{index}", self.job_id);
            let _ = self.tx.send((self.subject.clone(), id, msg));
        }
        if let Some(i) = &self.inner {
            i.event(e);
        }
    }
}

impl JobObserver for Publisher {
    fn sink(&self, job_id: &str, job: &Job) -> Arc<dyn EventSink> {
        let subject = job_subject(job_id);
        // Each run of an id (a resume runs it again) publishes its own
        // messages: the ids tell a retried publish, not a second run.
        let run = uuid::Uuid::new_v4().simple().to_string();
        if let Ok(mut c) = self.counts.lock() {
            c.insert(job_id.to_string(), (run.clone(), 0));
        }
        let start = JobMessage::Start {
            job_id: job_id.to_string(),
            playbook: job.playbook.name.clone(),
            started_at: crate::model::now_rfc3339(),
            hosts: job_hosts(job),
            retry_of: None,
            by: self.by.clone(),
        };
        let _ = self
            .tx
            .send((subject.clone(), format!("{job_id}.{run}.start"), start));
        Arc::new(Publishing {
            job_id: job_id.to_string(),
            subject,
            tx: self.tx.clone(),
            counts: self.counts.clone(),
            inner: self.inner.as_ref().map(|i| i.sink(job_id, job)),
        })
    }

    fn ended(&self, report: &JobReport) {
        let run = self
            .counts
            .lock()
            .ok()
            .and_then(|mut c| c.remove(&report.job_id))
            .map(|(run, _)| run)
            .unwrap_or_default();
        let msg = JobMessage::End {
            report: report.clone(),
        };
        let id = format!("{}.{run}.end", report.job_id);
        let _ = self.tx.send((job_subject(&report.job_id), id, msg));
        if let Some(i) = &self.inner {
            i.ended(report);
        }
    }
}

/// Every job of the stream, newest first in listings, at most `keep`.
#[derive(Default)]
struct Mirrored {
    by_id: HashMap<String, Arc<Entry>>,
    /// (started_at, id), oldest first.
    order: BTreeSet<(String, String)>,
}

/// The jobs of the stream, followed in the background.
#[derive(Clone)]
pub struct Mirror {
    jobs: Arc<Mutex<Mirrored>>,
    keep: usize,
}

impl Mirror {
    /// Follow the stream over `nats` from its start, keeping at most
    /// `keep` jobs (the oldest finished go first).
    pub fn follow(nats: Nats, keep: usize) -> Mirror {
        let m = Mirror {
            jobs: Arc::default(),
            keep: keep.max(1),
        };
        let me = m.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.run(&nats).await {
                    tracing::warn!("following the jobs stream: {e}; again in 1s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        m
    }

    async fn run(&self, nats: &Nats) -> std::result::Result<(), String> {
        let stream = jobs_stream(nats).await?;
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: nats.client.new_inbox(),
                filter_subject: "drover.jobs.>".into(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("consumer: {e}"))?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| e.to_string())?;
            match serde_json::from_slice::<JobMessage>(&m.payload) {
                Ok(msg) => self.apply(msg),
                Err(e) => {
                    tracing::warn!(subject = %m.subject, error = %e, "a malformed job message: dropped")
                }
            }
        }
        Err("the stream ended".into())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mirrored> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, msg: JobMessage) {
        let mut g = self.lock();
        match msg {
            JobMessage::Start {
                job_id,
                playbook,
                started_at,
                hosts,
                retry_of,
                by,
            } => {
                // The same id again: a resume of a job that ended.
                if let Some(e) = g.by_id.get(&job_id) {
                    e.mirror_reopen();
                    return;
                }
                let view = JobView {
                    job_id: job_id.clone(),
                    playbook,
                    started_at: started_at.clone(),
                    finished_at: None,
                    outcome: JobStatus::Running,
                    results: Vec::new(),
                    retry_of,
                };
                g.by_id
                    .insert(job_id.clone(), Entry::mirrored(view, hosts, by));
                g.order.insert((started_at, job_id));
                // Past `keep`, the oldest finished job goes.
                while g.by_id.len() > self.keep {
                    let oldest = g
                        .order
                        .iter()
                        .find(|(_, id)| {
                            g.by_id
                                .get(id)
                                .is_some_and(|e| e.view().outcome != JobStatus::Running)
                        })
                        .cloned();
                    let Some(k) = oldest else { break };
                    g.order.remove(&k);
                    g.by_id.remove(&k.1);
                }
            }
            JobMessage::Result {
                job_id,
                index,
                result,
            } => {
                let Some(e) = g.by_id.get(&job_id) else { return };
                let have = e.results_since(0).0.len();
                // The stream's order is the results' order; one seen
                // already (a publish retried past the duplicate window)
                // is shown once.
                if index == have {
                    e.mirror_result(&result);
                } else if index > have {
                    tracing::warn!(job = %job_id, index, have, "a job's results have a gap");
                    e.mirror_result(&result);
                }
            }
            JobMessage::End { report } => {
                if let Some(e) = g.by_id.get(&report.job_id) {
                    if e.view().outcome == JobStatus::Running {
                        e.mirror_end(report);
                    }
                }
            }
        }
    }

    /// A job by id.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.lock().by_id.get(id).cloned()
    }

    /// Jobs newest first, filtered and paged.
    pub fn list(&self, q: &JobQuery) -> Vec<Arc<Entry>> {
        let g = self.lock();
        g.order
            .iter()
            .rev()
            .filter_map(|(_, id)| g.by_id.get(id))
            .filter(|e| e.within(q.within.as_ref()))
            .filter(|e| q.host.as_ref().is_none_or(|h| e.hosts().contains(h)))
            .filter(|e| {
                let v = e.summary();
                q.status.is_none_or(|s| v.outcome == s)
            })
            .filter(|e| {
                q.playbook
                    .as_ref()
                    .is_none_or(|p| e.view().playbook == *p)
            })
            .skip(q.offset)
            .take(q.limit)
            .cloned()
            .collect()
    }

    fn summaries(&self, within: Option<&BTreeSet<String>>) -> Vec<JobSummary> {
        let g = self.lock();
        g.order
            .iter()
            .rev()
            .filter_map(|(_, id)| g.by_id.get(id))
            .filter(|e| e.within(within))
            .map(|e| e.summary())
            .collect()
    }

    fn forget(&self, id: &str) {
        let mut g = self.lock();
        if let Some(e) = g.by_id.remove(id) {
            let started = e.view().started_at;
            g.order.remove(&(started, id.to_string()));
        }
    }
}

/// A replica's jobs: those it coordinates run in its own store; every
/// job of the cluster is seen through the stream.
pub struct ClusterJobs {
    local: DirJobs,
    mirror: Mirror,
}

impl ClusterJobs {
    /// `local` runs this replica's jobs (its observer a [`Publisher`]);
    /// `mirror` follows the stream.
    pub fn new(local: DirJobs, mirror: Mirror) -> Self {
        ClusterJobs { local, mirror }
    }
}

#[async_trait::async_trait]
impl JobStore for ClusterJobs {
    fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.local.get(id).or_else(|| self.mirror.get(id))
    }

    fn list(&self, q: &JobQuery) -> Vec<JobView> {
        // This replica's own jobs as it holds them (no lag behind the
        // stream), the others' as the stream tells them.
        self.mirror
            .list(q)
            .into_iter()
            .map(|e| {
                let id = e.view().job_id;
                self.local
                    .get(&id)
                    .map(|l| l.view())
                    .unwrap_or_else(|| e.view())
            })
            .collect()
    }

    async fn start(&self, job: Job, opts: ApplyOptions, held: Held) -> Result<Arc<Entry>> {
        self.local.start(job, opts, held, None).await
    }

    fn stop_all(&self, why: &str) {
        self.local.stop_all(why)
    }

    async fn shutdown(&self, why: &str) {
        self.local.shutdown(why).await
    }

    fn journal(&self, id: &str) -> Option<PathBuf> {
        JobStore::journal(&self.local, id)
    }

    fn summaries(&self, within: Option<&BTreeSet<String>>) -> Vec<JobSummary> {
        self.mirror.summaries(within)
    }

    fn remove(&self, id: &str) -> Removed {
        let r = self.local.remove(id);
        if r == Removed::Deleted {
            self.mirror.forget(id);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::outcome::Outcome;
    use crate::model::report::{JobResult, RunOutcome};

    fn result(host: &str) -> JobResult {
        JobResult::new(
            host,
            "roll",
            "demo-web.service",
            &Outcome::Ok { changed: true },
            &Default::default(),
        )
    }

    fn start(id: &str) -> JobMessage {
        JobMessage::Start {
            job_id: id.into(),
            playbook: "roll".into(),
            started_at: format!("2026-01-01T00:00:0{}Z", id.len() % 10),
            hosts: vec!["a".into(), "b".into()],
            retry_of: None,
            by: "replica-1".into(),
        }
    }

    fn end(id: &str, results: Vec<JobResult>) -> JobMessage {
        JobMessage::End {
            report: JobReport {
                job_id: id.into(),
                playbook: "roll".into(),
                started_at: "2026-01-01T00:00:00Z".into(),
                finished_at: "2026-01-01T00:01:00Z".into(),
                outcome: RunOutcome::Completed,
                results,
                inputs: None,
                retry_of: None,
            },
        }
    }

    #[test]
    fn the_stream_is_followed_in_order_each_result_once_and_a_resume_reopens() {
        let m = Mirror {
            jobs: Arc::default(),
            keep: 10,
        };
        let r = |index, host| JobMessage::Result {
            job_id: "j".into(),
            index,
            result: result(host),
        };
        m.apply(start("j"));
        m.apply(r(0, "a"));
        // Delivered twice (a publish retried past the duplicate window).
        m.apply(r(0, "a"));
        m.apply(r(1, "b"));
        let e = m.get("j").unwrap();
        let (got, done) = e.results_since(0);
        assert_eq!(got.iter().map(|r| r.hostname.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(done, None);
        assert_eq!(e.coordinator(), Some("replica-1"));
        // A result for a job never started is dropped, not a panic.
        m.apply(JobMessage::Result {
            job_id: "unknown".into(),
            index: 0,
            result: result("a"),
        });
        m.apply(end("j", got.clone()));
        assert_eq!(e.results_since(0).1, Some(JobStatus::Completed));
        // A resume runs the same id again: running until its own end.
        m.apply(start("j"));
        assert_eq!(e.view().outcome, JobStatus::Running);
        m.apply(end("j", got));
        assert_eq!(e.view().outcome, JobStatus::Completed);
        let listed = m.list(&JobQuery {
            limit: 10,
            ..Default::default()
        });
        assert_eq!(listed.len(), 1);
    }

    #[test]
    fn past_keep_the_oldest_finished_job_goes_and_running_ones_stay() {
        let m = Mirror {
            jobs: Arc::default(),
            keep: 2,
        };
        m.apply(start("a"));
        m.apply(start("bb"));
        m.apply(end("bb", Vec::new()));
        m.apply(start("ccc"));
        // "a" runs: it stays; "bb" ended: it goes.
        assert!(m.get("a").is_some());
        assert!(m.get("bb").is_none());
        assert!(m.get("ccc").is_some());
    }
}
