//! `-i` as a file, a directory or an executable (a dynamic inventory):
//! the shipped examples in inventory/ load to the same hosts, a directory
//! merges in name order and refuses conflicts naming both files, and a
//! program that hangs, fails or prints garbage is a clear error naming it.
//! Offline: the programs are shell scripts under tests/fixtures/inventory
//! and inventory/, run on this machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use drover::engine::inventory::{load, run};
use drover::model::inventory::{Inventory, Layout};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/inventory").join(name)
}

fn drover(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
    c.current_dir(root()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `drover check --format json` of the bundled playbook over an inventory:
/// (exit code, the `details` of the JSON error or "").
fn check(inv: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let o = drover(
        &[
            "check",
            "--format",
            "json",
            "playbooks/rolling-restart.yml",
            "-i",
            inv.to_str().unwrap(),
        ],
        env,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {} / {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (
        o.status.code().unwrap_or(-1),
        v["details"].as_str().unwrap_or_default().to_string(),
    )
}

fn names(inv: &Inventory) -> Vec<&str> {
    inv.hosts.iter().map(|h| h.name.as_str()).collect()
}

#[test]
fn the_three_shipped_examples_hold_the_same_hosts() {
    let file = root().join("inventory/static.yml");
    let dir = root().join("inventory/dir");
    let prog = root().join("inventory/from-list");
    assert_eq!(Layout::of(&file), Layout::File);
    assert_eq!(Layout::of(&dir), Layout::Directory);
    assert_eq!(Layout::of(&prog), Layout::Program);
    let file = load(&file).unwrap();
    let dir = load(&dir).unwrap();
    let prog = load(&prog).unwrap();
    // Directory order: files by name (10-, 20-, 25-, 30-), hosts in file order.
    assert_eq!(names(&dir), ["web-1", "web-2", "worker-1", "db-1"]);
    for inv in [&file, &prog] {
        assert_eq!(names(inv), names(&dir));
    }
    for (a, b) in file.hosts.iter().zip(dir.hosts.iter().zip(&prog.hosts)) {
        for c in [b.0, b.1] {
            assert_eq!(a.address, c.address, "{}", a.name);
            assert_eq!(a.labels, c.labels, "{}", a.name);
            assert_eq!(a.user.as_deref(), Some("root"), "{}", a.name);
            assert_eq!(a.user, c.user, "{}", a.name);
            assert_eq!(a.connect_timeout, c.connect_timeout, "{}", a.name);
        }
    }
    // Defaults from 10-defaults.yml reach the hosts of the other files.
    assert_eq!(dir.hosts[3].protected.len(), 2);
    // A directory records each file for saved plans; a program its output.
    let files: Vec<&str> = dir.inputs.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(files[0].ends_with("10-defaults.yml"), "{files:?}");
    assert!(prog.inputs.is_empty());
    let out = run(&root().join("inventory/from-list"), Duration::from_secs(30)).unwrap();
    assert_eq!(prog.digest, drover::model::digest(out.as_bytes()));
}

#[test]
fn the_dynamic_example_prints_json_of_the_inventory_schema() {
    let out = run(&root().join("inventory/from-list"), Duration::from_secs(30)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/inventory.schema.json")).unwrap(),
    )
    .unwrap();
    // The schema's own terms: top-level keys and each host's keys are the
    // ones it lists (additionalProperties: false), `hosts` is present.
    assert_eq!(schema["additionalProperties"], false);
    for key in doc.as_object().unwrap().keys() {
        assert!(schema["properties"].get(key).is_some(), "{key}");
    }
    for req in schema["required"].as_array().unwrap() {
        assert!(doc.get(req.as_str().unwrap()).is_some(), "{req}");
    }
    let host_keys = &schema["$defs"]["HostSpec"]["properties"];
    for (name, host) in doc["hosts"].as_object().unwrap() {
        for key in host.as_object().unwrap().keys() {
            assert!(host_keys.get(key).is_some(), "{name}.{key}");
        }
    }
    for key in doc["defaults"].as_object().unwrap().keys() {
        assert!(host_keys.get(key).is_some(), "defaults.{key}");
    }
    // And the same text is a valid inventory through the model.
    Inventory::from_output(&out, Path::new("from-list")).unwrap();
}

#[test]
fn a_program_runs_from_its_directory_with_no_arguments_and_no_stdin() {
    let inv = load(&fixture("cwd")).unwrap();
    assert_eq!(names(&inv), ["here-1"]);
    assert_eq!(inv.hosts[0].labels["from"], "cwd");
    // Also when named relatively, from elsewhere.
    let o = drover(
        &[
            "status",
            "--format",
            "json",
            "-i",
            "tests/fixtures/inventory/cwd",
            "--target",
            "nothere",
        ],
        &[],
    );
    // Loaded: the error is about the target, not the inventory.
    let err = String::from_utf8_lossy(&o.stdout);
    assert!(err.contains("unknown host `nothere`"), "{err}");
}

#[test]
fn ssh_config_paths_resolve_against_the_file_or_program_that_names_them() {
    let inv = load(&fixture("ssh-config")).unwrap();
    let dir = std::fs::canonicalize(fixture("ssh-config"))
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let web1 = inv.hosts[0].ssh_config.as_deref().unwrap();
    assert_eq!(
        std::fs::canonicalize(web1.parent().unwrap()).unwrap(),
        dir,
        "{}",
        web1.display()
    );
    assert_eq!(
        inv.hosts[1].ssh_config.as_deref(),
        Some(Path::new("/etc/ssh/ssh_config"))
    );

    // In a directory: a default set in sub/… resolves against sub/, a
    // host's own against its file's directory.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("10-defaults.yml"),
        "defaults: { ssh_config: ./cfg }\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("20-hosts.yml"),
        "hosts:\n  a: {}\n  b: { ssh_config: other }\n",
    )
    .unwrap();
    let inv = load(d.path()).unwrap();
    assert_eq!(inv.hosts[0].ssh_config, Some(d.path().join("./cfg")));
    assert_eq!(inv.hosts[1].ssh_config, Some(d.path().join("other")));
}

#[test]
fn a_directory_merges_in_name_order_and_refuses_a_host_or_default_set_twice() {
    let d = tempfile::tempdir().unwrap();
    let w = |n: &str, t: &str| std::fs::write(d.path().join(n), t).unwrap();
    w("b.yaml", "hosts:\n  b-1: {}\n");
    w("a.yml", "defaults: { user: ops }\nhosts:\n  a-1: {}\n");
    w("c.yml.bak", "hosts:\n  ignored: {}\n");
    w("notes.txt", "not an inventory");
    std::fs::create_dir(d.path().join("sub.yml")).unwrap();
    let inv = load(d.path()).unwrap();
    assert_eq!(names(&inv), ["a-1", "b-1"]);
    assert_eq!(inv.hosts[1].user.as_deref(), Some("ops"));

    // Changing, adding or removing a file changes the digest.
    let before = inv.digest.clone();
    w("c.yml", "# nothing yet\n");
    let after = load(d.path()).unwrap();
    assert_ne!(before, after.digest);
    assert_eq!(after.inputs.len(), 3);

    w("d.yml", "hosts:\n  a-1: { port: 22 }\n");
    let (code, details) = check(d.path(), &[]);
    assert_eq!(code, 1, "{details}");
    let a = d.path().join("a.yml");
    let dd = d.path().join("d.yml");
    assert!(
        details.contains(&format!(
            "host `a-1` is defined in both {} and {}",
            a.display(),
            dd.display()
        )),
        "{details}"
    );
    assert!(
        details.contains(&format!("{} line 2 column 3", dd.display())),
        "{details}"
    );
    std::fs::remove_file(&dd).unwrap();

    w("e.yml", "defaults:\n  labels: { dc: x }\n  user: other\n");
    let (code, details) = check(d.path(), &[]);
    assert_eq!(code, 1, "{details}");
    assert!(
        details.starts_with("defaults.user: ")
            && details.contains(&a.display().to_string())
            && details.contains(&d.path().join("e.yml").display().to_string()),
        "{details}"
    );
}

#[test]
fn an_empty_directory_or_one_without_hosts_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (code, details) = check(d.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        details.contains("holds no `*.yml` or `*.yaml` file"),
        "{details}"
    );
    std::fs::write(d.path().join("a.yml"), "defaults: { user: root }\n").unwrap();
    let (code, details) = check(d.path(), &[]);
    assert_eq!(code, 1);
    assert!(details.contains("no hosts"), "{details}");
}

#[test]
fn a_hanging_program_is_killed_at_the_time_limit() {
    let start = Instant::now();
    let (code, details) = check(&fixture("hang"), &[("DROVER_INVENTORY_TIMEOUT", "1s")]);
    // The script's `sleep 600` held stdout open: the whole group was killed.
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(code, 1, "{details}");
    assert!(
        details.contains("tests/fixtures/inventory/hang")
            && details.contains("did not finish within 1s")
            && details.contains("DROVER_INVENTORY_TIMEOUT")
            && details.contains("stdout: \"{\\\"hosts\\\":\""),
        "{details}"
    );
    // A bad limit is a usage error, not a silent default.
    let (code, details) = check(&fixture("hang"), &[("DROVER_INVENTORY_TIMEOUT", "soon")]);
    assert_eq!(code, 1);
    assert!(
        details.starts_with("DROVER_INVENTORY_TIMEOUT: "),
        "{details}"
    );
}

#[test]
fn a_failing_program_shows_its_exit_status_and_stderr() {
    let (code, details) = check(&fixture("fail"), &[]);
    assert_eq!(code, 1, "{details}");
    assert!(
        details.contains("the dynamic inventory ")
            && details.contains("tests/fixtures/inventory/fail exited with status 3")
            && details.contains("stderr: \"cmdb: connection refused"),
        "{details}"
    );
}

#[test]
fn a_program_printing_garbage_is_named_with_what_it_printed() {
    let (code, details) = check(&fixture("garbage"), &[]);
    assert_eq!(code, 1, "{details}");
    assert!(
        details.contains("tests/fixtures/inventory/garbage printed no valid JSON inventory"),
        "{details}"
    );
    // Escaped: the terminal escape reaches the error as text, not as colour.
    assert!(
        details.contains("it printed \"fetching hosts... \\u{1b}[31mdone"),
        "{details}"
    );
    assert!(
        details.contains("garbage (output) line 1 column "),
        "{details}"
    );
    // A long output is cut.
    let long = "x".repeat(5000);
    let e = Inventory::from_output(&long, Path::new("p")).unwrap_err();
    assert!(e.details().len() < 2000, "{}", e.details());
}

#[test]
fn a_saved_plan_records_each_file_of_a_directory_and_names_the_changed_one() {
    let d = tempfile::tempdir().unwrap();
    let inv = d.path().join("inv");
    std::fs::create_dir(&inv).unwrap();
    let example = std::fs::read_to_string(root().join("examples/inventory.yml")).unwrap();
    // The bundled example split in two: defaults + web, the rest.
    let (head, tail) = example.split_at(example.find("  worker-1:").unwrap());
    std::fs::write(inv.join("10-web.yml"), head).unwrap();
    std::fs::write(inv.join("20-rest.yml"), format!("hosts:\n{tail}")).unwrap();
    let pb = root().join("examples/nightly-restart.yml");
    let out = d.path().join("plan.json");
    let o = drover(
        &[
            "plan",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--facts",
            "examples/facts.json",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let inputs: Vec<&str> = plan["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    for f in ["10-web.yml", "20-rest.yml"] {
        assert!(inputs.iter().any(|p| p.ends_with(f)), "{f}: {inputs:?}");
    }
    // A change in one file: apply refuses before connecting, naming it.
    std::fs::write(
        inv.join("20-rest.yml"),
        format!("hosts:\n{}", tail.replace("10.0.0.21", "10.0.0.99")),
    )
    .unwrap();
    let o = drover(
        &[
            "apply",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--plan",
            out.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(3), "{v}");
    let details = v["details"].as_str().unwrap();
    assert!(
        details.contains("the inventory file ") && details.contains("20-rest.yml changed"),
        "{details}"
    );
}

#[test]
fn a_program_printing_without_end_is_stopped_at_the_output_bound() {
    let start = Instant::now();
    let (code, details) = check(&fixture("huge"), &[]);
    assert_eq!(code, 1, "{details}");
    assert!(
        details.contains("tests/fixtures/inventory/huge printed more than the 33554432 bytes"),
        "{details}"
    );
    // Well before the 30 s limit: the bound, not the clock, stopped it.
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "{:?}",
        start.elapsed()
    );
}

/// A fleet of 100,000 hosts loads as one YAML file, as a directory of ten
/// files and as a program's JSON: the YAML parser's node budget grows with
/// the text (bounded by the file size), where a fixed budget refused
/// 20,000 hosts.
#[test]
fn a_hundred_thousand_hosts_load_in_every_form() {
    const HOSTS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let host = |i: usize| {
        format!(
            "  host-{i}:\n    address: 10.{}.{}.{}\n    labels: {{ role: {}, region: eu.west.{} }}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256,
            ["web", "worker", "db"][i % 3],
            i % 4
        )
    };
    let mut file = String::from("defaults:\n  user: root\nhosts:\n");
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let mut json = serde_json::Map::new();
    for chunk in 0..10 {
        let mut part = String::from("hosts:\n");
        for i in chunk * HOSTS / 10..(chunk + 1) * HOSTS / 10 {
            file.push_str(&host(i));
            part.push_str(&host(i));
            json.insert(
                format!("host-{i}"),
                serde_json::json!({"address": format!("10.0.0.{}", i % 256)}),
            );
        }
        std::fs::write(parts.join(format!("{chunk:02}.yml")), part).unwrap();
    }
    let one = dir.path().join("fleet.yml");
    std::fs::write(&one, &file).unwrap();
    let json_path = dir.path().join("fleet.json");
    std::fs::write(&json_path, serde_json::json!({ "hosts": json }).to_string()).unwrap();
    let prog = dir.path().join("fleet-program");
    std::fs::write(
        &prog,
        format!("#!/bin/sh\nexec cat '{}'\n", json_path.display()),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    for path in [&one, &parts, &prog] {
        let inv = load(path).unwrap_or_else(|e| panic!("{}: {e}: {}", path.display(), e.details()));
        assert_eq!(inv.hosts.len(), HOSTS, "{}", path.display());
        assert_eq!(inv.hosts[HOSTS - 1].name, format!("host-{}", HOSTS - 1));
    }
}
