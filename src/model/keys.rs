//! The server's keys file: who may call `drover serve`, with which role and
//! on which hosts. Keys themselves are never stored, only their SHA-256, so
//! the file can be read by more people than the keys' holders.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::error::{Error, Result};
use crate::model::target::Selector;
use crate::model::yaml;

const WHAT: &str = "keys file";

/// What a key may do; each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every GET and every dry run.
    Read,
    /// Read, service operations, runbooks, maintenance, cancel.
    Operate,
    /// Operate, unit register/deregister, protected units, the audit log.
    Admin,
}

impl Role {
    /// Its name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "read" => Ok(Role::Read),
            "operate" => Ok(Role::Operate),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "`{other}` is not a role; use read, operate or admin"
            )),
        }
    }
}

/// One entry of the keys file as written.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Shown in the audit log (the key never is).
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// read | operate | admin.
    pub role: Role,
    /// The only hosts this key may act on (a target selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

/// A validated key.
#[derive(Debug, Clone)]
pub struct Key {
    /// Its name.
    pub name: String,
    digest: [u8; 32],
    /// Its role.
    pub role: Role,
    /// Hosts it may act on; None: every host.
    pub targets: Option<Selector>,
}

/// Every key the server accepts.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Where they came from.
    pub path: PathBuf,
    keys: Vec<Key>,
}

/// SHA-256 of a key as sent.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Keys {
    /// Read and validate a keys file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = yaml::read_bounded(path, WHAT)?;
        Self::from_str(&text, path)
    }

    /// Parse and validate keys-file text; `path` names it in errors.
    pub fn from_str(text: &str, path: &Path) -> Result<Self> {
        let file: KeysFile = yaml::parse(text, path, WHAT)?;
        if file.keys.is_empty() {
            return Err(Error::invalid(
                WHAT,
                "keys",
                "no keys: add one with `drover serve keygen --name NAME --role ROLE`",
                yaml::locate(text, path, &["keys"]),
            ));
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for (i, e) in file.keys.iter().enumerate() {
            let at = |field: &str| yaml::locate(text, path, &["keys", &i.to_string(), field]);
            if e.name.trim().is_empty() || e.name.chars().any(char::is_control) {
                return Err(Error::invalid(
                    WHAT,
                    format!("keys[{i}].name"),
                    "a key needs a printable name (it is what the audit log shows)",
                    at("name"),
                ));
            }
            if keys.iter().any(|k: &Key| k.name == e.name) {
                return Err(Error::invalid(
                    WHAT,
                    format!("keys[{i}].name"),
                    format!(
                        "the name `{}` is used twice; names tell keys apart in the audit log",
                        e.name
                    ),
                    at("name"),
                ));
            }
            let digest = parse_digest(&e.sha256).ok_or_else(|| {
                Error::invalid(
                    WHAT,
                    format!("keys[{i}].sha256"),
                    "not a hex SHA-256 (64 hex digits); `drover serve keygen` prints one",
                    at("sha256"),
                )
            })?;
            if let Some(j) = keys.iter().position(|k: &Key| k.digest == digest) {
                let first = yaml::locate(text, path, &["keys", &j.to_string(), "sha256"])
                    .map_or_else(|| format!("keys[{j}]"), |p| format!("keys[{j}] ({p})"));
                return Err(Error::invalid(
                    WHAT,
                    format!("keys[{i}].sha256"),
                    format!(
                        "the same key as `{}` at {first}: one key would hold two names and roles; make a new key with `drover serve keygen` for one of them",
                        keys[j].name
                    ),
                    at("sha256"),
                ));
            }
            let targets = match &e.targets {
                None => None,
                Some(raw) => Some(Selector::parse(raw).map_err(|m| {
                    Error::invalid(WHAT, format!("keys[{i}].targets"), m, at("targets"))
                })?),
            };
            keys.push(Key {
                name: e.name.clone(),
                digest,
                role: e.role,
                targets,
            });
        }
        Ok(Keys {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The key whose digest matches `presented`'s. Every entry is compared
    /// in constant time, and all of them always are, so neither the time
    /// taken nor its variation tells which prefix or which entry matched.
    pub fn find(&self, presented: &str) -> Option<&Key> {
        self.find_digest(&key_digest(presented))
    }

    /// The key whose digest is `d` (a session's key), compared as
    /// [`Keys::find`] does.
    pub fn find_digest(&self, d: &[u8; 32]) -> Option<&Key> {
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(d)) {
                found = Some(k);
            }
        }
        found
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none (a loaded file never has none).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_digest(hex_text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_text.trim()).ok()?;
    bytes.try_into().ok()
}

/// A new random key (32 bytes, URL-safe base64 with a `drv_` prefix so
/// secret scanners can recognise it) and its entry for the keys file.
pub fn generate(name: &str, role: Role, targets: Option<&str>) -> Result<(String, KeyEntry)> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| Error::Internal(format!("no randomness from the OS: {e}")))?;
    use base64::Engine;
    let key = format!(
        "drv_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    if let Some(t) = targets {
        Selector::parse(t).map_err(|m| Error::Usage(format!("--targets: {m}")))?;
    }
    let entry = KeyEntry {
        name: name.to_string(),
        sha256: hex::encode(key_digest(&key)),
        role,
        targets: targets.map(str::to_string),
    };
    Ok((key, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_found_by_itself_only() {
        let (key, entry) = generate("ci", Role::Read, None).unwrap();
        let text = format!(
            "keys:\n  - name: ci\n    sha256: {}\n    role: read\n",
            entry.sha256
        );
        let keys = Keys::from_str(&text, Path::new("keys.yml")).unwrap();
        assert_eq!(keys.find(&key).map(|k| k.name.as_str()), Some("ci"));
        assert!(keys.find("drv_wrong").is_none());
        assert!(keys.find("").is_none());
        assert!(!text.contains(&key));
    }

    #[test]
    fn bad_entries_name_their_field() {
        let e = Keys::from_str(
            "keys:\n  - name: a\n    sha256: xyz\n    role: read\n",
            Path::new("k.yml"),
        )
        .unwrap_err();
        assert!(e.details().contains("keys[0].sha256"), "{}", e.details());
        let e = Keys::from_str(
            "keys:\n  - name: a\n    sha256: 00\n    role: boss\n",
            Path::new("k.yml"),
        )
        .unwrap_err();
        assert!(e.details().contains("role"), "{}", e.details());
        let d = "0".repeat(64);
        let e = Keys::from_str(
            &format!("keys:\n  - {{name: a, sha256: {d}, role: read}}\n  - {{name: a, sha256: {d}, role: admin}}\n"),
            Path::new("k.yml"),
        )
        .unwrap_err();
        assert!(e.details().contains("used twice"), "{}", e.details());
        let e = Keys::from_str(
            &format!("keys:\n  - name: a\n    sha256: {d}\n    role: read\n  - name: b\n    sha256: {d}\n    role: admin\n"),
            Path::new("k.yml"),
        )
        .unwrap_err();
        let details = e.details();
        assert!(details.contains("keys[1].sha256"), "{details}");
        assert!(
            details.contains("the same key as `a` at keys[0] (k.yml line 3"),
            "{details}"
        );
        assert!(details.contains("line 6"), "{details}");
        let e = Keys::from_str(
            &format!("keys:\n  - {{name: a, sha256: {d}, role: read, targets: ''}}\n"),
            Path::new("k.yml"),
        )
        .unwrap_err();
        assert!(e.details().contains("keys[0].targets"), "{}", e.details());
    }
}
