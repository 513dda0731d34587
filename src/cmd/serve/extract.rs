//! Reading what a request carries (its query, JSON body, `wait` and target
//! selector) into values, with the 400 that names what is wrong. Every
//! route family reads requests the same way, so their refusals read alike.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;

use crate::model::target::Selector;

use super::error::ApiError;

/// How long a change waits for its job by default, and at most.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A query string, or 400 with axum's reason.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// Parse a JSON body: 400 naming what is wrong (invalid UTF-8 included),
/// whatever its Content-Type says.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(ApiError::bad_request(format!(
            "body: not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ApiError::bad_request(if path == "." || path.is_empty() {
            format!("body: {inner}")
        } else {
            format!("body at `{path}`: {inner}")
        })
    })
}

/// The wait a request asked for.
pub fn wait_of(raw: Option<&str>) -> Result<Duration, ApiError> {
    match raw {
        None => Ok(DEFAULT_WAIT),
        Some(w) => {
            let d = crate::model::parse_duration(w)
                .map_err(|m| ApiError::bad_request(format!("wait: {m}")))?;
            if d > MAX_WAIT {
                return Err(ApiError::bad_request(format!(
                    "wait: `{w}` is longer than 10m; poll /job/ID past that"
                )));
            }
            Ok(d)
        }
    }
}

/// A selector from a path segment (axum has already percent-decoded it).
pub fn selector(raw: &str) -> Result<Selector, ApiError> {
    Selector::parse(raw).map_err(|m| ApiError::bad_request(format!("target `{raw}`: {m}")))
}
