//! The status page's sessions shared by a cluster's replicas, in the KV
//! bucket [`SESSIONS_BUCKET`]: a browser that logged in on one replica is
//! logged in on every one, whichever the load balancer picks next.
//!
//! A session's key is the SHA-256 of its id (the id itself, the cookie's
//! value, is stored nowhere), its value who logged in and the session's
//! own CSRF token. The bucket's max age is the session TTL: the server
//! ends a session on its own clock, never by comparing a replica's clock
//! with an entry's timestamp. Logout deletes the entry.

use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::remote::nats::{Nats, NatsError};

/// The KV bucket of the status page's sessions.
pub const SESSIONS_BUCKET: &str = "drover_sessions";
/// Bound on one KV call.
const CALL: Duration = Duration::from_secs(3);

/// What a session entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedSession {
    /// The key's name.
    pub key_name: String,
    /// SHA-256 of the key, hex (as the keys file holds it).
    pub key_digest: String,
    /// The session's CSRF token (random, made at login).
    pub csrf: String,
}

/// Sessions in NATS KV.
#[derive(Clone)]
pub struct KvSessions {
    nats: Nats,
    ttl: Duration,
    store: std::sync::Arc<tokio::sync::OnceCell<kv::Store>>,
}

/// The entry key of a session id.
fn key_of(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl KvSessions {
    /// Sessions over `nats`, ending `ttl` after login (the bucket's max
    /// age, when this replica makes it).
    pub fn new(nats: Nats, ttl: Duration) -> Self {
        KvSessions {
            nats,
            ttl,
            store: Default::default(),
        }
    }

    async fn store(&self) -> Result<kv::Store, NatsError> {
        self.store
            .get_or_try_init(|| async {
                tokio::time::timeout(CALL, self.nats.bucket(SESSIONS_BUCKET, self.ttl))
                    .await
                    .map_err(|_| NatsError(format!("KV bucket {SESSIONS_BUCKET} did not answer")))?
            })
            .await
            .cloned()
    }

    /// Keep `s` under the session `id`.
    pub async fn put(&self, id: &str, s: &SharedSession) -> Result<(), NatsError> {
        let store = self.store().await?;
        let value = serde_json::to_vec(s).map_err(|e| NatsError(e.to_string()))?;
        tokio::time::timeout(CALL, store.create(key_of(id), value.into()))
            .await
            .map_err(|_| NatsError(format!("KV bucket {SESSIONS_BUCKET} did not answer")))?
            .map(|_| ())
            .map_err(|e| NatsError(format!("a session not kept: {e}")))
    }

    /// The session `id`, if it exists and has not aged out.
    pub async fn get(&self, id: &str) -> Option<SharedSession> {
        let store = self.store().await.ok()?;
        let v = tokio::time::timeout(CALL, store.get(key_of(id)))
            .await
            .ok()?
            .ok()??;
        serde_json::from_slice(&v).ok()
    }

    /// End the session `id`.
    pub async fn end(&self, id: &str) {
        if let Ok(store) = self.store().await {
            let _ = tokio::time::timeout(CALL, store.delete(key_of(id))).await;
        }
    }
}
