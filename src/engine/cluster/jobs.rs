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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};

use crate::engine::cluster::coordination::{Fenced, JobLeases, Renewed};

use crate::engine::claims::Held;
use crate::engine::events::{Event, EventSink, JobObserver};
use crate::engine::job::Job;
use crate::engine::job_store::{
    job_hosts, DirJobs, Entry, JobQuery, JobStatus, JobStore, JobSummary, JobView, Removed,
};
use crate::engine::apply::ApplyOptions;
use crate::engine::cluster::coordination::Holding;
use crate::engine::execute::task_job;
use crate::model::cluster::{job_subject, JobLease, JobMessage, JOBS_STREAM, PROTOCOL};
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
    /// Per job this replica coordinates: its lease's renewals. Nothing of
    /// a job is published while its lease is not fresh, and nothing ever
    /// once another replica took it over.
    fences: Fences,
    /// Jobs taken over, before their run starts here: the results the
    /// stream holds already (not published again) and their count.
    continued: Mutex<HashMap<String, (usize, StepHosts)>>,
    /// Each job whose end the stream acknowledged.
    ended_tx: broadcast::Sender<String>,
}

type Fences = Arc<Mutex<HashMap<String, Arc<Renewed>>>>;

/// (step, host) pairs.
pub type StepHosts = HashSet<(String, String)>;

/// The job a message is of.
fn job_of(m: &JobMessage) -> &str {
    match m {
        JobMessage::Start { job_id, .. } | JobMessage::Result { job_id, .. } => job_id,
        JobMessage::End { report } => &report.job_id,
    }
}

/// Whether a message of `job` may go now: Some(true) yes, Some(false)
/// never (the job was taken over), None not yet (its lease is stale).
fn may_publish(fences: &Fences, job: &str, waited: Duration) -> Option<bool> {
    let g = fences.lock().unwrap_or_else(|p| p.into_inner());
    match g.get(job) {
        None => Some(true),
        Some(r) if r.lost() => Some(false),
        Some(r) if r.fresh() => Some(true),
        // Stale for a whole fence: the lease is as good as gone, and
        // whoever takes the job over reads again on the hosts what this
        // message would have told.
        Some(r) if waited >= r.fence() => Some(false),
        Some(_) => None,
    }
}

impl Publisher {
    /// A publisher over `nats` named `by`, telling `inner` too.
    pub fn new(nats: Nats, by: String, inner: Option<Arc<dyn JobObserver>>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, JobMessage)>();
        let fences: Fences = Arc::default();
        let (ended_tx, _) = broadcast::channel(64);
        let (f2, e2) = (fences.clone(), ended_tx.clone());
        tokio::spawn(async move {
            let (fences, ended_tx) = (f2, e2);
            // Made once, before the first message; retried until it is.
            while let Err(e) = jobs_stream(&nats).await {
                tracing::warn!("cannot reach the jobs stream yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            while let Some((subject, id, msg)) = rx.recv().await {
                let job = job_of(&msg).to_string();
                // A stale lease holds the job's messages back until it is
                // renewed; one taken over drops them.
                let t0 = std::time::Instant::now();
                let go = loop {
                    match may_publish(&fences, &job, t0.elapsed()) {
                        Some(go) => break go,
                        None => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                };
                if t0.elapsed() >= Duration::from_secs(1) {
                    tracing::warn!(job, id, waited_ms = t0.elapsed().as_millis() as u64, "a job message waited for its lease to be renewed");
                }
                if !go {
                    tracing::warn!(job, id, "a message of a job whose lease this replica lost: not published");
                    continue;
                }
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
                if sent && matches!(msg, JobMessage::End { .. }) {
                    let _ = ended_tx.send(job);
                }
            }
        });
        Publisher {
            inner,
            by,
            tx,
            counts: Arc::default(),
            fences,
            continued: Mutex::default(),
            ended_tx,
        }
    }

    /// The job's messages go only while `renewed` is fresh.
    pub fn fence(&self, job_id: &str, renewed: Arc<Renewed>) {
        if let Ok(mut g) = self.fences.lock() {
            g.insert(job_id.to_string(), renewed);
        }
    }

    /// The job's run here continues one taken over: the stream holds
    /// `have` results already, `carried` by (step, host), which the run
    /// reports again and are not published twice.
    pub fn continues(&self, job_id: &str, have: usize, carried: HashSet<(String, String)>) {
        if let Ok(mut g) = self.continued.lock() {
            g.insert(job_id.to_string(), (have, carried));
        }
    }

    /// Told the id of each job whose end the stream acknowledged.
    pub fn ends(&self) -> broadcast::Receiver<String> {
        self.ended_tx.subscribe()
    }

    /// Whether another replica took the job over from this one.
    pub fn lost(&self, job_id: &str) -> bool {
        self.fences
            .lock()
            .map(|g| g.get(job_id).is_some_and(|r| r.lost()))
            .unwrap_or(false)
    }
}

/// One job's sink: its results to the publisher, in order.
struct Publishing {
    job_id: String,
    /// Results the stream holds already (a takeover's carried ones).
    skip: Mutex<HashSet<(String, String)>>,
    subject: String,
    tx: mpsc::UnboundedSender<(String, String, JobMessage)>,
    counts: Arc<Mutex<HashMap<String, (String, usize)>>>,
    inner: Option<Arc<dyn EventSink>>,
}

impl EventSink for Publishing {
    fn event(&self, e: &Event) {
        let again = match e {
            Event::HostResult(r) => self
                .skip
                .lock()
                .map(|mut g| g.remove(&(r.step.clone(), r.hostname.clone())))
                .unwrap_or(false),
            _ => false,
        };
        if let (Event::HostResult(r), false) = (e, again) {
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
        let (have, skip) = self
            .continued
            .lock()
            .ok()
            .and_then(|mut g| g.remove(job_id))
            .unwrap_or_default();
        if let Ok(mut c) = self.counts.lock() {
            c.insert(job_id.to_string(), (run.clone(), have));
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
            skip: Mutex::new(skip),
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
    /// The stream sequence of the last message applied.
    applied: Arc<std::sync::atomic::AtomicU64>,
}

impl Mirror {
    /// Follow the stream over `nats` from its start, keeping at most
    /// `keep` jobs (the oldest finished go first).
    pub fn follow(nats: Nats, keep: usize) -> Mirror {
        let m = Mirror::empty(keep);
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

    /// A mirror of no job yet, keeping at most `keep`.
    fn empty(keep: usize) -> Mirror {
        Mirror {
            jobs: Arc::default(),
            keep: keep.max(1),
            applied: Arc::default(),
        }
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
            if let Ok(info) = m.info() {
                self.applied
                    .fetch_max(info.stream_sequence, std::sync::atomic::Ordering::SeqCst);
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
                // The same id again: a resume of a job that ended, or a
                // takeover of one whose coordinator died.
                if let Some(e) = g.by_id.get(&job_id) {
                    e.mirror_reopen();
                    e.mirror_coordinator(by);
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

    /// Wait (up to `bound`) until the stream's last message is applied.
    pub async fn caught_up(&self, nats: &Nats, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        let last = loop {
            let info = async { jobs_stream(nats).await?.info().await.map_err(|e| e.to_string()).map(|i| i.state.last_sequence) };
            match tokio::time::timeout_at(deadline, info).await {
                Ok(Ok(last)) => break last,
                Ok(Err(e)) => tracing::warn!("the jobs stream's state: {e}"),
                Err(_) => return false,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        while self.applied.load(std::sync::atomic::Ordering::SeqCst) < last {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
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
    publisher: Arc<Publisher>,
    leases: Arc<JobLeases>,
    /// Jobs this replica took over: shown as the stream holds them (their
    /// results in the stream's order, the same on every replica).
    taken: Mutex<HashSet<String>>,
}

impl ClusterJobs {
    /// `local` runs this replica's jobs (its observer `publisher`);
    /// `mirror` follows the stream; `leases` hold the jobs run here.
    pub fn new(local: DirJobs, mirror: Mirror, publisher: Arc<Publisher>, leases: Arc<JobLeases>) -> Self {
        ClusterJobs {
            local,
            mirror,
            publisher,
            leases,
            taken: Mutex::default(),
        }
    }

    /// The job as the stream shows it.
    pub fn mirrored(&self, id: &str) -> Option<Arc<Entry>> {
        self.mirror.get(id)
    }

    /// Wait (up to `bound`) until this replica has followed the stream to
    /// its last message: nothing acknowledged is missed by a takeover.
    pub async fn caught_up(&self, nats: &Nats, bound: Duration) -> bool {
        self.mirror.caught_up(nats, bound).await
    }

    /// Where a job's journal is in this replica's store.
    pub fn journal_path(&self, id: &str) -> PathBuf {
        crate::engine::journal::Journal::beside(&self.local.report_path(id))
    }

    /// Continue a job taken over from a replica that died: the stream holds
    /// `have` results already, `carried` by (step, host).
    pub async fn continue_taken(
        &self,
        job: Job,
        opts: ApplyOptions,
        held: Held,
        holding: Holding,
        carried: HashSet<(String, String)>,
        have: usize,
    ) -> Result<Arc<Entry>> {
        let id = opts.job_id.clone().unwrap_or_default();
        if let Ok(mut g) = self.taken.lock() {
            g.insert(id.clone());
        }
        self.publisher.continues(&id, have, carried);
        self.run(job, opts, held, holding).await
    }

    /// Give back a lease taken over for a job that will not run here.
    pub async fn give_back(&self, holding: Holding) {
        self.leases.give_back(holding).await
    }

    /// End a job taken over that cannot go on here with `report`, then
    /// give its lease back once the stream holds that end.
    pub async fn abandon(&self, holding: Holding, report: JobReport) {
        let id = report.job_id.clone();
        let mut ends = self.publisher.ends();
        let msg = JobMessage::End { report };
        let _ = self.publisher.tx.send((job_subject(&id), format!("{id}.abandoned.end"), msg));
        let wait = async {
            while let Ok(j) = ends.recv().await {
                if j == id {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), wait).await;
        self.leases.give_back(holding).await
    }

    fn shown_from_stream(&self, id: &str) -> bool {
        self.publisher.lost(id) || self.taken.lock().map(|g| g.contains(id)).unwrap_or(false)
    }

    /// Run `job` here under its lease: its tasks and messages fenced by
    /// the lease, the lease kept until the stream holds its end.
    async fn run(&self, job: Job, mut opts: ApplyOptions, held: Held, holding: Holding) -> Result<Arc<Entry>> {
        let id = opts.job_id.clone().unwrap_or_default();
        let renewed = holding.renewed.clone();
        self.publisher.fence(&id, renewed.clone());
        opts.tasks = opts.tasks.map(|inner| {
            Arc::new(Fenced {
                inner,
                renewed: renewed.clone(),
            }) as Arc<dyn crate::engine::execute::HostTasks>
        });
        let mut ends = self.publisher.ends();
        let entry = match self.local.start(job, opts, held, None).await {
            Ok(e) => e,
            Err(e) => {
                self.leases.give_back(holding).await;
                return Err(e);
            }
        };
        let (e2, id2) = (entry.clone(), id.clone());
        // Given back once the stream holds the job's end: a replica that
        // dies before that leaves the lease, and the one that takes it
        // finds the job ended.
        let done = async move {
            loop {
                match ends.recv().await {
                    Ok(j) if j == id2 => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if e2.view().outcome != JobStatus::Running {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        let stop = entry.clone();
        self.leases.keep(holding, done, move || {
            stop.cancel();
        });
        Ok(entry)
    }
}

/// What a replica that takes `job` over needs of it (see
/// [`crate::engine::cluster::coordination`]).
fn lease_of(job: &Job, opts: &ApplyOptions, id: &str, by: &str) -> JobLease {
    let mut task = task_job(job, id, opts.allow_protected, opts.step_timeout, opts.failure_logs);
    // No bucket holds a secret.
    task.params = job.params_record();
    JobLease {
        protocol: PROTOCOL,
        by: by.to_string(),
        job: task,
        scope: opts.scope.clone(),
        ignore_window: opts.ignore_window,
        secret: job.params.secret_names().next().is_some(),
        retry_of: match opts.carry.as_ref().map(|c| &c.origin) {
            Some(crate::engine::carry::Origin::Retry(p)) => Some(p.clone()),
            _ => opts.resume.as_ref().and_then(|c| c.header.retry_of.clone()),
        },
    }
}

#[async_trait::async_trait]
impl JobStore for ClusterJobs {
    fn get(&self, id: &str) -> Option<Arc<Entry>> {
        if self.shown_from_stream(id) {
            return self.mirror.get(id).or_else(|| self.local.get(id));
        }
        self.local.get(id).or_else(|| self.mirror.get(id))
    }

    fn here(&self, id: &str) -> Option<Arc<Entry>> {
        match self.publisher.lost(id) {
            true => None,
            false => self.local.get(id),
        }
    }

    fn list(&self, q: &JobQuery) -> Vec<JobView> {
        // This replica's own jobs as it holds them (no lag behind the
        // stream), the others' as the stream tells them.
        self.mirror
            .list(q)
            .into_iter()
            .map(|e| {
                let id = e.view().job_id;
                match self.shown_from_stream(&id) {
                    true => None,
                    false => self.local.get(&id),
                }
                .map(|l| l.view())
                .unwrap_or_else(|| e.view())
            })
            .collect()
    }

    async fn start(&self, job: Job, mut opts: ApplyOptions, held: Held) -> Result<Arc<Entry>> {
        let id = opts
            .job_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        opts.job_id = Some(id.clone());
        let lease = lease_of(&job, &opts, &id, self.leases.by());
        let holding = self.leases.take(&id, &lease).await.map_err(|e| {
            crate::model::error::Error::Internal(format!(
                "cannot take the job's lease, so no replica could take it over: {e}"
            ))
        })?;
        self.run(job, opts, held, holding).await
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

    fn result_of(id: &str, index: usize, host: &str) -> JobMessage {
        JobMessage::Result {
            job_id: id.into(),
            index,
            result: result(host),
        }
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
        let m = Mirror::empty(10);
        let r = |index, host| result_of("j", index, host);
        m.apply(start("j"));
        m.apply(r(0, "a"));
        // Delivered twice (a publish retried past the duplicate window).
        m.apply(r(0, "a"));
        m.apply(r(1, "b"));
        let e = m.get("j").unwrap();
        let (got, done) = e.results_since(0);
        assert_eq!(got.iter().map(|r| r.hostname.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(done, None);
        assert_eq!(e.coordinator().as_deref(), Some("replica-1"));
        // A result for a job never started is dropped, not a panic.
        m.apply(result_of("unknown", 0, "a"));
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
    fn a_job_taken_over_names_its_new_coordinator_and_goes_on_at_the_next_index() {
        let m = Mirror::empty(10);
        let r = |index, host| result_of("j", index, host);
        m.apply(start("j"));
        m.apply(r(0, "a"));
        // replica-2 takes it over: its run numbers on from the stream's.
        let mut again = start("j");
        if let JobMessage::Start { by, .. } = &mut again {
            *by = "replica-2".into();
        }
        m.apply(again);
        m.apply(r(1, "b"));
        let e = m.get("j").unwrap();
        assert_eq!(e.view().outcome, JobStatus::Running);
        assert_eq!(e.coordinator().as_deref(), Some("replica-2"));
        let hosts: Vec<String> = e.results_since(0).0.into_iter().map(|r| r.hostname).collect();
        assert_eq!(hosts, ["a", "b"]);
    }

    #[test]
    fn past_keep_the_oldest_finished_job_goes_and_running_ones_stay() {
        let m = Mirror::empty(2);
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
