//! Playbook parameters without a lab: `--param` and `--params-file` on
//! check, plan and apply (typed values, errors with their position, a
//! template in a value kept as text, secrets in no output, saved plans
//! refusing changed values), and `drover serve`'s runbooks taking them
//! (`GET /runbook`, `POST /runbook/{name}`, the status page's form).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::server;
use reqwest::Method;
use server::{assert_error, call, client, Keys};

/// A secret parameter's value: no output may hold it.
const TOKEN: &str = "tok-8d1e77c2-never-shown";

/// A runbook declaring one parameter of each type, using them where a
/// plan shows them: targets, unit names, a maintenance reason.
const DRILL: &str = r#"name: params drill
params:
  unit: { description: the unit to restart, type: unit, default: demo-web }
  hosts: { description: which hosts, type: selector, default: "role:web" }
  batch: { description: hosts at once, type: integer, default: 1 }
  force: { description: restart even if healthy, type: boolean, default: false }
  pause: { description: between batches, type: duration, default: 30s }
  mode: { description: how, type: enum, values: [restart, reload], default: restart }
  note: { description: why, pattern: "[^;]+" }
  token: { description: the API token, secret: true }
steps:
  - id: roll
    target: "{{ params.hosts }}"
    service: { name: "{{ params.unit }}", state: restarted }
  - id: mark
    target: "{{ params.hosts }}"
    maintenance: { enable: true, reason: "{{ params.note }} ({{ params.mode }} x{{ params.batch }}) key {{ params.token }}" }
"#;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `drover ARGS` in the repository; (exit code, stdout, stderr).
fn drover(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The drill in `dir`, with a params file holding the secret; an
/// inventory of the example's web hosts whose buses do not exist (a live
/// read fails at once).
fn drill(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let pb = dir.join("drill.yml");
    std::fs::write(&pb, DRILL).unwrap();
    let secrets = dir.join("secrets.yml");
    std::fs::write(&secrets, format!("token: {TOKEN}\n")).unwrap();
    let inv = dir.join("inv.yml");
    std::fs::write(
        &inv,
        "defaults: { transport: local, bus: \"unix:path=/nonexistent/drover-test-bus\" }\nhosts:\n  web-1: { labels: { role: web } }\n  web-2: { labels: { role: web } }\n  db-1: { labels: { role: db } }\n",
    )
    .unwrap();
    (pb, inv, secrets)
}

fn plan(pb: &Path, inv: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "plan",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--facts",
        "examples/facts.json",
    ];
    args.extend_from_slice(extra);
    drover(&args)
}

#[test]
fn typed_params_reach_the_plan_as_data_and_secrets_reach_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (pb, inv, secrets) = drill(dir.path());
    let s = secrets.to_str().unwrap();
    let given = [
        "--params-file",
        s,
        "--param",
        "note={{ 7*7 }} {% raw %}",
        "--param",
        "hosts=web-2",
        "--param",
        "mode=reload",
        "--param",
        "batch=3",
    ];
    let mut outputs = Vec::new();
    for format in ["text", "markdown", "json"] {
        let mut args = given.to_vec();
        args.extend(["--format", format]);
        let (code, out, err) = plan(&pb, &inv, &args);
        assert_eq!(code, 0, "{format}: {out}\n{err}");
        // The value is rendered as itself, in the reason the plan shows.
        assert!(
            out.contains("{{ 7*7 }} {% raw %} (reload x3) key <secret params.token>"),
            "{format}: {out}"
        );
        assert!(!out.contains("web-1"), "{format}: the selector: {out}");
        outputs.push((format, out, err));
    }
    let json: serde_json::Value = serde_json::from_str(&outputs[2].1).unwrap();
    let params = &json["params"];
    assert_eq!(params["values"]["note"], "{{ 7*7 }} {% raw %}", "{params}");
    assert_eq!(params["values"]["batch"], 3, "{params}");
    assert_eq!(params["values"]["unit"], "demo-web.service", "{params}");
    assert_eq!(params["secret"], serde_json::json!(["token"]), "{params}");
    assert!(params["values"].get("token").is_none(), "{params}");
    assert_eq!(params["digest"].as_str().unwrap().len(), 64, "{params}");
    assert!(
        outputs[0].1.contains("params: batch=3 force=false hosts=web-2 mode=reload note={{ 7*7 }} {% raw %} pause=30s token=<secret params.token> unit=demo-web.service"),
        "{}",
        outputs[0].1
    );
    // A saved plan records the values, never the secret.
    let out = dir.path().join("plan.json");
    let mut args = given.to_vec();
    args.extend(["--out", out.to_str().unwrap()]);
    assert_eq!(plan(&pb, &inv, &args).0, 0);
    let saved = std::fs::read_to_string(&out).unwrap();
    outputs.push(("saved plan", saved, String::new()));
    for (what, out, err) in &outputs {
        assert!(!out.contains(TOKEN), "{what} shows the secret: {out}");
        assert!(!err.contains(TOKEN), "{what} shows the secret: {err}");
    }
}

#[test]
fn bad_params_are_refused_where_they_were_given() {
    let dir = tempfile::tempdir().unwrap();
    let (pb, inv, secrets) = drill(dir.path());
    let (pb_s, inv_s) = (pb.to_str().unwrap(), inv.to_str().unwrap());
    let s = secrets.to_str().unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec!["check", pb_s, "-i", inv_s, "--format", "json"];
        args.extend_from_slice(extra);
        let (code, out, err) = drover(&args);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!("{e}: {out}\n{err}");
        });
        (code, v)
    };
    // A value of the wrong type in a params file: its line and field.
    let file = dir.path().join("values.yml");
    std::fs::write(&file, format!("note: drill\nbatch: many\ntoken: {TOKEN}\n")).unwrap();
    let (code, v) = check(&["--params-file", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    let d = &v["diagnostics"][0];
    assert_eq!(d["file"], file.to_str().unwrap(), "{v}");
    assert_eq!(
        (d["line"].as_u64(), d["field"].as_str()),
        (Some(2), Some("batch")),
        "{v}"
    );
    assert!(
        d["message"].as_str().unwrap().contains("is `integer`"),
        "{v}"
    );
    // An unknown name: the nearest declared one.
    let (code, v) = check(&[
        "--params-file",
        s,
        "--param",
        "note=x",
        "--param",
        "hots=web-1",
    ]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["diagnostics"][0]["suggestion"], "hosts", "{v}");
    // A value outside the enum, a pattern, a selector, a unit name; the
    // flag wins over the file.
    let base = dir.path().join("base.yml");
    std::fs::write(&base, format!("note: x\ntoken: {TOKEN}\n")).unwrap();
    for (bad, want) in [
        ("mode=restrat", "did you mean `restart`?"),
        ("note=a;b", "must match `[^;]+`"),
        ("hosts=role:", "is `selector`"),
        ("unit=no/slash", "is `unit`"),
        ("pause=7 weeks", "longer than 7 days"),
        ("force=yes", "`true` or `false`"),
    ] {
        let (code, v) = check(&["--params-file", base.to_str().unwrap(), "--param", bad]);
        assert_eq!(code, 1, "{bad}: {v}");
        let details = v["details"].as_str().unwrap();
        assert!(details.contains(want), "{bad}: {details}");
    }
    // A missing required one: where it is declared. `check` fills it with
    // a sample of its type instead, so a runbook checks without its values.
    let (code, out, err) = plan(&pb, &inv, &["--params-file", s, "--format", "json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let details = v["details"].as_str().unwrap();
    assert!(
        details.starts_with("note: missing required parameter `note` (why)"),
        "{details}"
    );
    assert!(
        details.contains(&format!("at {pb_s} line 9 column 3")),
        "{details}"
    );
    let (code, v) = check(&[]);
    assert_eq!((code, &v["ok"]), (0, &serde_json::json!(true)), "{v}");
    // The text form shows the offending line of the file under the error.
    let (code, _, err) = drover(&[
        "plan",
        pb_s,
        "-i",
        inv_s,
        "--facts",
        "examples/facts.json",
        "--params-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("batch: many"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    // A template naming a parameter the playbook does not declare.
    let typo = dir.path().join("typo.yml");
    std::fs::write(
        &typo,
        DRILL.replace("reason: \"{{ params.note }}", "reason: \"{{ params.nte }}"),
    )
    .unwrap();
    let (code, _, err) = drover(&["check", typo.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`params.nte` is not a declared parameter")
            && err.contains("did you mean `params.note`?"),
        "{err}"
    );
}

#[test]
fn a_saved_plan_refuses_changed_params() {
    let dir = tempfile::tempdir().unwrap();
    let (pb, inv, secrets) = drill(dir.path());
    let (pb_s, inv_s, s) = (
        pb.to_str().unwrap(),
        inv.to_str().unwrap(),
        secrets.to_str().unwrap(),
    );
    let out = dir.path().join("plan.json");
    let (code, _, err) = plan(
        &pb,
        &inv,
        &[
            "--params-file",
            s,
            "--param",
            "note=reviewed",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let apply = |extra: &[&str]| {
        let mut args = vec![
            "apply",
            pb_s,
            "-i",
            inv_s,
            "--plan",
            out.to_str().unwrap(),
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = drover(&args);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
        assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "{out}\n{err}");
        (code, v)
    };
    // Another value than the one reviewed: refused like a changed playbook.
    let (code, v) = apply(&["--params-file", s, "--param", "note=not reviewed"]);
    assert_eq!((code, v["code"].as_u64()), (3, Some(403)), "{v}");
    let details = v["details"].as_str().unwrap();
    assert!(
        details.contains("the params changed since the plan was made"),
        "{details}"
    );
    assert!(
        details.contains("`note` planned \"reviewed\", now \"not reviewed\""),
        "{details}"
    );
    // The secret is not recorded: it must be given again.
    let (code, v) = apply(&[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["details"]
            .as_str()
            .unwrap()
            .contains("missing required parameter `token`"),
        "{v}"
    );
    // The plan's own values (given again or not) pass the params check and
    // reach the drift check, which finds the hosts unreachable.
    for extra in [
        &["--params-file", s][..],
        &["--params-file", s, "--param", "note=reviewed"][..],
    ] {
        let (code, v) = apply(extra);
        assert_eq!((code, v["code"].as_u64()), (3, Some(403)), "{v}");
        let details = v["details"].as_str().unwrap();
        assert!(details.contains("drifted"), "{details}");
    }
}

/// A server whose `books/` hold the drill next to `restart-web`.
fn serve_drill(dir: &Path, extra: &[&str]) -> (server::Server, Keys) {
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(books.join("drill.yml"), DRILL).unwrap();
    crate::serve::start(dir, extra)
}

/// `POST /runbook/drill?dry_run=true` with `body` as the given key.
async fn dry_run(s: &server::Server, key: &str, body: serde_json::Value) -> (u16, String) {
    let resp = client()
        .post(s.url("/runbook/drill?dry_run=true"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn runbooks_list_their_params_and_take_them_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let (s, keys) = serve_drill(dir.path(), &["--audit", audit.to_str().unwrap()]);
    let (st, _, b) = call(Method::GET, &s.url("/runbook"), Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
    let drill = b
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "drill")
        .unwrap();
    let p = |name: &str| {
        drill["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(p("batch")["type"], "integer");
    assert_eq!(p("batch")["default"], 1);
    assert_eq!(p("batch")["required"], false);
    assert_eq!(
        p("mode")["values"],
        serde_json::json!(["restart", "reload"])
    );
    assert_eq!(p("note")["required"], true);
    assert_eq!(p("note")["pattern"], "[^;]+");
    assert_eq!(p("note")["description"], "why");
    assert_eq!(
        (
            p("token")["secret"].as_bool(),
            p("token")["required"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(drill["params"].as_array().unwrap().len(), 8);
    // The other runbook takes none.
    let other = b
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "restart-web")
        .unwrap();
    assert_eq!(other["params"], serde_json::json!([]));

    // A template in a value stays its text; the secret is hidden.
    let params = serde_json::json!({"note": "{{ 7*7 }}", "token": TOKEN, "hosts": "a"});
    let (st, text) = dry_run(&s, &keys.read, serde_json::json!({"params": params})).await;
    assert_eq!(st, 200, "{text}");
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plan["params"]["values"]["note"], "{{ 7*7 }}", "{plan}");
    assert!(!text.contains(TOKEN), "{text}");
    assert_eq!(plan["steps"][0]["target"][0], "a", "{plan}");

    // Bad values: 400 naming the parameter, before any host is read.
    for (bad, field, want) in [
        (
            serde_json::json!({"note": "x", "token": TOKEN, "batch": "2"}),
            "params.batch",
            "is `integer`, not text",
        ),
        (
            serde_json::json!({"note": "x", "token": TOKEN, "mdoe": "reload"}),
            "params.mdoe",
            "did you mean `mode`?",
        ),
        (
            serde_json::json!({"note": "x", "token": TOKEN, "mode": "stop"}),
            "params.mode",
            "is one of",
        ),
        (
            serde_json::json!({"token": TOKEN}),
            "note",
            "missing required parameter `note`",
        ),
        (
            serde_json::json!({"note": "x", "token": "x7q"}),
            "params.token",
            "shorter than 4 characters",
        ),
    ] {
        let (st, text) = dry_run(&s, &keys.read, serde_json::json!({"params": bad})).await;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(st, 400, "{bad}: {v}");
        assert_error(st, &v);
        let details = v["details"].as_str().unwrap();
        assert!(
            details.starts_with(&format!("{field}: ")) && details.contains(want),
            "{bad}: {details}"
        );
        assert!(!text.contains(TOKEN) && !text.contains("x7q"), "{text}");
    }
    // The audit log names routes, never values.
    let audit = std::fs::read_to_string(&audit).unwrap();
    assert!(audit.contains("/runbook/drill"), "{audit}");
    assert!(!audit.contains(TOKEN) && !audit.contains("7*7"), "{audit}");
}

#[tokio::test]
async fn a_selector_param_outside_a_scoped_keys_targets_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The limited key may act on role:web (host `a`) only.
    let (s, keys) = serve_drill(dir.path(), &[]);
    // demo-worker: `b` protects demo-web.
    let with = |hosts: &str| serde_json::json!({"params": {"note": "x", "token": TOKEN, "hosts": hosts, "unit": "demo-worker"}});
    for outside in ["b", "role:db", "_all", "nosuchhost"] {
        let (st, text) = dry_run(&s, &keys.limited, with(outside)).await;
        assert_eq!(st, 403, "{outside}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_error(st, &v);
        assert!(
            v["details"]
                .as_str()
                .unwrap()
                .contains("outside its targets"),
            "{v}"
        );
    }
    let (st, text) = dry_run(&s, &keys.limited, with("a")).await;
    assert_eq!(st, 200, "{text}");
    let (st, text) = dry_run(&s, &keys.limited, with("role:web")).await;
    assert_eq!(st, 200, "{text}");
    // A key without targets may name any host.
    let (st, text) = dry_run(&s, &keys.read, with("b")).await;
    assert_eq!(st, 200, "{text}");
}

#[tokio::test]
async fn the_status_page_offers_a_runbooks_params_as_typed_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = serve_drill(dir.path(), &[]);
    let cookie = server::login(&client(), &s.url("/login"), &keys.read).await;
    let page = client()
        .get(s.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "<fieldset class=\"params\" data-runbook=\"drill\">",
        "<input type=\"number\" step=\"1\" name=\"batch\" data-param=\"batch\" data-type=\"integer\" value=\"1\">",
        "<input type=\"checkbox\" name=\"force\" data-param=\"force\" data-type=\"boolean\">",
        "<option selected>restart</option><option>reload</option>",
        "data-type=\"string\" pattern=\"[^;]+\" required>",
        "<input type=\"password\" autocomplete=\"off\" name=\"token\" data-param=\"token\" data-type=\"string\" required>",
    ] {
        assert!(page.contains(want), "{want} not in {page}");
    }
}
