//! One host's watcher: takes the host's pooled connection, subscribes to
//! systemd's signals, reads the host in full, then applies each signal to
//! the host's entry as it comes; pings systemd to confirm the entry is
//! current, reads in full again every heal interval (a missed signal,
//! flags systemd does not signal), and reads what a signal cannot say (a
//! newly loaded unit, a queued job's type). A lost connection marks the
//! entry stale and the watcher reconnects with backoff. Nothing here
//! sleeps to wait for a state: it waits for signals, replies and timers.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::model::facts::UnitFacts;
use crate::model::maintenance::MaintenanceState;
use crate::model::unit::UnitName;
use crate::remote::carrier::Session;
use crate::remote::systemd::UnitEvent;

use super::snapshot::{FullRead, Need};
use super::Inner;

/// First wait before reconnecting; doubled per failure up to the max.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Units a watcher reads at once (up to 4 calls each): with one read of
/// the host at a time, at most 32 of the 128 replies the bus lets a
/// connection have pending are the watcher's.
const UNITS_IN_FLIGHT: usize = 8;

/// Why a watch of a live connection ended.
enum Stop {
    /// Nobody read the host for `idle`: stop watching it.
    Idle,
    /// The entry was dropped (a reloaded inventory, shutdown).
    Gone,
    /// The connection or a read failed.
    Lost(String),
}

/// What finished among the watcher's reads.
enum Done {
    Ping(Result<(), String>),
    Full(Result<FullRead, String>, u64),
    Units(Result<BTreeMap<String, UnitFacts>, String>, u64, Vec<String>),
    Maintenance(Result<MaintenanceState, String>, u64),
    JobType(String, String, Option<String>),
    FileState(String, Result<Option<String>, String>),
}

type Work<'a> = Pin<Box<dyn Future<Output = Done> + Send + 'a>>;

/// What woke the watcher.
enum Step {
    Signal(Option<UnitEvent>),
    Ping,
    Heal,
    Asked,
    Finished(Done),
}

/// Watch one host until its entry is dropped or idle.
pub(super) async fn run(inner: Arc<Inner>, name: String) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(host) = inner.with(&name, |e| e.host.clone()) else {
            return;
        };
        let started = Instant::now();
        let stop = match inner.pool.get(&host, inner.settings.timeout).await {
            Ok(session) => {
                let stop = follow(&inner, &name, &session).await;
                if matches!(stop, Stop::Lost(_)) {
                    // The next job must not reuse a connection that broke.
                    inner.pool.discard(&name, &session);
                }
                stop
            }
            Err(e) => Stop::Lost(e.to_string()),
        };
        match stop {
            Stop::Gone => return,
            Stop::Idle => {
                let mut all = inner.hosts();
                if all
                    .get(&name)
                    .is_some_and(|e| e.asked.elapsed() >= inner.settings.idle)
                {
                    all.remove(&name);
                    return;
                }
                continue;
            }
            Stop::Lost(why) => {
                tracing::debug!(host = %name, "live snapshot: {why}; reconnecting in {backoff:?}");
                if inner.with(&name, |e| e.snap.lost(why)).is_none() {
                    return;
                }
            }
        }
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn names(units: &[String]) -> Vec<UnitName> {
    units.iter().filter_map(|u| UnitName::parse(u).ok()).collect()
}

/// Read the host in full: its loaded services, its named units and its
/// maintenance flags, over one connection, side by side.
async fn full(session: &Session, named: Vec<String>, since: u64) -> Done {
    let sd = session.systemd();
    // The listing, then the named units: together they would pass the
    // bus's bound on pending replies per connection (128), which the
    // connection's other users (jobs, reads) share. The flags come over
    // ssh meanwhile.
    let bus = async {
        let listing = sd.all_service_facts_within(true, UNITS_IN_FLIGHT).await;
        (listing, each_unit(session, &named).await)
    };
    let ((listing, units), m) =
        futures_util::join!(bus, crate::remote::maintenance::read(session));
    let read = (|| {
        Ok::<_, String>(FullRead {
            listing: listing.map_err(|e| e.to_string())?,
            named: units?,
            maintenance: m?,
        })
    })();
    Done::Full(read, since)
}

/// Read units one by one (pipelined): a unit that cannot be read (one
/// collected between the calls of its read) is left out, to be read by
/// the host's next read; only a lost connection fails the whole.
async fn each_unit(session: &Session, units: &[String]) -> Result<BTreeMap<String, UnitFacts>, String> {
    let sd = session.systemd();
    let names = names(units);
    let names = &names;
    // By index: a closure over `&UnitName` items makes the future not
    // provably Send (rust-lang/rust#102211), and the watcher is spawned.
    let reads: Vec<_> = futures_util::stream::iter(0..names.len())
        .map(|i| sd.unit_facts(std::slice::from_ref(&names[i])))
        // Up to 3 pending replies each: well below the bus's bound.
        .buffered(UNITS_IN_FLIGHT)
        .collect()
        .await;
    let mut out = BTreeMap::new();
    for r in reads {
        match r {
            Ok(m) => out.extend(m),
            Err(e) if e.is_connection_lost() => return Err(e.to_string()),
            Err(e) => tracing::debug!(host = %session.host(), "live snapshot: {e}"),
        }
    }
    Ok(out)
}

async fn units(session: &Session, units: Vec<String>, since: u64) -> Done {
    Done::Units(each_unit(session, &units).await, since, units)
}

async fn ping(session: &Session, within: Duration) -> Done {
    Done::Ping(ping_systemd(session, within).await)
}

async fn ping_systemd(session: &Session, within: Duration) -> Result<(), String> {
    match tokio::time::timeout(within, session.systemd().ping()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "systemd did not answer a ping within {}",
            humantime::format_duration(within)
        )),
    }
}

async fn file_state(session: &Session, unit: String) -> Done {
    let r = session.systemd().file_state_unloaded(&unit).await;
    Done::FileState(unit, r.map_err(|e| e.to_string()))
}

async fn job_type(session: &Session, unit: String, job: String) -> Done {
    let ty = session.systemd().job_type(&job).await;
    Done::JobType(unit, job, ty)
}

/// Follow the host over `session` until the connection is lost, the host
/// is idle or its entry is gone.
async fn follow(inner: &Inner, name: &str, session: &Arc<Session>) -> Stop {
    let settings = &inner.settings;
    let Some(wake) = inner.with(name, |e| e.wake.clone()) else {
        return Stop::Gone;
    };
    let mut events = match session.systemd().unit_events().await {
        Ok(e) => e,
        Err(e) => return Stop::Lost(e.to_string()),
    };
    let mut work: FuturesUnordered<Work<'_>> = FuturesUnordered::new();
    let Some((named, since)) = inner.with(name, |e| {
        e.to_read.clear();
        (e.snap.named(), e.snap.seq)
    }) else {
        return Stop::Gone;
    };
    work.push(Box::pin(full(session, named, since)));
    let mut heal = Heal {
        running: true,
        again: false,
    };
    let mut pinging = false;
    // Units to read, and whether a read of units is in flight: one at a
    // time, so a storm of signals (a daemon-reload announces every unit)
    // queues reads instead of flooding the connection.
    let mut queue: BTreeSet<String> = BTreeSet::new();
    let mut reading = false;
    // A read of the maintenance flags is in flight.
    let mut reading_flags = false;
    let mut pings = tokio::time::interval(settings.ping_every());
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heals =
        tokio::time::interval_at(tokio::time::Instant::now() + settings.heal, settings.heal);
    heals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            e = events.next() => Step::Signal(e),
            _ = pings.tick(), if !pinging => Step::Ping,
            _ = heals.tick(), if !heal.running => Step::Heal,
            _ = wake.notified() => Step::Asked,
            Some(d) = work.next() => Step::Finished(d),
        };
        // Only a wake (a job's invalidation) or a finished read changes
        // whether the flags must be read: signals and pings do not, and
        // skip the check (a reload's storm of signals).
        let flags_may_be_stale = matches!(step, Step::Asked | Step::Finished(_));
        match step {
            Step::Signal(None) => return Stop::Lost("the connection closed".into()),
            Step::Signal(Some(e)) => {
                let Some(need) = apply(inner, name, e) else {
                    return Stop::Gone;
                };
                schedule(inner, name, session, &mut work, &mut heal, &mut queue, vec![need]);
            }
            Step::Ping => {
                let idle = inner.with(name, |e| e.asked.elapsed() >= settings.idle);
                match idle {
                    None => return Stop::Gone,
                    Some(true) => {
                        session.systemd().unsubscribe().await;
                        return Stop::Idle;
                    }
                    Some(false) => {}
                }
                pinging = true;
                work.push(Box::pin(ping(session, settings.fresh)));
            }
            Step::Heal => {
                heal.running = true;
                let Some((named, since)) = inner.with(name, |e| (e.snap.named(), e.snap.seq))
                else {
                    return Stop::Gone;
                };
                work.push(Box::pin(full(session, named, since)));
            }
            Step::Asked => {
                let Some(to_read) = inner.with(name, |e| std::mem::take(&mut e.to_read)) else {
                    return Stop::Gone;
                };
                queue.extend(to_read);
            }
            Step::Finished(d) => {
                match d {
                    Done::Ping(_) => pinging = false,
                    Done::Units(..) => reading = false,
                    Done::Maintenance(..) => reading_flags = false,
                    _ => {}
                }
                match finished(inner, name, d, &mut events, &mut heal.running) {
                    Ok(needs) => {
                        schedule(inner, name, session, &mut work, &mut heal, &mut queue, needs)
                    }
                    Err(why) => return why,
                }
            }
        }
        // The flags, when a job may have changed them (invalidated) and
        // no read in flight began after that: a full read that did is
        // stale for them.
        let stale = match flags_may_be_stale && !heal.running && !reading_flags {
            true => inner.with(name, |e| e.snap.needs_maintenance().then_some(e.snap.seq)),
            false => None,
        };
        if let Some(Some(since)) = stale {
            reading_flags = true;
            // Then a ping: once both answered the entry is current.
            work.push(Box::pin(async move {
                let m = crate::remote::maintenance::read(session).await;
                let p = ping_systemd(session, settings.fresh).await;
                Done::Maintenance(m.and_then(|m| p.map(|()| m)), since)
            }));
        }
        // The full read asked for while one was in flight.
        if heal.again && !heal.running {
            heal.again = false;
            schedule(inner, name, session, &mut work, &mut heal, &mut queue, vec![Need::Full]);
        }
        // A read of the queued units, once nothing else reads the host.
        if !reading && !heal.running && !queue.is_empty() {
            reading = true;
            let since = inner.with(name, |e| e.snap.seq).unwrap_or_default();
            let batch: Vec<String> = std::mem::take(&mut queue).into_iter().collect();
            work.push(Box::pin(units(session, batch, since)));
        }
    }
}

/// The full read: one in flight at a time, and whether another must
/// follow it.
struct Heal {
    running: bool,
    again: bool,
}

/// Start the reads signals asked for.
fn schedule<'a>(
    inner: &Inner,
    name: &str,
    session: &'a Session,
    work: &mut FuturesUnordered<Work<'a>>,
    heal: &mut Heal,
    queue: &mut BTreeSet<String>,
    needs: Vec<Need>,
) {
    let since = inner.with(name, |e| e.snap.seq).unwrap_or_default();
    for need in needs {
        match need {
            Need::Nothing => {}
            Need::Units(u) => queue.extend(u),
            Need::FileState(unit) => work.push(Box::pin(file_state(session, unit))),
            Need::JobType { unit, job } => work.push(Box::pin(job_type(session, unit, job))),
            Need::Full if !heal.running => {
                heal.running = true;
                let named = inner.with(name, |e| e.snap.named()).unwrap_or_default();
                work.push(Box::pin(full(session, named, since)));
            }
            // The read in flight began before what asks for this one (a
            // daemon-reload): another follows it.
            Need::Full => heal.again = true,
        }
    }
}

/// Apply a signal to the host's entry; None when the entry is gone.
fn apply(inner: &Inner, name: &str, e: UnitEvent) -> Option<Need> {
    inner.signals.fetch_add(1, Ordering::Relaxed);
    inner.with(name, |entry| entry.snap.apply(e))
}

fn finished(
    inner: &Inner,
    name: &str,
    d: Done,
    events: &mut crate::remote::systemd::UnitEvents,
    healing: &mut bool,
) -> Result<Vec<Need>, Stop> {
    let gone = || Stop::Gone;
    let mut needs = Vec::new();
    let done = match d {
        Done::Ping(Ok(())) => {
            // Signals sent before systemd answered are on this side now,
            // maybe still queued: apply them before believing the ping.
            while let Some(Some(e)) = events.ready() {
                needs.push(apply(inner, name, e).ok_or_else(gone)?);
            }
            inner
                .with(name, |e| e.snap.confirm(Instant::now()))
                .ok_or_else(gone)
        }
        Done::Ping(Err(why)) => Err(Stop::Lost(why)),
        Done::Full(Ok(read), since) => {
            *healing = false;
            inner
                .with(name, |e| e.snap.merge_full(read, since, Instant::now()))
                .ok_or_else(gone)
        }
        Done::Full(Err(why), _) | Done::Maintenance(Err(why), _) => Err(Stop::Lost(why)),
        Done::Units(Ok(read), since, asked) => {
            // The signals our read caused (loading a unit) came before
            // its reply: apply them first, so the merge knows them.
            while let Some(Some(e)) = events.ready() {
                needs.push(apply(inner, name, e).ok_or_else(gone)?);
            }
            inner
            .with(name, |e| needs.push(e.snap.merge_units(read, since, &asked)))
            .ok_or_else(gone)
        }
        Done::Units(Err(why), ..) => {
            // A unit read failing is the host's read failing: read again.
            Err(Stop::Lost(why))
        }
        Done::Maintenance(Ok(m), since) => {
            while let Some(Some(e)) = events.ready() {
                needs.push(apply(inner, name, e).ok_or_else(gone)?);
            }
            inner
                .with(name, |e| {
                    e.snap.set_maintenance(m, since);
                    e.snap.confirm(Instant::now());
                })
                .ok_or_else(gone)
        }
        Done::FileState(unit, Ok(state)) => inner
            .with(name, |e| e.snap.file_state(&unit, state))
            .ok_or_else(gone),
        Done::FileState(_, Err(why)) => Err(Stop::Lost(why)),
        Done::JobType(unit, job, ty) => inner
            .with(name, |e| e.snap.job_type(&unit, &job, ty))
            .ok_or_else(gone),
    };
    done.map(|()| needs)
}
