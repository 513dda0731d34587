//! osapi's `/api` routes against the lab, with a real HTTP client: every
//! route, every answer checked field by field against osapi's spec
//! (osapi-io/osapi `internal/controller/api/{node/service,job,common}/gen/
//! api.yaml`), whose field lists, types and enums are written below as
//! drover's own expectations, and every status code the spec documents.
//! osapi's own Go client could not be run here (see docs/src/guide/osapi.md).

mod jobs;
mod service;
mod unitfile;

use crate::common;
use crate::server;

use std::path::Path;

use common::{lab, Lab};
use reqwest::Method;
use serde_json::Value;
use server::{assert_error, client, Keys, Server};

/// A JSON type of osapi's spec.
#[derive(Clone, Copy, Debug)]
enum T {
    Str,
    /// A string in `format: uuid`.
    Uuid,
    Bool,
    Int,
    Arr,
    Obj,
    /// `nullable: true` boolean.
    NullBool,
    /// Anything (`data`, `result`).
    Any,
    /// A string, one of these.
    Enum(&'static [&'static str]),
}

/// (field, type, required) of one schema.
type Fields = &'static [(&'static str, T, bool)];

const ENTRY_STATUS: &[&str] = &["ok", "failed", "skipped"];
const ERROR_RESPONSE: Fields = &[
    ("error", T::Str, false),
    ("details", T::Str, false),
    ("code", T::Int, false),
];
const SERVICE_INFO: Fields = &[
    ("name", T::Str, false),
    ("status", T::Str, false),
    ("enabled", T::Bool, false),
    ("description", T::Str, false),
    ("pid", T::Int, false),
];
const SERVICE_LIST_ENTRY: Fields = &[
    ("hostname", T::Str, true),
    ("status", T::Enum(ENTRY_STATUS), true),
    ("services", T::Arr, false),
    ("error", T::Str, false),
];
const SERVICE_GET_ENTRY: Fields = &[
    ("hostname", T::Str, true),
    ("status", T::Enum(ENTRY_STATUS), true),
    ("service", T::Obj, false),
    ("error", T::Str, false),
];
const SERVICE_MUTATION_ENTRY: Fields = &[
    ("hostname", T::Str, true),
    ("status", T::Enum(ENTRY_STATUS), true),
    ("name", T::Str, false),
    ("changed", T::Bool, false),
    ("error", T::Str, false),
];
/// ServiceListResponse, ServiceGetResponse and ServiceMutationResponse.
const SERVICE_RESPONSE: Fields = &[("job_id", T::Uuid, false), ("results", T::Arr, true)];
const LIST_JOBS_RESPONSE: Fields = &[
    ("total_items", T::Int, false),
    ("status_counts", T::Obj, false),
    ("items", T::Arr, false),
];
const JOB_DETAIL: Fields = &[
    ("id", T::Uuid, false),
    ("status", T::Str, false),
    ("created", T::Str, false),
    ("operation", T::Obj, false),
    ("result", T::Any, false),
    ("changed", T::NullBool, false),
    ("error", T::Str, false),
    ("hostname", T::Str, false),
    ("updated_at", T::Str, false),
    ("responses", T::Obj, false),
    ("agent_states", T::Obj, false),
    ("timeline", T::Arr, false),
];
const JOB_RESPONSE: Fields = &[
    ("status", T::Str, false),
    ("data", T::Any, false),
    ("changed", T::NullBool, false),
    ("error", T::Str, false),
    ("hostname", T::Str, false),
];
const CREATE_JOB_RESPONSE: Fields = &[
    ("job_id", T::Uuid, true),
    ("status", T::Str, true),
    ("revision", T::Int, false),
    ("timestamp", T::Str, false),
];
/// The job statuses osapi lists and counts.
const JOB_STATUSES: &[&str] = &[
    "submitted",
    "processing",
    "completed",
    "failed",
    "partial_failure",
];

/// Assert `v` is an object of exactly these fields (no other), each of its
/// type, the required ones present.
fn shape(v: &Value, fields: Fields, what: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
    for k in obj.keys() {
        assert!(
            fields.iter().any(|(f, _, _)| f == k),
            "{what}: `{k}` is not a field of osapi's schema: {v}"
        );
    }
    for (f, t, required) in fields {
        let Some(x) = obj.get(*f) else {
            assert!(!required, "{what}: required `{f}` is missing: {v}");
            continue;
        };
        let ok = match t {
            T::Str => x.is_string(),
            T::Uuid => x.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
            T::Bool => x.is_boolean(),
            T::Int => x.is_i64() || x.is_u64(),
            T::Arr => x.is_array(),
            T::Obj => x.is_object(),
            T::NullBool => x.is_boolean() || x.is_null(),
            T::Any => true,
            T::Enum(words) => x.as_str().is_some_and(|s| words.contains(&s)),
        };
        assert!(ok, "{what}: `{f}` is not {t:?}: {v}");
    }
}

/// A service response: its shape and each entry's (and each service's).
fn service_response(v: &Value, entry: Fields, what: &str) {
    shape(v, SERVICE_RESPONSE, what);
    for e in v["results"].as_array().unwrap() {
        shape(e, entry, what);
        for s in e["services"].as_array().into_iter().flatten() {
            shape(s, SERVICE_INFO, what);
        }
        if let Some(s) = e.get("service") {
            shape(s, SERVICE_INFO, what);
        }
    }
}

/// A job: its shape and each host's response.
fn job_detail(v: &Value, what: &str) {
    shape(v, JOB_DETAIL, what);
    for (host, r) in v["responses"].as_object().into_iter().flatten() {
        shape(r, JOB_RESPONSE, what);
        assert_eq!(r["hostname"], host.as_str(), "{what}: {v}");
    }
}

/// An error answer: osapi's ErrorResponse, as drover always sends it.
fn error(st: u16, v: &Value, what: &str) {
    shape(v, ERROR_RESPONSE, what);
    assert_error(st, v);
}

/// Send `body` with `key`; (status, JSON body).
async fn send(
    s: &Server,
    m: Method,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut r = client().request(m, s.url(path));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = r.send().await.expect("request");
    let st = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap_or_default();
    if !text.is_empty() {
        // osapi's generated client decodes only JSON content.
        assert!(
            ct.as_deref().is_some_and(|c| c.contains("json")),
            "{path}: {ct:?}"
        );
    }
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A server on the lab with runbooks and objects of `dir`.
fn serve(lab: &Lab, dir: &Path, keys: &Keys) -> Server {
    for d in ["books", "objects", "jobs"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let p = |d: &str| dir.join(d).to_str().unwrap().to_string();
    Server::start(
        &[
            "-i",
            lab.inventory.to_str().unwrap(),
            "--keys",
            keys.file.to_str().unwrap(),
            "--playbooks",
            &p("books"),
            "--objects",
            &p("objects"),
            "--jobs-dir",
            &p("jobs"),
        ],
        &dir.join("stderr"),
    )
}

/// `systemctl show -p Description,MainPID` of a unit.
fn described(lab: &Lab, host: &str, unit: &str) -> (String, String) {
    let out = lab.ssh(
        host,
        &format!("systemctl show -p Description -p MainPID {unit}"),
    );
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    (get("Description"), get("MainPID"))
}

/// The examples of the book's osapi page (`docs/src/guide/osapi.md`), as
/// written, on a server with `myapp.service` in its `--objects`.
#[tokio::test]
async fn the_book_osapi_examples_work_as_written() {
    let Some(lab) = lab() else { return };
    let _l = lab.lock();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::make(dir.path(), lab.host(1));
    std::fs::create_dir_all(dir.path().join("objects")).unwrap();
    std::fs::write(
        dir.path().join("objects/myapp.service"),
        "[Unit]\nDescription=the book's myapp\n[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    let s = serve(&lab, dir.path(), &keys);
    let lines = crate::markdown::lab_script("docs/src/guide/osapi.md");
    let stdout = crate::serve::run_page_examples(
        "docs/src/guide/osapi.md",
        &lines,
        &[
            ("DROVER_URL", &s.base),
            ("KEY", &keys.admin),
            ("HOST", lab.host(0)),
        ],
    )
    .await;
    assert!(stdout.contains("\"name\":\"myapp\""), "{stdout}");
    assert_eq!(
        lab.ssh_output(lab.host(0), "test -e /etc/systemd/system/myapp.service")
            .status
            .code(),
        Some(1),
        "the page's DELETE removed the file"
    );
    lab.restore_baseline();
}
