//! The inventory: which hosts exist, how to reach them, and what they are
//! (labels) — resolved once, with defaults applied, before anything runs.

mod host;
mod spec;

pub use host::{validate_label, validate_name};
pub use spec::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;

use crate::model::error::{suggest, Error, Result};
use crate::model::inventory::host::locate_error;
use crate::model::inventory::host::resolve_host;
use crate::model::inventory::spec::InventoryPart;
use crate::model::unit::UnitName;
use crate::model::yaml;

/// A host with every default applied: what the rest of drover sees.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// The inventory name, used in reports.
    pub name: String,
    /// What SSH connects to.
    pub address: String,
    /// SSH port, when set.
    pub port: Option<u16>,
    /// SSH user, when set.
    pub user: Option<String>,
    /// ssh or local.
    pub transport: Transport,
    /// ssh_config file, resolved against the inventory's directory.
    pub ssh_config: Option<PathBuf>,
    /// Connect timeout.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Use `sudo -n` for the bridge.
    pub become_: bool,
    /// D-Bus address for local transport.
    pub bus: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Variables.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Protected units.
    pub protected: Vec<UnitName>,
}

mod humantime_serde_compat {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// A loaded inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Where it came from: the file, the directory or the program.
    pub path: PathBuf,
    /// Hosts in inventory order (files in name order, then file order).
    pub hosts: Vec<Host>,
    /// SHA-256 of what was read, for saved plans: the file, the program's
    /// output, or (for a directory) the list of its files and their digests.
    pub digest: String,
    /// The files a directory inventory was merged from, each with its
    /// digest, so a saved plan names the one that changed (empty otherwise).
    pub inputs: Vec<crate::model::Input>,
}

/// Default connect timeout, as DESIGN.md's example.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const WHAT: &str = "inventory";

/// What `-i PATH` names: how drover reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One YAML file.
    File,
    /// A directory: every `*.yml`/`*.yaml` in it, merged in name order.
    Directory,
    /// An executable that prints the inventory as JSON (a dynamic
    /// inventory): a file with an execute bit whose name does not end in
    /// `.yml` or `.yaml`.
    Program,
}

impl Layout {
    /// How to read `path` (which must exist to be anything but a file).
    pub fn of(path: &Path) -> Layout {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Layout::Directory,
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 && !is_yaml_name(path) => {
                Layout::Program
            }
            _ => Layout::File,
        }
    }
}

fn is_yaml_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yml" || e == "yaml")
}

/// One inventory document and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The document.
    pub text: &'a str,
    /// Its name in errors: the file, or `PROGRAM (output)`.
    pub name: &'a Path,
    /// The directory that relative `ssh_config` paths are resolved
    /// against: the defining file's, or the program's.
    pub base: &'a Path,
}

/// A document's settings, before merging.
struct Parsed {
    defaults: HostSpec,
    hosts: IndexMap<String, Option<HostSpec>>,
}

impl Inventory {
    /// Read, parse and validate an inventory file or directory. A program
    /// (a dynamic inventory) is run by the engine
    /// (`engine::inventory::load`), which then calls [`Inventory::from_output`].
    pub fn load(path: &Path) -> Result<Self> {
        match Layout::of(path) {
            Layout::File => {
                let text = yaml::read_bounded(path, WHAT)?;
                Self::from_str(&text, path)
            }
            Layout::Directory => Self::load_dir(path),
            Layout::Program => Err(Error::Usage(format!(
                "{} is an executable (a dynamic inventory), which the model does not run; load it with engine::inventory::load",
                path.display()
            ))),
        }
    }

    /// Parse and validate inventory text; `path` names it in errors and
    /// anchors relative `ssh_config` paths.
    pub fn from_str(text: &str, path: &Path) -> Result<Self> {
        let base = path.parent().unwrap_or(Path::new("."));
        let src = Source {
            text,
            name: path,
            base,
        };
        let file: InventoryFile = yaml::parse(text, path, WHAT)?;
        let parsed = Parsed {
            defaults: file.defaults,
            hosts: file.hosts,
        };
        let mut inv = Self::merge(path, &[(src, parsed)], "add at least one under `hosts:`")?;
        inv.digest = crate::model::digest(text.as_bytes());
        Ok(inv)
    }

    /// Parse and validate what a dynamic inventory printed: JSON of the
    /// same schema as a file. `program` names it in errors (as `PROGRAM
    /// (output)`) and its directory anchors relative `ssh_config` paths.
    pub fn from_output(output: &str, program: &Path) -> Result<Self> {
        let name = output_name(program);
        let base = program.parent().unwrap_or(Path::new("."));
        let src = Source {
            text: output,
            name: &name,
            base,
        };
        let file: InventoryFile = yaml::parse_json(output, &name, WHAT)?;
        let parsed = Parsed {
            defaults: file.defaults,
            hosts: file.hosts,
        };
        let mut inv = Self::merge(
            program,
            &[(src, parsed)],
            "the program printed an empty `hosts` object",
        )?;
        inv.digest = crate::model::digest(output.as_bytes());
        Ok(inv)
    }

    /// Read every `*.yml`/`*.yaml` of a directory, in name order, and merge.
    fn load_dir(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("read", dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_yaml_name(p) && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::invalid(
                WHAT,
                "",
                format!(
                    "the directory {} holds no `*.yml` or `*.yaml` file",
                    dir.display()
                ),
                None,
            ));
        }
        let mut texts = Vec::with_capacity(files.len());
        let mut total = 0u64;
        for f in &files {
            let text = yaml::read_bounded(f, WHAT)?;
            total += text.len() as u64;
            if total > yaml::MAX_FILE_BYTES {
                return Err(Error::invalid(
                    WHAT,
                    "",
                    format!(
                        "the files of {} add up to more than the {} bytes drover accepts",
                        dir.display(),
                        yaml::MAX_FILE_BYTES
                    ),
                    None,
                ));
            }
            texts.push(text);
        }
        Self::from_texts(dir, &files, &texts)
    }

    /// Merge the documents of a directory (`files[i]` holds `texts[i]`).
    pub fn from_texts(dir: &Path, files: &[PathBuf], texts: &[String]) -> Result<Self> {
        let mut parts = Vec::with_capacity(files.len());
        let mut inputs = Vec::with_capacity(files.len());
        for (file, text) in files.iter().zip(texts) {
            let parsed = if text.trim().is_empty() {
                InventoryPart {
                    defaults: HostSpec::default(),
                    hosts: IndexMap::new(),
                }
            } else {
                yaml::parse::<InventoryPart>(text, file, WHAT)?
            };
            let src = Source {
                text,
                name: file,
                base: file.parent().unwrap_or(dir),
            };
            parts.push((
                src,
                Parsed {
                    defaults: parsed.defaults,
                    hosts: parsed.hosts,
                },
            ));
            inputs.push(crate::model::Input {
                path: file.display().to_string(),
                digest: crate::model::digest(text.as_bytes()),
            });
        }
        let mut inv = Self::merge(
            dir,
            &parts,
            "add at least one under `hosts:` in one of its files",
        )?;
        // Adding, removing or renaming a file changes the inventory too.
        let listing: String = inputs
            .iter()
            .map(|i| format!("{}\0{}\n", i.path, i.digest))
            .collect();
        inv.digest = crate::model::digest(listing.as_bytes());
        inv.inputs = inputs;
        Ok(inv)
    }

    /// Merge parsed documents: a `defaults` key or a host set by two of
    /// them is an error naming both; then resolve every host.
    fn merge(path: &Path, parts: &[(Source<'_>, Parsed)], no_hosts_hint: &str) -> Result<Self> {
        // Which part set each defaults key, and the merged defaults.
        let mut defaults = HostSpec::default();
        let mut set_by: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (i, (src, p)) in parts.iter().enumerate() {
            if p.defaults.address.is_some() {
                return Err(Error::invalid(
                    WHAT,
                    "defaults.address",
                    "an address belongs to one host, not to defaults",
                    yaml::locate(src.text, src.name, &["defaults", "address"]),
                ));
            }
            for key in p.defaults.keys() {
                if let Some(&first) = set_by.get(key) {
                    return Err(Error::invalid(
                        WHAT,
                        format!("defaults.{key}"),
                        format!(
                            "`defaults.{key}` is set in both {} and {}; set it in one file",
                            parts[first].0.name.display(),
                            src.name.display()
                        ),
                        yaml::locate(src.text, src.name, &["defaults", key]),
                    ));
                }
                set_by.insert(key, i);
            }
            defaults.fill_from(&p.defaults);
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut hosts = Vec::new();
        for (i, (src, p)) in parts.iter().enumerate() {
            for (name, spec) in &p.hosts {
                if let Some(&first) = seen.get(name.as_str()) {
                    return Err(Error::invalid(
                        WHAT,
                        format!("hosts.{name}"),
                        format!(
                            "host `{}` is defined in both {} and {}; define it in one file",
                            name.escape_default(),
                            parts[first].0.name.display(),
                            src.name.display()
                        ),
                        yaml::locate(src.text, src.name, &["hosts", name]),
                    ));
                }
                seen.insert(name, i);
                let spec = spec.clone().unwrap_or_default();
                // A relative ssh_config is resolved against the file that
                // wrote it: the host's own, or the one that set the default.
                let defaults_base = set_by
                    .get("ssh_config")
                    .map_or(src.base, |&d| parts[d].0.base);
                let host = resolve_host(name, &spec, &defaults, src.base, defaults_base)
                    .map_err(|e| locate_error(e, parts, i, &set_by))?;
                hosts.push(host);
            }
        }
        if hosts.is_empty() {
            let (src, _) = &parts[0];
            return Err(Error::invalid(
                WHAT,
                "hosts",
                format!("no hosts: {no_hosts_hint}"),
                yaml::locate(src.text, src.name, &["hosts"]),
            ));
        }
        Ok(Inventory {
            path: path.to_path_buf(),
            hosts,
            digest: String::new(),
            inputs: Vec::new(),
        })
    }

    /// Find a host by name.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The closest hostname to a misspelled one.
    pub fn suggest_host(&self, name: &str) -> Option<String> {
        suggest(name, self.hosts.iter().map(|h| h.name.as_str()))
    }
}

/// How a program's output is named in errors and saved plans.
pub fn output_name(program: &Path) -> PathBuf {
    PathBuf::from(format!("{} (output)", program.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "\
defaults:
  user: root
  connect_timeout: 3s
  labels: { dc: a }
hosts:
  web-1:
    address: 10.0.0.11
    labels: { role: web, region: eu.west.1 }
  web-2: { labels: { role: web, dc: b } }
  localhost: { transport: local }
";

    #[test]
    fn defaults_apply_and_order_is_kept() {
        let inv = Inventory::from_str(INV, Path::new("inv.yml")).unwrap();
        let names: Vec<_> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["web-1", "web-2", "localhost"]);
        assert_eq!(inv.hosts[0].address, "10.0.0.11");
        assert_eq!(inv.hosts[1].address, "web-2");
        assert_eq!(inv.hosts[1].labels["dc"], "b");
        assert_eq!(inv.hosts[0].labels["dc"], "a");
        assert_eq!(inv.hosts[2].transport, Transport::Local);
        assert_eq!(inv.hosts[0].connect_timeout, Duration::from_secs(3));
    }

    fn one_host(spec: &str) -> Result<Inventory> {
        Inventory::from_str(&format!("hosts:\n  web-1: {spec}\n"), Path::new("i.yml"))
    }

    #[test]
    fn addresses_are_hostnames_or_ips() {
        for good in [
            "10.0.0.11",
            "web-1.example.com",
            "under_score",
            "fe80::1",
            "[::1]",
            "[2001:db8::10]",
            "[::ffff:10.0.0.1]",
        ] {
            let inv = one_host(&format!("{{ address: \"{good}\" }}")).unwrap();
            assert_eq!(inv.hosts[0].address, good);
        }
        for bad in [
            "a;reboot",
            "$(reboot)",
            "`reboot`",
            "a b",
            "-oProxyCommand=x",
            "a%h",
            "user@host",
            "[web-1]",
            "[::1",
            "::1]",
            "a[::1]",
            "",
        ] {
            let e = one_host(&format!("{{ address: \"{bad}\" }}"))
                .unwrap_err()
                .details();
            assert!(e.starts_with("hosts.web-1.address: "), "{bad}: {e}");
            assert!(e.contains("i.yml line 2"), "{bad}: {e}");
        }
        let e = one_host("{ address: \"a;b\" }").unwrap_err().details();
        assert!(
            e.contains("contains `;`") && e.contains("letters, digits"),
            "{e}"
        );
    }

    #[test]
    fn bus_is_one_unix_path() {
        let inv = one_host("{ transport: local, bus: \"unix:path=/run/dbus/system_bus_socket\" }")
            .unwrap();
        assert_eq!(
            inv.hosts[0].bus.as_deref(),
            Some("unix:path=/run/dbus/system_bus_socket")
        );
        for bad in [
            "unixexec:path=/bin/sh,argv1=-c,argv2=reboot",
            "tcp:host=10.0.0.1,port=1",
            "unix:abstract=x",
            "unix:path=",
            "unix:path=/a;unixexec:path=/bin/sh",
            "unix:path=/a,guid=00",
            " unix:path=/a",
        ] {
            let e = one_host(&format!("{{ transport: local, bus: \"{bad}\" }}"))
                .unwrap_err()
                .details();
            assert!(e.starts_with("hosts.web-1.bus: "), "{bad}: {e}");
            assert!(e.contains("i.yml line 2"), "{bad}: {e}");
        }
        // A bus in defaults is checked for every host it reaches.
        let e = Inventory::from_str(
            "defaults: { bus: \"unixexec:path=/bin/true\" }\nhosts:\n  web-1: {}\n",
            Path::new("i.yml"),
        )
        .unwrap_err()
        .details();
        assert!(e.starts_with("hosts.web-1.bus: "), "{e}");
    }

    #[test]
    fn connect_timeout_is_capped() {
        assert_eq!(
            one_host("{ connect_timeout: 7d }").unwrap().hosts[0].connect_timeout,
            crate::model::MAX_DURATION
        );
        for long in ["8d", "500000000000y"] {
            let e = one_host(&format!("{{ connect_timeout: {long} }}"))
                .unwrap_err()
                .details();
            assert!(
                e.starts_with("hosts.web-1.connect_timeout: ") && e.contains("longer than 7 days"),
                "{long}: {e}"
            );
            assert!(e.contains("i.yml line 2"), "{long}: {e}");
        }
    }

    #[test]
    fn json_output_is_the_same_format_and_a_host_twice_is_refused() {
        let inv = Inventory::from_output(
            r#"{"defaults": {"user": "ops"}, "hosts": {"b": {"port": 2222}, "a": null}}"#,
            Path::new("/opt/inv/cmdb"),
        )
        .unwrap();
        let names: Vec<_> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(inv.hosts[1].user.as_deref(), Some("ops"));
        assert_eq!(inv.path, Path::new("/opt/inv/cmdb"));
        for (text, want) in [
            (
                r#"{"hosts": {"a": {}, "a": {}}}"#,
                "host `a` is defined twice",
            ),
            (r#"{"hosts": {}}"#, "no hosts"),
            (
                r#"{"hosts": {"a": {}}, "extra": 1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"hosts": {"a": {"labels": {"r": "a b"}}}}"#,
                "label value",
            ),
        ] {
            let e = Inventory::from_output(text, Path::new("cmdb"))
                .unwrap_err()
                .details();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("cmdb (output) line 1 column "), "{text}: {e}");
        }
        // YAML files refuse a host twice too (the YAML parser's own check).
        assert!(Inventory::from_str("hosts:\n  a: {}\n  a: {}\n", Path::new("i.yml")).is_err());
    }

    #[test]
    fn reserved_and_bad_names_are_refused() {
        for bad in ["_all", "a:b", "a,b", "!x", "a b"] {
            let text = format!("hosts:\n  '{bad}': {{}}\n");
            assert!(
                Inventory::from_str(&text, Path::new("i.yml")).is_err(),
                "{bad}"
            );
        }
    }
}
