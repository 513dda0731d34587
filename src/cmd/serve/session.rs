//! The status page's session: the key kept in an HttpOnly, SameSite=Strict
//! cookie, and the CSRF token a change made with that cookie must carry,
//! an HMAC of the key under a per-process secret. The page hands the token
//! out and the authentication layer checks it, so both take it from here.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::error::{Error, Result};

use super::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "drover_session";

/// A fresh per-process secret.
pub fn secret() -> Result<[u8; 32]> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s)
        .map_err(|e| Error::Internal(format!("no randomness from the OS: {e}")))?;
    Ok(s)
}

fn hmac(secret: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(secret);
    let pad = |b: u8| block.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The CSRF token of a session.
pub fn csrf_token(state: &AppState, key: &str) -> String {
    hex::encode(hmac(&state.csrf_secret, key.as_bytes()))
}

/// Whether a request made with the session of `key` carries its token.
pub fn csrf_ok(state: &AppState, key: &str, headers: &HeaderMap) -> bool {
    let want = csrf_token(state, key);
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|got| bool::from(got.as_bytes().ct_eq(want.as_bytes())))
}

/// The key in the session cookie, if any.
pub fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty()).then(|| v.to_string())
        })
}
