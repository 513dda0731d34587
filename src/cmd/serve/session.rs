//! The status page's sessions. `POST /login` checks the key once and
//! opens a session: a random 256-bit id kept on the server with who logged
//! in and when it expires; the cookie holds only that id, so the key never
//! leaves the login request, logout ends the session for good, and a key
//! removed by a reload ends its sessions. A change made with the cookie
//! carries the session's CSRF token, random and kept with the session. The
//! page hands the token out and the authentication layer checks it.
//!
//! [`SessionStore`] is the seam the server holds; [`MemorySessions`] keeps
//! them in this process (a restart ends them: the page shows its login
//! form again); [`KvSessionStore`] in a cluster's KV bucket, so that every
//! replica knows every session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::model::error::{Error, Result};

/// The session cookie's name over plain HTTP (loopback or
/// `--insecure-http`).
pub const COOKIE: &str = "drover_session";

/// Its name over TLS: browsers accept a `__Host-` cookie only when it is
/// `Secure`, has `Path=/` and no `Domain`, so no other site or subdomain
/// can plant one.
pub const COOKIE_TLS: &str = "__Host-drover_session";

/// Sessions kept at most by [`MemorySessions`]; past it, expired ones go
/// first, then the oldest.
pub const MAX_SESSIONS: usize = 10_000;

/// The cookie's name for a server with or without TLS.
pub fn cookie_name(tls: bool) -> &'static str {
    if tls {
        COOKIE_TLS
    } else {
        COOKIE
    }
}

/// Who a session belongs to: enough to find its key again in the keys
/// loaded now (so a reload that changes or removes the key is seen at
/// once), never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The key's name (audit lines).
    pub key_name: String,
    /// SHA-256 of the key, as the keys file holds it.
    pub key_digest: [u8; 32],
    /// The session's CSRF token: random, made by the store when the
    /// session opens (empty before).
    pub csrf: String,
}

/// The id of the session a request came with, and its CSRF token (put in
/// its extensions by the authentication layer).
#[derive(Debug, Clone)]
pub struct SessionId(pub String, pub String);

/// Where sessions are kept.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Open a session for `who` that ends after `ttl`; its new random id.
    async fn open(&self, who: Session, ttl: Duration) -> Result<String>;
    /// The session of `id`; None when unknown, expired or ended.
    async fn get(&self, id: &str) -> Option<Session>;
    /// End the session of `id` (logout); ending an unknown one is no error.
    async fn end(&self, id: &str);
    /// End every session `keep` refuses (a reload: those of removed keys).
    async fn retain(&self, keep: &(dyn for<'s> Fn(&'s Session) -> bool + Send + Sync));
}

struct Kept {
    who: Session,
    opened: Instant,
    expires: Instant,
}

/// Sessions in this process's memory, at most `max` of them.
pub struct MemorySessions {
    max: usize,
    map: Mutex<HashMap<String, Kept>>,
}

impl MemorySessions {
    /// An empty store of at most `max` sessions.
    pub fn new(max: usize) -> Self {
        MemorySessions {
            max: max.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn open(&self, mut who: Session, ttl: Duration) -> Result<String> {
        let id = random_id()?;
        who.csrf = random_id()?;
        let now = Instant::now();
        let mut m = self.map();
        if m.len() >= self.max {
            m.retain(|_, k| k.expires > now);
        }
        while m.len() >= self.max {
            let Some(oldest) = m
                .iter()
                .min_by_key(|(_, k)| k.opened)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            m.remove(&oldest);
        }
        m.insert(
            id.clone(),
            Kept {
                who,
                opened: now,
                expires: now + ttl,
            },
        );
        Ok(id)
    }

    async fn get(&self, id: &str) -> Option<Session> {
        let mut m = self.map();
        let k = m.get(id)?;
        if k.expires > Instant::now() {
            return Some(k.who.clone());
        }
        m.remove(id);
        None
    }

    async fn end(&self, id: &str) {
        self.map().remove(id);
    }

    async fn retain(&self, keep: &(dyn for<'s> Fn(&'s Session) -> bool + Send + Sync)) {
        let now = Instant::now();
        self.map().retain(|_, k| k.expires > now && keep(&k.who));
    }
}

/// Sessions in a cluster's KV bucket (see
/// [`crate::engine::cluster::sessions`]): a session opened on one replica
/// is known to every one.
pub struct KvSessionStore(pub crate::engine::cluster::sessions::KvSessions);

#[async_trait]
impl SessionStore for KvSessionStore {
    async fn open(&self, who: Session, _ttl: Duration) -> Result<String> {
        let id = random_id()?;
        let shared = crate::engine::cluster::sessions::SharedSession {
            key_name: who.key_name,
            key_digest: hex::encode(who.key_digest),
            csrf: random_id()?,
        };
        self.0
            .put(&id, &shared)
            .await
            .map_err(|e| Error::Internal(format!("the session could not be kept: {e}")))?;
        Ok(id)
    }

    async fn get(&self, id: &str) -> Option<Session> {
        let s = self.0.get(id).await?;
        let mut key_digest = [0u8; 32];
        hex::decode_to_slice(&s.key_digest, &mut key_digest).ok()?;
        Some(Session {
            key_name: s.key_name,
            key_digest,
            csrf: s.csrf,
        })
    }

    async fn end(&self, id: &str) {
        self.0.end(id).await
    }

    // Nothing to sweep: every request finds its session's key again among
    // the keys loaded now, and ends a session whose key is gone.
    async fn retain(&self, _keep: &(dyn for<'s> Fn(&'s Session) -> bool + Send + Sync)) {}
}

/// 256 random bits from the OS, as hex: ids nobody can guess, so finding
/// one by a map lookup tells an attacker nothing.
fn random_id() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Internal(format!("no randomness from the OS: {e}")))?;
    Ok(hex::encode(b))
}

/// Whether a request carries `want`, its session's CSRF token.
pub fn csrf_ok(want: &str, headers: &HeaderMap) -> bool {
    !want.is_empty()
        && headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|got| bool::from(got.as_bytes().ct_eq(want.as_bytes())))
}

/// The session id in the cookie named `name`, if any.
pub fn cookie_session(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_string())
        })
}

/// The `Set-Cookie` value that gives the browser session `id`.
pub fn set_cookie(tls: bool, id: &str) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict{secure}",
        cookie_name(tls)
    )
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn clear_cookie(tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        cookie_name(tls)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(n: &str) -> Session {
        Session {
            key_name: n.into(),
            key_digest: crate::model::keys::key_digest(n),
            csrf: String::new(),
        }
    }

    #[tokio::test]
    async fn sessions_end_on_logout_expiry_retain_and_past_the_bound() {
        let s = MemorySessions::new(2);
        let long = Duration::from_secs(3600);
        let a = s.open(who("a"), long).await.unwrap();
        assert_eq!(a.len(), 64);
        let got = s.get(&a).await.unwrap();
        assert_eq!(got.key_name, "a");
        assert_eq!(got.csrf.len(), 64, "a random CSRF token per session");
        s.end(&a).await;
        assert_eq!(s.get(&a).await, None, "logout ends it");

        let gone = s.open(who("x"), Duration::ZERO).await.unwrap();
        assert_eq!(s.get(&gone).await, None, "expired");

        // Full: the oldest goes.
        let b = s.open(who("b"), long).await.unwrap();
        let c = s.open(who("c"), long).await.unwrap();
        let d = s.open(who("d"), long).await.unwrap();
        assert_eq!(s.get(&b).await, None, "the oldest was evicted");
        assert!(s.get(&c).await.is_some() && s.get(&d).await.is_some());
        assert_ne!(c, d);

        s.retain(&|w: &Session| w.key_name != "c").await;
        assert_eq!(s.get(&c).await, None, "a removed key's session ends");
        assert!(s.get(&d).await.is_some());
    }

    #[test]
    fn a_change_needs_its_session_s_token() {
        let mut h = HeaderMap::new();
        assert!(!csrf_ok("abc", &h));
        h.insert("x-csrf-token", "abd".parse().unwrap());
        assert!(!csrf_ok("abc", &h));
        h.insert("x-csrf-token", "abc".parse().unwrap());
        assert!(csrf_ok("abc", &h));
        // A session without a token accepts none.
        h.insert("x-csrf-token", "".parse().unwrap());
        assert!(!csrf_ok("", &h));
    }

    #[test]
    fn the_cookie_is_host_only_and_secure_under_tls() {
        let set = set_cookie(true, "abc");
        assert!(
            set.starts_with("__Host-drover_session=abc; Path=/;"),
            "{set}"
        );
        assert!(set.ends_with("; Secure"), "{set}");
        assert!(!set.contains("Domain"), "{set}");
        assert!(clear_cookie(true).contains("Secure"));
        assert!(set_cookie(false, "abc").starts_with("drover_session=abc;"));
    }
}
