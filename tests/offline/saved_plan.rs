//! Saved plans offline: what `plan --out` records, and `apply --plan`
//! refusing changed inputs before it connects anywhere. (Drift against
//! live hosts is tested on the lab in tests/lab/scenarios.rs.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

/// A copy of the bundled example in a temp dir, with a saved plan of it.
fn saved(limit: Option<&str>) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    let inv = dir.path().join("inv.yml");
    let out = dir.path().join("plan.json");
    std::fs::copy(root().join("examples/nightly-restart.yml"), &pb).unwrap();
    std::fs::copy(root().join("examples/inventory.yml"), &inv).unwrap();
    let mut args = vec![
        "plan",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--facts",
        "examples/facts.json",
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(l) = limit {
        args.extend(["--limit", l]);
    }
    let o = drover(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (dir, pb, inv, out)
}

fn apply(pb: &Path, inv: &Path, plan: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec![
        "apply",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let o = drover(&args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON on stdout ({e}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

#[test]
fn saved_plan_records_digests_limit_and_the_facts_it_used() {
    let (_d, pb, inv, out) = saved(Some("region:eu"));
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(plan["schema"], "drover.plan/1");
    assert_eq!(plan["limit"], "region:eu");
    let digest = |p: &Path| {
        use sha2::Digest;
        let d = sha2::Sha256::digest(std::fs::read(p).unwrap());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(plan["playbook"]["digest"], digest(&pb));
    assert_eq!(plan["inventory"]["digest"], digest(&inv));
    let facts = plan["facts"]["hosts"].as_object().unwrap();
    // Only the hosts inside the limit that some step touches, and only the
    // units the steps touch on them.
    let hosts: Vec<&str> = facts.keys().map(|k| k.as_str()).collect();
    let mut hosts = hosts;
    hosts.sort_unstable();
    assert_eq!(hosts, ["db-1", "web-1", "web-2", "worker-1"], "{hosts:?}");
    let units: Vec<&str> = facts["web-1"]["units"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(units, ["demo-idle.service", "demo-web.service"]);
    assert!(facts["db-1"]["units"]
        .as_object()
        .unwrap()
        .contains_key("demo-idle.service"));
    assert_eq!(
        facts["web-1"]["units"]["demo-web.service"]["active_state"],
        "active"
    );
}

#[test]
fn apply_plan_refuses_a_changed_playbook_or_inventory() {
    let (_d, pb, inv, out) = saved(None);
    let mut text = std::fs::read_to_string(&pb).unwrap();
    text.push_str("# edited after review\n");
    std::fs::write(&pb, text).unwrap();
    let (code, v) = apply(&pb, &inv, &out, &[]);
    assert_eq!((code, v["code"].as_u64()), (3, Some(403)), "{v}");
    let details = v["details"].as_str().unwrap();
    assert!(
        details.contains("playbook") && details.contains("changed since the plan"),
        "{details}"
    );

    let (_d, pb, inv, out) = saved(None);
    let mut text = std::fs::read_to_string(&inv).unwrap();
    text.push_str("  web-9: { address: 10.0.0.19 }\n");
    std::fs::write(&inv, text).unwrap();
    let (code, v) = apply(&pb, &inv, &out, &[]);
    assert_eq!((code, v["code"].as_u64()), (3, Some(403)), "{v}");
    assert!(v["details"].as_str().unwrap().contains("inventory"), "{v}");
}

#[test]
fn apply_plan_keeps_the_plans_limit() {
    let (_d, pb, inv, out) = saved(Some("region:eu"));
    let (code, v) = apply(&pb, &inv, &out, &["--limit", "role:web"]);
    assert_eq!((code, v["code"].as_u64()), (1, Some(400)), "{v}");
    assert!(v["details"].as_str().unwrap().contains("region:eu"), "{v}");
}

#[test]
fn apply_plan_rejects_a_plan_without_facts_or_of_another_schema() {
    let (d, pb, inv, out) = saved(None);
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    plan.as_object_mut().unwrap().remove("facts");
    let nofacts = d.path().join("nofacts.json");
    std::fs::write(&nofacts, plan.to_string()).unwrap();
    let (code, v) = apply(&pb, &inv, &nofacts, &[]);
    assert_eq!((code, v["code"].as_u64()), (1, Some(400)), "{v}");
    assert!(v["details"].as_str().unwrap().contains("no facts"), "{v}");
    plan["schema"] = "drover.plan/9".into();
    std::fs::write(&nofacts, plan.to_string()).unwrap();
    let (code, v) = apply(&pb, &inv, &nofacts, &[]);
    assert_eq!((code, v["code"].as_u64()), (1, Some(400)), "{v}");
    assert!(
        v["details"].as_str().unwrap().contains("drover.plan/9"),
        "{v}"
    );
}

#[test]
fn allow_drift_needs_a_plan() {
    let o = drover(&[
        "apply",
        "examples/nightly-restart.yml",
        "-i",
        "examples/inventory.yml",
        "--allow-drift",
    ]);
    assert_eq!(o.status.code(), Some(1), "a usage error is invalid input");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--plan"));
}

#[test]
fn review_output_is_byte_identical_whatever_the_facts_file_order() {
    let dir = tempfile::tempdir().unwrap();
    // The same facts with hosts (and their units) in reverse order.
    let facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("examples/facts.json")).unwrap())
            .unwrap();
    let mut text = String::from("{\"version\":1,\"collected_at\":");
    text.push_str(&facts["collected_at"].to_string());
    text.push_str(",\"hosts\":{");
    let hosts = facts["hosts"].as_object().unwrap();
    let mut parts: Vec<String> = hosts
        .iter()
        .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), v))
        .collect();
    parts.reverse();
    text.push_str(&parts.join(","));
    text.push_str("}}");
    let reversed = dir.path().join("facts.json");
    std::fs::write(&reversed, text).unwrap();
    let copy = dir.path().join("facts-copy.json");
    std::fs::copy(root().join("examples/facts.json"), &copy).unwrap();

    let run = |facts: &Path, format: &str, out: &Path| {
        let o = drover(&[
            "--color",
            "always",
            "plan",
            "examples/nightly-restart.yml",
            "-i",
            "examples/inventory.yml",
            "--facts",
            facts.to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (o.stdout, std::fs::read_to_string(out).unwrap())
    };
    let (md_a, saved_a) = run(&copy, "markdown", &dir.path().join("a.json"));
    let (md_b, saved_b) = run(&reversed, "markdown", &dir.path().join("b.json"));
    assert!(
        !md_a.contains(&0x1b),
        "markdown must never carry ANSI codes"
    );
    let strip =
        |md: &[u8], f: &Path| String::from_utf8_lossy(md).replace(f.to_str().unwrap(), "FACTS");
    assert_eq!(strip(&md_a, &copy), strip(&md_b, &reversed));
    assert_eq!(
        saved_a.replace(copy.to_str().unwrap(), "FACTS"),
        saved_b.replace(reversed.to_str().unwrap(), "FACTS"),
        "saved plans differ with the facts file's order"
    );
    let (json, _) = run(&copy, "json", &dir.path().join("c.json"));
    assert!(!json.contains(&0x1b));
}

/// `drover plan PB -i INV --facts FACTS --out OUT EXTRA...`, which must
/// succeed.
fn plan_out(pb: &Path, inv: &Path, facts: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "plan",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--facts",
        facts.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = drover(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// A saved plan of a unit-template playbook over an inventory with an
/// ssh_config, all in a temp dir: (dir, playbook, inventory, plan).
fn saved_with_inputs() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("app.j2"), "[Service]\nExecStart=/bin/true\n").unwrap();
    std::fs::write(d.join("ssh_config"), "Host web-1\n  Port 22\n").unwrap();
    let inv = d.join("inv.yml");
    let example = std::fs::read_to_string(root().join("examples/inventory.yml")).unwrap();
    std::fs::write(
        &inv,
        example.replacen(
            "  user: root\n",
            "  user: root\n  ssh_config: ./ssh_config\n",
            1,
        ),
    )
    .unwrap();
    let pb = d.join("pb.yml");
    std::fs::write(
        &pb,
        "name: app\nsteps:\n  - id: app\n    target: web-1\n    unit: { name: drover-app, template: app.j2 }\n",
    )
    .unwrap();
    let mut facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("examples/facts.json")).unwrap())
            .unwrap();
    facts["hosts"]["web-1"]["unit_files"] = serde_json::json!({ "drover-app.service": null });
    let facts_path = d.join("facts.json");
    std::fs::write(&facts_path, facts.to_string()).unwrap();
    let out = d.join("plan.json");
    plan_out(&pb, &inv, &facts_path, &out, &[]);
    (dir, pb, inv, out)
}

#[test]
fn a_saved_plan_covers_unit_templates_and_ssh_config() {
    let (dir, _, _, out) = saved_with_inputs();
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let paths: Vec<&str> = plan["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.ends_with("app.j2")), "{paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("ssh_config")), "{paths:?}");
    assert!(
        paths.contains(&"web-1:drover-app.service (rendered)"),
        "{paths:?}"
    );
    drop(dir);

    for edited in ["app.j2", "ssh_config"] {
        let (dir, pb, inv, out) = saved_with_inputs();
        let f = dir.path().join(edited);
        let mut text = std::fs::read_to_string(&f).unwrap();
        text.push_str("# edited after review\n");
        std::fs::write(&f, text).unwrap();
        let (code, v) = apply(&pb, &inv, &out, &[]);
        assert_eq!(code, 3, "{edited}: {v}");
        assert_eq!(v["code"], 403, "{v}");
        let details = v["details"].as_str().unwrap();
        assert!(
            details.contains(edited) && details.contains("changed since the plan was made"),
            "{details}"
        );
    }
}

const SECRET: &str = "s3cr3t-2f9a41c7";

/// A saved plan of a playbook that renders a secret into a unit file and
/// a `wait.http` URL, over facts where web-1 already holds the file with
/// that secret: (dir, playbook, inventory, plan, what plan printed).
fn saved_with_secret() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("app.j2"),
        "[Service]\nEnvironment=API_TOKEN={{ vars.api_token }}\nExecStart=/bin/true\n",
    )
    .unwrap();
    let inv = d.join("inv.yml");
    std::fs::copy(root().join("examples/inventory.yml"), &inv).unwrap();
    let pb = d.join("pb.yml");
    std::fs::write(
        &pb,
        format!(
            "name: app\nvars: {{ api_token: {SECRET} }}\nsecret_vars: [api_token]\nsteps:\n  - id: app\n    target: [web-1, web-2]\n    unit: {{ name: drover-app, template: app.j2 }}\n  - id: web\n    target: web-1\n    service: {{ name: demo-web, state: restarted }}\n    wait: {{ http: \"http://web-1:8080/ready?token={{{{ vars.api_token }}}}\" }}\n"
        ),
    )
    .unwrap();
    let mut facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("examples/facts.json")).unwrap())
            .unwrap();
    // web-1 already runs an older file holding the secret; web-2 has none.
    facts["hosts"]["web-1"]["unit_files"] = serde_json::json!({
        "drover-app.service": format!("[Service]\nEnvironment=API_TOKEN={SECRET}\n")
    });
    facts["hosts"]["web-2"]["unit_files"] = serde_json::json!({ "drover-app.service": null });
    let facts_path = d.join("facts.json");
    std::fs::write(&facts_path, facts.to_string()).unwrap();
    let out = d.join("plan.json");
    let o = plan_out(&pb, &inv, &facts_path, &out, &["--format", "markdown"]);
    let printed = String::from_utf8(o.stdout).unwrap() + &String::from_utf8(o.stderr).unwrap();
    (dir, pb, inv, out, printed)
}

#[test]
fn a_saved_plan_never_holds_a_secret_value() {
    let (_d, pb, inv, out, printed) = saved_with_secret();
    let saved = std::fs::read_to_string(&out).unwrap();
    let marker = drover::model::secret::marker("api_token", SECRET);
    assert!(!saved.contains(SECRET), "{saved}");
    assert!(!printed.contains(SECRET), "{printed}");
    // The marker stands in the unit file lines and in the facts the plan
    // recorded of web-1's current file.
    let plan: serde_json::Value = serde_json::from_str(&saved).unwrap();
    let web1 = &plan["hosts"][0];
    assert_eq!(web1["hostname"], "web-1");
    let app = web1["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "drover-app.service")
        .unwrap();
    let token_line = format!("    | Environment=API_TOKEN={marker}");
    for side in ["before_extra", "after_extra"] {
        assert!(
            app[side]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l.as_str() == Some(&token_line)),
            "{side}: {app}"
        );
    }
    assert_eq!(
        plan["facts"]["hosts"]["web-1"]["unit_files"]["drover-app.service"],
        format!("[Service]\nEnvironment=API_TOKEN={marker}\n")
    );
    assert!(printed.contains(&marker), "{printed}");

    // A changed secret changes the playbook's digest: apply --plan refuses
    // before connecting, without quoting either value.
    let text = std::fs::read_to_string(&pb)
        .unwrap()
        .replace(SECRET, "s3cr3t-rotated-0001");
    std::fs::write(&pb, text).unwrap();
    let (code, v) = apply(&pb, &inv, &out, &[]);
    assert_eq!((code, v["code"].as_u64()), (3, Some(403)), "{v}");
    let details = v["details"].as_str().unwrap();
    assert!(
        details.contains("playbook") && details.contains("changed since the plan"),
        "{details}"
    );
    assert!(
        !details.contains(SECRET) && !details.contains("rotated"),
        "{details}"
    );
}
