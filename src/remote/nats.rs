//! The connection to NATS JetStream for cluster mode: how a replica or a
//! worker connects (servers, credentials, TLS), and the KV buckets they
//! share, made if missing with the replication asked for. What goes in
//! them is `model::cluster`'s; what is done with them, `engine::cluster`'s.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;

/// How to reach NATS.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Server URLs (`nats://host:4222`, `tls://…`); the client fails over
    /// between them.
    pub urls: Vec<String>,
    /// A `.creds` file (JWT and NKey seed), for accounts with per-role
    /// permissions.
    pub creds: Option<PathBuf>,
    /// CA certificates to trust for TLS (PEM).
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for mutual TLS.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Replicas of the KV buckets when drover makes them (1 on a single
    /// server, 3 on a cluster).
    pub replicas: usize,
    /// This client's name, as `nats-server` shows its connections.
    pub name: String,
    /// The JetStream domain of the hub, for a client connected to a leaf
    /// node (the leaf then forwards `$JS.DOMAIN.API` to the hub).
    pub domain: Option<String>,
}

/// What went wrong with NATS. Never holds a URL's user or password.
#[derive(Debug, thiserror::Error)]
#[error("NATS: {0}")]
pub struct NatsError(pub String);

/// A server URL as it may be printed: any `user:password@` removed.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A connection and its JetStream context.
#[derive(Debug, Clone)]
pub struct Nats {
    /// Core NATS (request/reply, subscriptions).
    pub client: async_nats::Client,
    /// JetStream (KV).
    pub js: jetstream::Context,
    replicas: usize,
}

impl NatsOptions {
    /// Connect; the client reconnects on its own afterwards (to any of
    /// the URLs), for as long as the process runs.
    pub async fn connect(&self) -> Result<Nats, NatsError> {
        if self.urls.is_empty() {
            return Err(NatsError("no server URL given".into()));
        }
        let shown: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        let addrs: Vec<async_nats::ServerAddr> = self
            .urls
            .iter()
            .zip(&shown)
            .map(|(u, s)| {
                u.parse()
                    .map_err(|e| NatsError(format!("server URL `{s}`: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let mut o = async_nats::ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)))
            .max_reconnects(None);
        // `nats://user:password@host` (or `nats://token@host`), as NATS
        // tools take them; async-nats reads no credentials from a URL.
        if let Some(a) = addrs.iter().find(|a| a.username().is_some()) {
            let user = a.username().unwrap_or_default().to_string();
            o = match a.password() {
                Some(p) => o.user_and_password(user, p.to_string()),
                None => o.token(user),
            };
        }
        if let Some(c) = &self.creds {
            o = o.credentials_file(c).await.map_err(|e| {
                NatsError(format!("credentials file {}: {e}", c.display()))
            })?;
        }
        if let Some(ca) = &self.ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.cert {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        let client = o
            .connect(addrs)
            .await
            .map_err(|e| NatsError(format!("cannot connect to {}: {e}", shown.join(","))))?;
        let js = match &self.domain {
            Some(d) => jetstream::with_domain(client.clone(), d),
            None => jetstream::new(client.clone()),
        };
        Ok(Nats {
            client,
            js,
            replicas: self.replicas.max(1),
        })
    }
}

impl Nats {
    /// Replicas of the streams drover makes.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The KV bucket `name`, made (history 1, entries gone `max_age` after
    /// their last write) if it does not exist yet.
    pub async fn bucket(&self, name: &str, max_age: Duration) -> Result<kv::Store, NatsError> {
        if let Ok(s) = self.js.get_key_value(name).await {
            return Ok(s);
        }
        // The stream a KV bucket is, made directly: async-nats's
        // create_key_value first reads the account's info, whose shape
        // nats-server 2.9 (Debian's) does not match.
        self.js
            .create_stream(jetstream::stream::Config {
                name: format!("KV_{name}"),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                max_age,
                storage: jetstream::stream::StorageType::File,
                num_replicas: self.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError(format!("KV bucket {name}: {e}")))?;
        self.js
            .get_key_value(name)
            .await
            .map_err(|e| NatsError(format!("KV bucket {name}: {e}")))
    }

    /// [`Nats::bucket`] within `bound`, and the max age its entries live
    /// by: the bucket's own when it exists already (whoever made it set
    /// it), else `max_age`. A holder renews within that age, not within
    /// the one it asked for.
    pub async fn bucket_aged(
        &self,
        name: &str,
        max_age: Duration,
        bound: Duration,
    ) -> Result<(kv::Store, Duration), NatsError> {
        let store = tokio::time::timeout(bound, self.bucket(name, max_age))
            .await
            .map_err(|_| {
                NatsError(format!(
                    "KV bucket {name} did not answer within {}",
                    humantime::format_duration(bound)
                ))
            })??;
        let age = match tokio::time::timeout(bound, store.status()).await {
            Ok(Ok(s)) if !s.max_age().is_zero() => s.max_age(),
            _ => max_age,
        };
        Ok((store, age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact_url("nats://u:secret@h:4222"), "nats://h:4222");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        assert_eq!(redact_url("h:4222"), "h:4222");
    }
}
