//! Playbook parameters on real hosts: a value that looks like a template
//! is written to the host and shown by the plan as sent; a secret
//! parameter quoted by a failing gate is in no output of `plan`, `apply`
//! (report, journal, stdout, stderr) or `drover serve` (answers, job
//! files, audit log). Needs the lab (tests/lab).

use crate::common;
use crate::server;

use common::{lab, run};
use reqwest::Method;
use server::{call, client, Keys, Server};

const TOKEN: &str = "tok-31c9a0e7-param-never-shown";

#[test]
fn a_template_looking_value_reaches_the_host_as_sent() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let h = lab.host(2).to_string();
    let unit = "drover-params.service";
    let path = format!("/etc/systemd/system/{unit}");
    let clean = format!("rm -f {path}; systemctl daemon-reload");
    lab.ssh(&h, &clean);
    let _undo = lab.undo_on_drop(&h, &clean);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("unit.j2"),
        "[Unit]\nDescription={{ params.note }}\n\n[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    let pb = dir.path().join("note.yml");
    std::fs::write(
        &pb,
        "name: note\nparams:\n  host: { description: where, type: selector }\n  note: { description: what }\nsteps:\n  - id: reg\n    target: \"{{ params.host }}\"\n    unit: { name: drover-params, template: unit.j2 }\n",
    )
    .unwrap();
    let sent = "{{ 7*7 }} {% for i in range(3) %}$(reboot){% endfor %}";
    let note = format!("note={sent}");
    let host = format!("host={h}");
    let args = |cmd: &str| {
        vec![
            cmd.to_string(),
            pb.display().to_string(),
            "-i".into(),
            lab.inventory.display().to_string(),
            "--param".into(),
            note.clone(),
            "--param".into(),
            host.clone(),
        ]
    };
    let (code, plan, err) = run(lab.drover().args(args("plan")));
    assert_eq!(code, 0, "{err}");
    assert!(
        plan.contains(&format!("+    | Description={sent}")),
        "{plan}"
    );
    let (code, out, err) = run(lab.drover().args(args("apply")));
    assert_eq!(code, 0, "{out}\n{err}");
    let show = lab.ssh(&h, &format!("systemctl show -p Description {unit}"));
    assert_eq!(show.trim(), format!("Description={sent}"));
    // Only the named host got the file.
    let other = lab.host(0);
    assert_eq!(
        lab.ssh_output(other, &format!("test -e {path}"))
            .status
            .code(),
        Some(1)
    );
}

/// A playbook whose gate URL holds the secret parameter: the gate fails
/// (nothing listens on port 1), and every text quoting the URL must show
/// the marker instead.
fn secret_gate(host: &str) -> String {
    format!(
        "name: secret param\nparams:\n  token: {{ description: the token, secret: true }}\nsteps:\n  - id: idle\n    target: {host}\n    service: {{ name: demo-idle, state: started }}\n    wait: {{ http: \"http://127.0.0.1:1/{{{{ params.token }}}}\", timeout: 2s }}\n"
    )
}

#[test]
fn a_secret_param_is_in_no_output_of_plan_or_apply() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let h = lab.host(0).to_string();
    let _idle = lab.undo_on_drop(&h, "systemctl stop demo-idle");
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("secret.yml");
    std::fs::write(&pb, secret_gate(&h)).unwrap();
    let values = dir.path().join("values.yml");
    std::fs::write(&values, format!("token: {TOKEN}\n")).unwrap();
    let report = dir.path().join("report.json");
    let mut outputs = Vec::new();
    for format in ["text", "markdown", "json"] {
        let (code, out, err) = run(lab
            .drover()
            .args(["plan", "--format", format, "-i"])
            .arg(&lab.inventory)
            .arg(&pb)
            .arg("--params-file")
            .arg(&values));
        assert_eq!(code, 0, "{format}: {err}");
        outputs.push((format!("plan {format}"), out));
        outputs.push((format!("plan {format} stderr"), err));
    }
    let (code, out, err) = run(lab
        .drover()
        .args(["apply", "--format", "json", "-i"])
        .arg(&lab.inventory)
        .arg(&pb)
        .arg("--params-file")
        .arg(&values)
        .arg("--report")
        .arg(&report));
    assert_eq!(code, 2, "the gate fails: {out}\n{err}");
    let journal = std::fs::read_to_string(dir.path().join("report.json.journal")).unwrap();
    let saved = std::fs::read_to_string(&report).unwrap();
    assert!(saved.contains("<secret params.token>"), "{saved}");
    assert!(journal.contains("<secret params.token>"), "{journal}");
    outputs.extend([
        ("apply stdout".to_string(), out),
        ("apply stderr".to_string(), err),
        ("report".to_string(), saved),
        ("journal".to_string(), journal),
    ]);
    for (what, text) in &outputs {
        assert!(!text.contains(TOKEN), "{what} shows the secret: {text}");
    }
}

#[tokio::test]
async fn a_secret_param_is_in_no_answer_of_serve() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let h = lab.host(0).to_string();
    let _idle = lab.undo_on_drop(&h, "systemctl stop demo-idle");
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(1));
    let books = dir.path().join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(books.join("secret.yml"), secret_gate(&h)).unwrap();
    let (jobs, audit) = (dir.path().join("jobs"), dir.path().join("audit.log"));
    let s = Server::start(
        &[
            "-i",
            lab.inventory.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--playbooks",
            books.to_str().unwrap(),
            "--jobs-dir",
            jobs.to_str().unwrap(),
            "--audit",
            audit.to_str().unwrap(),
        ],
        &dir.path().join("stderr"),
    );
    let body = serde_json::json!({ "params": { "token": TOKEN } });
    let mut answers = Vec::new();
    for query in ["?dry_run=true", "?wait=60s"] {
        let resp = client()
            .post(s.url(&format!("/runbook/secret{query}")))
            .bearer_auth(&keys.operate)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{query}");
        answers.push((query.to_string(), resp.text().await.unwrap()));
    }
    let report: serde_json::Value = serde_json::from_str(&answers[1].1).unwrap();
    assert_eq!(report["results"][0]["status"], "failed", "{report}");
    assert!(answers[1].1.contains("<secret params.token>"), "{report}");
    let id = report["job_id"].as_str().unwrap();
    for path in [format!("/job/{id}"), "/job".to_string()] {
        let (st, _, b) = call(Method::GET, &s.url(&path), Some(&keys.read)).await;
        assert_eq!(st, 200, "{b}");
        answers.push((path, b.to_string()));
    }
    let events = client()
        .get(s.url(&format!("/job/{id}/events")))
        .bearer_auth(&keys.read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    answers.push(("events".into(), events));
    // Every file the server stored, in subfolders too (the job index).
    let mut dirs = vec![jobs.clone()];
    while let Some(d) = dirs.pop() {
        for f in std::fs::read_dir(&d).unwrap() {
            let p = f.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            answers.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    answers.push(("audit".into(), std::fs::read_to_string(&audit).unwrap()));
    answers.push(("server log".into(), s.log()));
    for (what, text) in &answers {
        assert!(!text.contains(TOKEN), "{what} shows the secret: {text}");
    }
}
