//! Where the server listens: TCP (loopback by default), TCP with TLS
//! (rustls), or a unix socket; all behind one listener type so the rest of
//! the server does not care.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::model::error::{Error, Result};

/// The peer of a connection, as the audit log shows it.
#[derive(Debug, Clone)]
pub struct Peer(pub String);

/// A byte stream of any of the listeners.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Any of the three listeners.
pub enum AnyListener {
    /// Plain TCP.
    Tcp(TcpListener),
    /// TLS over TCP: the handshake is the connection's own first step
    /// ([`Accepted::ready`]), so a client that never finishes it holds a
    /// counted, closable connection like any other idle one.
    Tls(TcpListener, tokio_rustls::TlsAcceptor),
    /// A unix socket.
    Unix(UnixListener, PathBuf),
}

/// A connection just accepted, before any TLS handshake.
pub struct Accepted {
    raw: Raw,
    /// Who connected.
    pub peer: Peer,
}

enum Raw {
    Tcp(TcpStream),
    Tls(TcpStream, tokio_rustls::TlsAcceptor),
    Unix(UnixStream),
}

impl Accepted {
    /// The stream to speak HTTP on: after the TLS handshake, if any, which
    /// must end within `within`; None when it failed or timed out.
    pub async fn ready(self, within: Duration) -> Option<Pin<Box<dyn Stream>>> {
        let peer = self.peer;
        match self.raw {
            Raw::Tcp(s) => Some(Box::pin(s)),
            Raw::Unix(s) => Some(Box::pin(s)),
            Raw::Tls(s, acceptor) => match tokio::time::timeout(within, acceptor.accept(s)).await {
                Ok(Ok(t)) => Some(Box::pin(t)),
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {}: {e}", peer.0);
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake with {}: timed out", peer.0);
                    None
                }
            },
        }
    }
}

/// What `--listen` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// host:port.
    Tcp(SocketAddr),
    /// unix:PATH.
    Unix(PathBuf),
}

impl Address {
    /// Parse `--listen`.
    pub fn parse(raw: &str) -> Result<Address> {
        if let Some(p) = raw.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(Error::Usage(
                    "--listen unix: needs a path, e.g. unix:/run/drover.sock".into(),
                ));
            }
            return Ok(Address::Unix(PathBuf::from(p)));
        }
        raw.parse().map(Address::Tcp).map_err(|_| {
            Error::Usage(format!(
                "--listen `{raw}` is neither HOST:PORT (e.g. 127.0.0.1:7480, [::1]:7480) nor unix:PATH"
            ))
        })
    }

    /// Whether only this machine can connect.
    pub fn is_local(&self) -> bool {
        match self {
            Address::Tcp(a) => a.ip().is_loopback(),
            Address::Unix(_) => true,
        }
    }
}

impl AnyListener {
    /// The next connection; errors (out of descriptors and the like) are
    /// logged and retried.
    pub async fn accept(&mut self) -> Accepted {
        loop {
            let tcp = match self {
                AnyListener::Tcp(l) | AnyListener::Tls(l, _) => l.accept().await,
                AnyListener::Unix(l, path) => match l.accept().await {
                    Ok((s, _)) => {
                        return Accepted {
                            raw: Raw::Unix(s),
                            peer: Peer(format!("unix:{}", path.display())),
                        }
                    }
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                },
            };
            match tcp {
                Ok((s, a)) => {
                    let _ = s.set_nodelay(true);
                    let raw = match self {
                        AnyListener::Tls(_, acceptor) => Raw::Tls(s, acceptor.clone()),
                        _ => Raw::Tcp(s),
                    };
                    return Accepted {
                        raw,
                        peer: Peer(a.to_string()),
                    };
                }
                Err(e) => accept_error(e).await,
            }
        }
    }

    /// Where it listens, as `Peer` writes it.
    pub fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer(match self {
            AnyListener::Tcp(l) | AnyListener::Tls(l, _) => l.local_addr()?.to_string(),
            AnyListener::Unix(_, p) => format!("unix:{}", p.display()),
        }))
    }
}

async fn accept_error(e: std::io::Error) {
    // Out of file descriptors and the like: say so and breathe instead of
    // spinning. The connection cap (see `conns`) keeps this rare.
    tracing::warn!("accept: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Bind `addr`, with TLS when `tls` is given.
pub async fn bind(addr: &Address, tls: Option<(&Path, &Path)>) -> Result<AnyListener> {
    match addr {
        Address::Unix(path) => {
            // A stale socket of a dead server would make bind fail; a live
            // one answers a connect, and then we refuse.
            if path.exists() {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(Error::Usage(format!(
                        "--listen: {} is in use by a running server",
                        path.display()
                    )));
                }
                let _ = std::fs::remove_file(path);
            }
            // 0600 whatever the umask, from the moment it exists: a chmod
            // after bind would leave a window for others to connect in.
            // The umask is the process's, but nothing else creates files
            // while the server starts.
            // SAFETY: umask has no preconditions.
            let old = unsafe { libc::umask(0o177) };
            let bound = UnixListener::bind(path);
            // SAFETY: as above.
            unsafe { libc::umask(old) };
            let l = bound.map_err(|e| Error::io("listen on", path, e))?;
            Ok(AnyListener::Unix(l, path.clone()))
        }
        Address::Tcp(a) => {
            let l = TcpListener::bind(a)
                .await
                .map_err(|e| Error::io("listen on", a.to_string(), e))?;
            match tls {
                None => Ok(AnyListener::Tcp(l)),
                Some((cert, key)) => Ok(AnyListener::Tls(l, tls_acceptor(cert, key)?)),
            }
        }
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let bad =
        |what: &str, p: &Path, e: String| Error::Usage(format!("{what} {}: {e}", p.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("--tls-cert", cert, e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("--tls-cert", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("--tls-cert", cert, "no PEM certificate in it".into()));
    }
    // The error names the file only: a key file's content must never
    // reach a log.
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|_| {
        bad(
            "--tls-key",
            key,
            "not a PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
        )
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Internal(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| bad("--tls-cert/--tls-key", cert, e.to_string()))?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
