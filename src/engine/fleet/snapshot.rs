//! One host's entry in the live snapshot, and the pure rules that keep it:
//! how a signal changes it, how a read merges into it without undoing a
//! newer signal, when it is fresh enough to answer from, and its bounds.
//! No I/O here: the watcher (`watch`) feeds it, the fleet (`mod`) asks it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::model::facts::{HostFacts, UnitFacts};
use crate::model::maintenance::MaintenanceState;
use crate::remote::systemd::{timestamp_rfc3339, UnitChange, UnitEvent};

/// Loaded services kept per host for listings. A host with more has no
/// listing in the snapshot (listings of it read the host, as without
/// one); its named units are still followed.
pub const MAX_LISTED: usize = 2048;

/// Units named by runbooks, Consul registrations and reads that a host's
/// entry follows besides its listing; past it the one asked for least
/// recently is forgotten.
pub const MAX_NAMED: usize = 256;

/// A unit as the snapshot holds it.
#[derive(Debug, Clone)]
struct Known {
    facts: UnitFacts,
    /// systemd has it loaded (ListUnits shows it): it is in listings.
    loaded: bool,
    /// The signal sequence number that last changed it (0: a read did).
    seq: u64,
    /// A queued job whose type is not read yet (its path).
    pending_job: Option<String>,
    /// Collected by systemd: whether a file still defines it is not read
    /// yet (a transient unit is then not-found, a unit file's is not).
    pending_file: bool,
}

/// What the watcher must do after a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing.
    Nothing,
    /// Read these units (a service loaded that the listing lacks).
    Units(Vec<String>),
    /// Read whether a unit file defines this collected unit.
    FileState(String),
    /// Read the type of this unit's queued job.
    JobType {
        /// The unit.
        unit: String,
        /// The job's object path.
        job: String,
    },
    /// Read everything again (systemd reloaded its unit files).
    Full,
}

/// A full read of a host: its loaded services, its named units and its
/// maintenance flags.
#[derive(Debug, Clone, Default)]
pub struct FullRead {
    /// Every loaded service (`status` without units).
    pub listing: BTreeMap<String, UnitFacts>,
    /// The named units (`status` with units).
    pub named: BTreeMap<String, UnitFacts>,
    /// The maintenance state file.
    pub maintenance: MaintenanceState,
}

/// One host's entry.
#[derive(Debug, Clone, Default)]
pub struct HostSnap {
    units: BTreeMap<String, Known>,
    /// Named units, with when each was last asked for.
    named: BTreeMap<String, Instant>,
    /// The maintenance flags; None: not known now (a job may have changed
    /// them), so the entry cannot answer.
    maintenance: Option<MaintenanceState>,
    /// The listing is complete (a full read held it, within bounds).
    listing: bool,
    /// When the state was last confirmed current: a full read, or a ping
    /// answered after every earlier signal was applied. None: not now.
    confirmed: Option<Instant>,
    /// When the last full read finished.
    pub read_at: Option<Instant>,
    /// Why the host cannot be followed now (unreachable, lost).
    pub error: Option<String>,
    /// Signals applied (and invalidations: a read's `since` orders it
    /// against both).
    pub seq: u64,
    /// The `seq` of the last invalidation: flags read before it are stale.
    invalidated: u64,
    /// A daemon-reload is under way (between its two Reloading signals).
    reloading: bool,
    /// The `seq` of the last finished daemon-reload: until a full read
    /// that began after it is in, the entry answers nothing.
    reloaded: u64,
    /// The `since` of the last full read merged.
    full_since: u64,
    /// Units a signal removed, with its sequence number: a read that
    /// began before it must not bring them back. Emptied by full reads.
    removed: BTreeMap<String, u64>,
    /// Units being read because of a signal, and whether another signal
    /// came meanwhile (then they are read once more): one read per unit
    /// in flight, however many signals, so a unit's burst of changes
    /// never floods the connection with reads.
    reading: BTreeMap<String, bool>,
    /// Services a read found not loaded (not-found), not named: reading a
    /// unit loads it for a moment, and systemd signals that (UnitNew,
    /// PropertiesChanged) to us: without this, each read would ask for the
    /// next, for as long as the host is watched. Their signals are
    /// ignored until one says the unit loaded; emptied by full reads.
    absent: BTreeSet<String>,
}

/// A `.service` unit with a concrete name: what listings show.
fn listable(unit: &str) -> bool {
    unit.ends_with(".service") && !unit.contains("@.")
}

impl HostSnap {
    /// The units to read besides the listing, most recently asked first.
    pub fn named(&self) -> Vec<String> {
        let mut v: Vec<(&String, &Instant)> = self.named.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.into_iter().map(|(u, _)| u.clone()).collect()
    }

    /// Ask for `units` by name: returns those not followed yet (to read).
    /// Past [`MAX_NAMED`], the least recently asked are forgotten.
    pub fn want(&mut self, units: &[String], now: Instant) -> Vec<String> {
        let mut new = Vec::new();
        for u in units {
            if self.named.insert(u.clone(), now).is_none() && !self.units.contains_key(u) {
                new.push(u.clone());
            }
        }
        while self.named.len() > MAX_NAMED {
            let Some(oldest) = self
                .named
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(u, _)| u.clone())
            else {
                break;
            };
            self.named.remove(&oldest);
            new.retain(|u| *u != oldest);
            if self.units.get(&oldest).is_some_and(|k| !k.loaded) {
                self.units.remove(&oldest);
            }
        }
        new
    }

    /// Whether the entry may answer now: followed, its flags known, and
    /// confirmed within `bound`.
    pub fn fresh(&self, now: Instant, bound: Duration) -> bool {
        self.error.is_none()
            && self.maintenance.is_some()
            && !self.reloading
            && self.full_since >= self.reloaded
            && self
                .confirmed
                .is_some_and(|t| now.saturating_duration_since(t) <= bound)
    }

    /// Since when the state is confirmed current.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.confirmed.map(|t| now.saturating_duration_since(t))
    }

    /// The connection is gone (or not there yet): the entry stops
    /// answering until the watcher is back and has read the host.
    pub fn lost(&mut self, why: String) {
        self.error = Some(why);
        self.confirmed = None;
        self.reading.clear();
        // Its Reloading(false) may never come on this connection; the
        // next one starts with a full read.
        self.reloading = false;
    }

    /// Something may have changed that systemd does not signal (a job
    /// wrote the maintenance flags): answer nothing until read again.
    pub fn invalidate(&mut self) {
        self.maintenance = None;
        self.confirmed = None;
        // A full read in flight read the flags before this: its merge
        // must not bring them back as current.
        self.seq += 1;
        self.invalidated = self.seq;
    }

    /// The maintenance flags as last read (None: not known now).
    pub fn maintenance(&self) -> Option<&MaintenanceState> {
        self.maintenance.as_ref()
    }

    /// Whether the maintenance flags must be read again.
    pub fn needs_maintenance(&self) -> bool {
        self.maintenance.is_none()
    }

    /// A ping answered after every signal before it was applied.
    pub fn confirm(&mut self, now: Instant) {
        if self.error.is_none() && self.read_at.is_some() {
            self.confirmed = Some(now);
        }
    }

    /// Apply one signal.
    pub fn apply(&mut self, e: UnitEvent) -> Need {
        self.seq += 1;
        let seq = self.seq;
        match e {
            UnitEvent::Changed { unit, change } => match self.units.get_mut(&unit) {
                Some(k) => {
                    k.seq = seq;
                    let was_found = k.facts.load_state != "not-found";
                    match apply_change(k, change) {
                        // Held as not found and now changing: loaded from
                        // a file written since (a start, a reload); its
                        // first signal was UnitNew, which our own reads
                        // of it send too. Read it.
                        _ if !was_found => self.read_unit(unit),
                        Need::JobType { job, .. } => Need::JobType { unit, job },
                        n => n,
                    }
                }
                // A loaded service the listing lacks (its UnitNew came
                // before the listing was read): read it.
                None if self.absent.contains(&unit) => {
                    let loaded = change
                        .load_state
                        .as_deref()
                        .is_some_and(|s| s != "not-found");
                    if !loaded {
                        return Need::Nothing;
                    }
                    self.absent.remove(&unit);
                    self.read_unit(unit)
                }
                None if self.listing && listable(&unit) => self.read_unit(unit),
                None => Need::Nothing,
            },
            UnitEvent::New(unit) => match self.units.get_mut(&unit) {
                // Held as not found (a named unit): our own read of it
                // loads it for a moment and systemd says so, after the
                // read's answer: reading again on that would read for
                // ever. A unit that really loaded changes next (a start's
                // job, its state), and that signal reads it; a poll reads
                // the host anyway (not found is never answered from here).
                Some(k) if k.facts.load_state == "not-found" => Need::Nothing,
                Some(k) => {
                    // A collected unit with a file is as it was, loaded
                    // again: whatever the file read says is older.
                    k.loaded = true;
                    k.pending_file = false;
                    Need::Nothing
                }
                // Loaded by our own read, maybe: its LoadState change says.
                None if self.absent.contains(&unit) => Need::Nothing,
                None if listable(&unit) || self.named.contains_key(&unit) => {
                    self.read_unit(unit)
                }
                None => Need::Nothing,
            },
            UnitEvent::Removed(_) if self.reloading => Need::Nothing,
            UnitEvent::Removed(unit) => {
                // systemd collects only units that are inactive with no
                // job: that is what a read would find, until loaded again.
                if self.named.contains_key(&unit) {
                    if let Some(k) = self
                        .units
                        .get_mut(&unit)
                        // Not found, and collected again: as it was.
                        .filter(|k| k.facts.load_state != "not-found")
                    {
                        k.seq = seq;
                        k.loaded = false;
                        k.facts.active_state = "inactive".into();
                        k.facts.sub_state = "dead".into();
                        k.facts.main_pid = 0;
                        k.facts.job = None;
                        k.pending_job = None;
                        k.pending_file = true;
                        return Need::FileState(unit);
                    }
                } else if self.units.remove(&unit).is_some() {
                    // Bounded: past it a read in flight may bring a
                    // collected unit back, until the next full read.
                    if self.removed.len() >= MAX_LISTED {
                        self.removed.clear();
                    }
                    self.removed.insert(unit, seq);
                }
                Need::Nothing
            }
            UnitEvent::JobRemoved(unit) => {
                if let Some(k) = self.units.get_mut(&unit) {
                    k.seq = seq;
                    k.facts.job = None;
                    k.pending_job = None;
                }
                Need::Nothing
            }
            // Every unit is unloaded and loaded again meanwhile: their
            // UnitRemoved say nothing about them, and nothing held is
            // answered until a read that began after the reload is in.
            UnitEvent::Reloading => {
                self.reloading = true;
                Need::Nothing
            }
            UnitEvent::Reloaded => {
                self.reloading = false;
                // The read must begin after this: until it is in, units
                // the reload touched are not answered from here.
                self.reloaded = seq;
                Need::Full
            }
        }
    }

    /// Read `unit` (a signal about a unit the entry lacks), unless a read
    /// of it is in flight: then that one is repeated when it ends.
    fn read_unit(&mut self, unit: String) -> Need {
        match self.reading.get_mut(&unit) {
            Some(dirty) => {
                *dirty = true;
                Need::Nothing
            }
            None => {
                self.reading.insert(unit.clone(), false);
                Need::Units(vec![unit])
            }
        }
    }

    /// A queued job's type, read after its signal: kept only if the unit
    /// still waits for that job.
    pub fn job_type(&mut self, unit: &str, job: &str, ty: Option<String>) {
        if let Some(k) = self.units.get_mut(unit) {
            if k.pending_job.as_deref() == Some(job) {
                k.pending_job = None;
                k.facts.job = ty;
            }
        }
    }

    /// Whether a file still defines a collected unit (its UnitFileState;
    /// None: no file, the unit is gone), read after its signal.
    pub fn file_state(&mut self, unit: &str, state: Option<String>) {
        if let Some(k) = self.units.get_mut(unit).filter(|k| k.pending_file) {
            k.pending_file = false;
            match state {
                Some(s) => {
                    if s == "masked" {
                        k.facts.load_state = s.clone();
                    }
                    k.facts.unit_file_state = s;
                }
                // What LoadUnit then finds: no such unit (systemd names
                // it after itself).
                None => {
                    k.facts = UnitFacts {
                        description: unit.to_string(),
                        ..UnitFacts::not_found()
                    };
                }
            }
        }
    }

    /// Merge a full read that started when [`HostSnap::seq`] was `since`:
    /// units changed by a signal after that keep the signal's state (the
    /// read may have seen them before it); the rest take the read's. Then
    /// the entry is confirmed as of now.
    pub fn merge_full(&mut self, read: FullRead, since: u64, now: Instant) {
        let listing = read.listing.len() <= MAX_LISTED;
        let listed: BTreeSet<String> = if listing {
            read.listing.keys().cloned().collect()
        } else {
            BTreeSet::new()
        };
        // Units neither loaded by the read nor named are gone, unless a
        // signal since says otherwise.
        self.units.retain(|u, k| {
            k.seq > since || listed.contains(u) || self.named.contains_key(u)
        });
        let reads = read
            .listing
            .into_iter()
            .filter(|(u, _)| listed.contains(u))
            .map(|(u, f)| (u, f, true))
            .chain(read.named.into_iter().map(|(u, f)| (u, f, false)));
        for (u, f, in_listing) in reads {
            if !in_listing && !self.named.contains_key(&u) {
                continue;
            }
            let loaded = in_listing || listed.contains(&u);
            self.put(u, f, loaded, since);
        }
        self.absent.clear();
        self.removed.clear();
        self.listing = listing;
        self.full_since = self.full_since.max(since);
        if self.invalidated <= since {
            self.maintenance = Some(read.maintenance);
        }
        self.read_at = Some(now);
        self.error = None;
        self.confirmed = Some(now);
    }

    /// Merge units read on their own (`asked`: named ones asked for, a
    /// service loaded after the listing was read), as
    /// [`HostSnap::merge_full`] does. Those a signal changed while they
    /// were read are read again.
    pub fn merge_units(
        &mut self,
        read: BTreeMap<String, UnitFacts>,
        since: u64,
        asked: &[String],
    ) -> Need {
        let mut not_found = BTreeSet::new();
        for (u, f) in read {
            let loaded = f.load_state != "not-found";
            if !loaded {
                not_found.insert(u.clone());
            }
            if self.named.contains_key(&u) || (self.listing && listable(&u) && loaded) {
                self.put(u, f, loaded, since);
            } else if !loaded {
                if self.absent.len() >= MAX_LISTED {
                    self.absent.clear();
                }
                self.absent.insert(u);
            }
        }
        self.bound_listing();
        let absent = &self.absent;
        let again: Vec<String> = asked
            .iter()
            // Not found: the signals since were our read loading it.
            .filter(|u| {
                self.reading.remove(*u) == Some(true)
                    && !absent.contains(*u)
                    && !not_found.contains(*u)
            })
            .cloned()
            .collect();
        if again.is_empty() {
            return Need::Nothing;
        }
        for u in &again {
            self.reading.insert(u.clone(), false);
        }
        Need::Units(again)
    }

    /// The maintenance flags read again (after [`HostSnap::invalidate`]),
    /// by a read that began at `since`: kept unless invalidated since.
    pub fn set_maintenance(&mut self, m: MaintenanceState, since: u64) {
        if self.invalidated <= since {
            self.maintenance = Some(m);
        }
    }

    fn put(&mut self, u: String, f: UnitFacts, loaded: bool, since: u64) {
        if self.removed.get(&u).is_some_and(|s| *s > since) {
            return;
        }
        match self.units.get_mut(&u) {
            Some(k) if k.seq > since => {
                // A signal is newer than this read; keep what signals do
                // not carry from the read.
                k.facts.unit_file_state = f.unit_file_state;
                if k.facts.description.is_empty() {
                    k.facts.description = f.description;
                }
            }
            _ => {
                // As current as the read: a read that began earlier and
                // ends later must not put its older state over this one.
                self.units.insert(
                    u,
                    Known {
                        facts: f,
                        loaded,
                        seq: since,
                        pending_job: None,
                        pending_file: false,
                    },
                );
            }
        }
    }

    fn bound_listing(&mut self) {
        let listed = self.units.values().filter(|k| k.loaded).count();
        if listed > MAX_LISTED {
            self.listing = false;
            let named = &self.named;
            self.units.retain(|u, _| named.contains_key(u));
        }
    }

    /// The units a `status` of `units` (every loaded service without
    /// any) would read, if the entry holds them all: None when it does
    /// not (not followed yet, or a listing it does not keep).
    pub fn view(&self, units: &[String]) -> Option<BTreeMap<String, UnitFacts>> {
        if units.is_empty() {
            if !self.listing {
                return None;
            }
            return Some(
                self.units
                    .iter()
                    .filter(|(u, k)| {
                        k.loaded && listable(u) && k.facts.load_state != "not-found"
                    })
                    .map(|(u, k)| (u.clone(), k.facts.clone()))
                    .collect(),
            );
        }
        let mut out = BTreeMap::new();
        for u in units {
            let k = self.units.get(u)?;
            // Being read after a signal said it changed in ways signals
            // do not carry: what is held may be older.
            if self.reading.contains_key(u) {
                return None;
            }
            // A job is queued whose type is not known yet: RESTARTING or
            // STARTING cannot be told, so the host is read.
            if k.pending_job.is_some() || k.pending_file {
                return None;
            }
            // Never answer "no such unit" from here: systemd signals a
            // unit file written and loaded by a start (UnitNew of an object
            // we may have ignored as our own read's) in ways the entry can
            // miss, and a not-found answer then hides a running unit
            // (Consul health 404 for a unit just registered and started).
            // A unit that is not there is cheap to read.
            if k.facts.load_state == "not-found" {
                return None;
            }
            out.insert(u.clone(), k.facts.clone());
        }
        Some(out)
    }

    /// The host's facts as a `status` read would give them, for `view`'s
    /// units, with its maintenance flags.
    pub fn facts(&self, units: BTreeMap<String, UnitFacts>) -> HostFacts {
        let mut hf = HostFacts::unread();
        hf.units = units;
        if let Some(m) = &self.maintenance {
            m.clone().into_facts(&mut hf);
        }
        hf
    }

    /// Every unit held (listing and named), for the status page.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn all(&self) -> BTreeMap<String, UnitFacts> {
        self.units
            .iter()
            .map(|(u, k)| (u.clone(), k.facts.clone()))
            .collect()
    }
}

fn apply_change(k: &mut Known, c: UnitChange) -> Need {
    let f = &mut k.facts;
    let set = |dst: &mut String, v: Option<String>| {
        if let Some(v) = v {
            *dst = v;
        }
    };
    set(&mut f.load_state, c.load_state);
    set(&mut f.active_state, c.active_state);
    set(&mut f.sub_state, c.sub_state);
    set(&mut f.unit_file_state, c.unit_file_state);
    set(&mut f.description, c.description);
    if let Some(inv) = c.invocation_id {
        f.invocation_id = inv;
    }
    if let Some(ts) = c.active_enter_timestamp {
        f.start_time = timestamp_rfc3339(ts);
    }
    if let Some(pid) = c.main_pid {
        f.main_pid = pid;
    }
    if f.load_state != "not-found" {
        k.loaded = true;
    }
    match c.job {
        Some(None) => {
            f.job = None;
            k.pending_job = None;
            Need::Nothing
        }
        Some(Some(job)) if k.pending_job.as_deref() != Some(job.as_str()) => {
            k.pending_job = Some(job.clone());
            Need::JobType {
                unit: String::new(),
                job,
            }
        }
        _ => Need::Nothing,
    }
}
