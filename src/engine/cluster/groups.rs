//! `group_by` room across machines, in the claims bucket: a job on one
//! replica and a job on another (or a `drover apply --nats`) count
//! against the same `max_unavailable`.
//!
//! A group is one key, `group.<group>`, whose value is its members (host,
//! job, take). Room is taken by compare-and-set on that key (`create`
//! when it is absent, else `update` on the revision just read), so the
//! count and the insert are one step: two takers never both fit in the
//! last place. Each take also has a key of its own, `take.<id>`, that its
//! holder renews like any claim; a member whose take key has aged out
//! (its holder died, or stopped past the bucket's max age) is not counted,
//! and the next writer drops it. No clock is compared with an entry's
//! time. Holders write their groups again at every renewal, so a group
//! with live members never ages out of the bucket.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::engine::claims::{no_room, Busy, Claim, Members};
use crate::engine::cluster::coordination::{give_back_keys, renew};
use crate::model::cluster::token;

/// Bound on one KV call.
const CALL: Duration = Duration::from_secs(5);

/// How many times one group's write is tried again after another
/// writer's landed first, within one attempt.
const COLLISIONS: usize = 8;

/// A group's value.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Group {
    members: Vec<Member>,
}

/// A host counted against its group, by a job, under a take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    host: String,
    job_id: String,
    take: String,
}

/// The key of group `g`.
fn group_key(g: &str) -> String {
    format!("group.{}", token(g))
}

/// The key of take `id` (hex made here).
fn take_key(id: &str) -> String {
    format!("take.{id}")
}

/// A take's id: random, so takes of any process never meet.
pub(super) fn take_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Group room in one claims bucket.
#[derive(Debug, Clone)]
pub(super) struct KvGroups {
    pub(super) store: kv::Store,
}

impl KvGroups {
    /// The group `g`: its revision (None: no entry) and members.
    async fn read(&self, key: &str) -> Result<(Option<u64>, Group), String> {
        match tokio::time::timeout(CALL, self.store.entry(key)).await {
            Ok(Ok(Some(e))) if e.operation == kv::Operation::Put => {
                let g = serde_json::from_slice(&e.value).unwrap_or_else(|err| {
                    tracing::warn!(key, error = %err, "an unreadable group entry is counted as empty");
                    Group::default()
                });
                Ok((Some(e.revision), g))
            }
            Ok(Ok(Some(e))) => Ok((Some(e.revision), Group::default())),
            Ok(Ok(None)) => Ok((None, Group::default())),
            Ok(Err(e)) => Err(format!("the claims bucket refused: {e}")),
            Err(_) => Err("the claims bucket did not answer within 5s".into()),
        }
    }

    /// Which of `takes` still have their key (their holder renews them).
    async fn live(&self, members: &[Member]) -> HashMap<String, bool> {
        let mut takes: Vec<&str> = members.iter().map(|m| m.take.as_str()).collect();
        takes.sort_unstable();
        takes.dedup();
        let found = futures_util::future::join_all(takes.iter().map(|t| async move {
            let key = take_key(t);
            // Unknown (NATS slow): counted as live, the safe side.
            let live = !matches!(
                tokio::time::timeout(CALL, self.store.get(&key)).await,
                Ok(Ok(None))
            );
            (t.to_string(), live)
        }))
        .await;
        found.into_iter().collect()
    }

    /// Write `group` at `key` on `rev` (None: create). `Ok(false)`:
    /// another writer's landed first.
    async fn write(&self, key: &str, rev: Option<u64>, group: &Group) -> Result<bool, String> {
        let value = serde_json::to_vec(group).unwrap_or_default();
        let r = match rev {
            None => tokio::time::timeout(CALL, self.store.create(key, value.into()))
                .await
                .map(|r| {
                    r.map(|_| true).or_else(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => Ok(false),
                        _ => Err(e.to_string()),
                    })
                }),
            Some(rev) => tokio::time::timeout(CALL, self.store.update(key, value.into(), rev))
                .await
                .map(|r| {
                    r.map(|_| true).or_else(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                        _ => Err(e.to_string()),
                    })
                }),
        };
        r.unwrap_or_else(|_| Err("the claims bucket did not answer within 5s".into()))
    }

    /// Change group `g`'s members with `change` (given the live members;
    /// `Err` leaves the entry as it is), by compare-and-set, reading again
    /// after a collision.
    async fn change<T>(
        &self,
        group: &str,
        mut change: impl FnMut(Vec<Member>) -> Result<(Vec<Member>, T), Busy>,
    ) -> Result<T, Busy> {
        let key = group_key(group);
        let failed = |why: String| Busy {
            job_id: format!("({why})"),
            claim: Claim::Member(group.to_string(), String::new()),
        };
        for _ in 0..COLLISIONS {
            let (rev, g) = self.read(&key).await.map_err(failed)?;
            let live = self.live(&g.members).await;
            let members: Vec<Member> = g
                .members
                .into_iter()
                .filter(|m| live.get(&m.take).copied().unwrap_or(true))
                .collect();
            let (members, out) = change(members)?;
            if self.write(&key, rev, &Group { members }).await.map_err(failed)? {
                return Ok(out);
            }
        }
        Err(failed("the group's entry kept changing under this writer".into()))
    }

    /// One attempt at room in every group of `groups` (sorted, so two
    /// takers meet in the same order) for `job_id` under take `take`, all
    /// or none.
    pub(super) async fn try_room(
        &self,
        groups: &[Members],
        job_id: &str,
        take: &str,
    ) -> Result<(), Busy> {
        let mut done: Vec<&str> = Vec::new();
        for g in groups {
            let r = self
                .change(&g.group, |mut members| {
                    let held: Vec<(&str, &str)> = members
                        .iter()
                        .map(|m| (m.host.as_str(), m.job_id.as_str()))
                        .collect();
                    if let Some(b) = no_room(g, &held) {
                        return Err(b);
                    }
                    members.extend(g.hosts.iter().map(|h| Member {
                        host: h.clone(),
                        job_id: job_id.to_string(),
                        take: take.to_string(),
                    }));
                    Ok((members, ()))
                })
                .await;
            if let Err(b) = r {
                self.leave(&done, take).await;
                return Err(b);
            }
            done.push(&g.group);
        }
        Ok(())
    }

    /// Take `take`'s members out of `groups`.
    pub(super) async fn leave(&self, groups: &[&str], take: &str) {
        for g in groups {
            let r = self
                .change(g, |mut members| {
                    members.retain(|m| m.take != take);
                    Ok((members, ()))
                })
                .await;
            if let Err(b) = r {
                // Its take key goes too: the members stop counting when
                // it has aged out.
                tracing::debug!(group = %g, why = %b.job_id, "group room not given back (it ages out)");
            }
        }
    }

    /// Write `groups` again (their live members), so a group with
    /// members never ages out of the bucket; says which groups no longer
    /// list `take` (they aged out while this holder was stopped).
    pub(super) async fn refresh(&self, groups: &[&str], take: &str) -> Vec<String> {
        let mut lost = Vec::new();
        for g in groups {
            let r = self
                .change(g, |members| {
                    let mine = members.iter().any(|m| m.take == take);
                    Ok((members, mine))
                })
                .await;
            match r {
                Ok(true) => {}
                Ok(false) => lost.push((*g).to_string()),
                Err(b) => tracing::warn!(group = %g, why = %b.job_id, "group room not renewed"),
            }
        }
        lost
    }

    /// Make take `take`'s key; its revision.
    pub(super) async fn open_take(&self, take: &str, value: &[u8]) -> Result<u64, String> {
        match tokio::time::timeout(CALL, self.store.create(&take_key(take), value.to_vec().into())).await {
            Ok(Ok(rev)) => Ok(rev),
            Ok(Err(e)) => Err(format!("the claims bucket refused: {e}")),
            Err(_) => Err("the claims bucket did not answer within 5s".into()),
        }
    }

}

/// Keep take `take` (its key at `rev`, holding `value`) and its `groups`
/// alive every quarter `ttl` until `stop`, then give them back.
pub(super) async fn hold_room(
    kv: KvGroups,
    (take, rev, value): (String, u64, Vec<u8>),
    groups: Vec<String>,
    ttl: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let every = (ttl / 4).max(Duration::from_millis(100));
    let mut keys = [(take_key(&take), rev)];
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(every) => {}
        }
        if !renew(&kv.store, &mut keys, &value).await.is_empty() {
            tracing::error!(
                groups = ?groups,
                "group room lost: it aged out before it was renewed (this process was stopped or cut off from NATS), and other jobs may count without it now"
            );
        }
        let lost = kv.refresh(&names, &take).await;
        if !lost.is_empty() {
            tracing::error!(groups = ?lost, "group room lost: the groups no longer list this job's hosts");
        }
    }
    kv.leave(&names, &take).await;
    give_back_keys(&kv.store, &keys).await;
}

/// Open take `take` (its key holding `value`) and try room for it once;
/// the take's key revision, or why not (the take's key then goes).
pub(super) async fn take_room(
    kv: &KvGroups,
    groups: &[Members],
    job_id: &str,
    (take, value): (&str, &[u8]),
) -> Result<u64, Busy> {
    let failed = |why: String| Busy {
        job_id: format!("({why})"),
        claim: Claim::Member(
            groups.first().map(|g| g.group.clone()).unwrap_or_default(),
            String::new(),
        ),
    };
    let rev = kv.open_take(take, value).await.map_err(failed)?;
    match kv.try_room(groups, job_id, take).await {
        Ok(()) => Ok(rev),
        Err(b) => {
            give_back_keys(&kv.store, &[(take_key(take), rev)]).await;
            Err(b)
        }
    }
}

/// The groups of `groups` in the order takers meet them, each once (a job
/// asking twice for one group asks for the hosts of both).
pub(super) fn in_order(groups: Vec<Members>) -> Vec<Members> {
    let mut by: BTreeMap<String, Members> = BTreeMap::new();
    for g in groups {
        match by.get_mut(&g.group) {
            Some(m) => {
                for h in g.hosts {
                    if !m.hosts.contains(&h) {
                        m.hosts.push(h);
                    }
                }
                for h in g.down {
                    if !m.down.contains(&h) {
                        m.down.push(h);
                    }
                }
                m.limit = m.limit.min(g.limit);
            }
            None => {
                by.insert(g.group.clone(), g);
            }
        }
    }
    by.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_met_in_one_order_and_each_once() {
        let m = |g: &str, limit, hosts: &[&str]| Members {
            group: g.into(),
            limit,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            down: Vec::new(),
        };
        let out = in_order(vec![m("b", 2, &["x"]), m("a", 1, &["y"]), m("b", 1, &["z", "x"])]);
        let names: Vec<&str> = out.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(out[1].hosts, ["x", "z"]);
        assert_eq!(out[1].limit, 1);
    }

    #[test]
    fn group_keys_cannot_be_widened_by_names() {
        let k = group_key("labels.cluster=*.>");
        assert!(!k.contains('*') && !k.contains('>'), "{k}");
        assert_eq!(k.split('.').count(), 2, "{k}");
        assert_eq!(take_id().len(), 16);
    }
}
