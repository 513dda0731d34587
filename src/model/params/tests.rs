//! Binding values to declarations: types, errors, digests, samples.

use super::*;

fn declared(yaml_params: &str) -> Result<Declared> {
    let text = format!("params:\n{yaml_params}");
    #[derive(Deserialize)]
    struct F {
        params: BTreeMap<String, ParamSpec>,
    }
    let f: F = yaml::parse(&text, Path::new("pb.yml"), "playbook").unwrap();
    Declared::new(&f.params, &text, Path::new("pb.yml"))
}

fn flags(pairs: &[&str]) -> ParamValues {
    let mut v = ParamValues::none();
    for p in pairs {
        v.flag(p).unwrap();
    }
    v
}

const ALL: &str = "  unit: { description: u, type: unit }\n  n: { description: n, type: integer, default: 3 }\n  on: { description: b, type: boolean, default: false }\n  wait: { description: w, type: duration, default: 30s }\n  hosts: { description: h, type: selector, default: _all }\n  mode: { description: m, type: enum, values: [fast, safe], default: safe }\n  ticket: { description: t, pattern: \"[A-Z]+-[0-9]+\", default: OPS-1 }\n  token: { description: s, secret: true }\n";

#[test]
fn typed_values_bind_in_their_canonical_form() {
    let d = declared(ALL).unwrap();
    let p = d
        .bind(&flags(&[
            "unit=demo-web",
            "n=7",
            "on=true",
            "wait=1m",
            "hosts=role:web,!web-3",
            "mode=fast",
            "ticket=OPS-42",
            "token=s3cr3t-value",
        ]))
        .unwrap();
    let v = p.values();
    assert_eq!(v["unit"], "demo-web.service");
    assert_eq!(v["n"], 7);
    assert_eq!(v["on"], true);
    assert_eq!(v["wait"], "1m");
    assert_eq!(v["hosts"], "role:web,!web-3");
    assert_eq!(v["mode"], "fast");
    assert_eq!(v["token"], "s3cr3t-value");
    // Defaults fill what is not given.
    let p = d.bind(&flags(&["unit=x", "token=abcdefgh"])).unwrap();
    assert_eq!(p.values()["n"], 3);
    assert_eq!(p.values()["mode"], "safe");
}

#[test]
fn bad_values_name_the_parameter_and_suggest() {
    let d = declared(ALL).unwrap();
    let err = |given: &[&str]| d.bind(&flags(given)).map(|_| ()).unwrap_err().details();
    let base = ["unit=x", "token=abcdefgh"];
    let with = |extra: &str| {
        let mut v = base.to_vec();
        v.push(extra);
        err(&v)
    };
    let e = with("n=seven");
    assert!(e.starts_with("n: `n` is `integer`"), "{e}");
    let e = with("on=yes");
    assert!(e.contains("`true` or `false`"), "{e}");
    let e = with("wait=soon");
    assert!(e.contains("is `duration`"), "{e}");
    let e = with("hosts=!_all");
    assert!(e.contains("is `selector`"), "{e}");
    let e = with("mode=fats");
    assert!(e.contains("did you mean `fast`?"), "{e}");
    let e = with("ticket=ops 1");
    assert!(e.contains("must match"), "{e}");
    let e = with("unti=x");
    assert!(e.contains("unknown parameter `unti`"), "{e}");
    assert!(e.contains("did you mean `unit`?"), "{e}");
    let e = err(&["unit=x"]);
    assert!(e.contains("missing required parameter `token`"), "{e}");
    assert!(e.contains("pb.yml line 9"), "{e}");
    let e = with("ticket=A-1\nExecStartPre=/bin/evil");
    assert!(e.contains("control character"), "{e}");
    // A secret's value is never quoted, even when it is refused.
    let e = err(&["unit=x", "token=abc"]);
    assert!(
        e.contains("cannot be redacted reliably") && !e.contains("abc`"),
        "{e}"
    );
    let d = declared("  token: { description: s, secret: true, pattern: \"x+\" }\n").unwrap();
    let e = d.bind(&flags(&["token=yyyyyyyy"])).unwrap_err().details();
    assert!(e.contains("must match `x+`") && !e.contains("yyyy"), "{e}");
}

#[test]
fn declarations_are_checked_where_they_are_written() {
    for (bad, want) in [
        (
            "  n: { description: d, type: integer, default: many }\n",
            "the default",
        ),
        ("  m: { description: d, type: enum }\n", "needs `values`"),
        (
            "  m: { description: d, values: [a] }\n",
            "belongs to `type: enum`",
        ),
        (
            "  m: { description: d, pattern: \"(\" }\n",
            "not a regular expression",
        ),
        (
            "  s: { description: d, secret: true, default: abcdefgh }\n",
            "takes no default",
        ),
        (
            "  s: { description: d, type: integer, secret: true }\n",
            "is `type: string`",
        ),
        ("  \"a-b\": { description: d }\n", "not a parameter name"),
    ] {
        let e = declared(bad).unwrap_err().details();
        assert!(e.contains(want), "{bad}: {e}");
        assert!(e.contains("pb.yml line 2"), "{bad}: {e}");
    }
}

#[test]
fn digests_and_records_leave_secrets_out() {
    let d =
        declared("  a: { description: a, default: x }\n  s: { description: s, secret: true }\n")
            .unwrap();
    let one = d.bind(&flags(&["s=first-secret"])).unwrap();
    let two = d.bind(&flags(&["s=other-secret"])).unwrap();
    assert_eq!(one.digest, two.digest, "a secret changes no digest");
    assert_eq!(one.record(), two.record());
    assert_eq!(
        serde_json::Value::Object(one.record()),
        serde_json::json!({"a": "x"})
    );
    // The digest is of the canonical JSON of the non-secret values.
    assert_eq!(one.digest, crate::model::digest(br#"{"a":"x"}"#));
    let three = d.bind(&flags(&["a=y", "s=first-secret"])).unwrap();
    assert_ne!(one.digest, three.digest);
    assert!(!format!("{one:?}").contains("first-secret"));
    assert_eq!(Params::default().digest, crate::model::digest(b"{}"));
    assert_eq!(one.shown(), ["a=x", "s=<secret params.s>"]);
}

#[test]
fn files_point_at_the_line_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.yml");
    std::fs::write(&f, "n: 4\nmode: fats\n").unwrap();
    let d = declared("  n: { description: n, type: integer }\n  mode: { description: m, type: enum, values: [fast, safe] }\n").unwrap();
    let e = d
        .bind(&ParamValues::from_file(&f).unwrap())
        .unwrap_err()
        .details();
    assert!(e.starts_with("mode: `mode` is one of"), "{e}");
    assert!(e.contains("p.yml line 2"), "{e}");
    let v = ParamValues::from_file(&f)
        .unwrap()
        .overlaid(flags(&["mode=fast"]));
    let p = d.bind(&v).unwrap();
    assert_eq!(p.values()["n"], 4);
    // A number in a file is a number; text is not an integer there.
    std::fs::write(&f, "n: \"4\"\nmode: fast\n").unwrap();
    let e = d
        .bind(&ParamValues::from_file(&f).unwrap())
        .unwrap_err()
        .details();
    assert!(e.contains("not text"), "{e}");
    let mut v = flags(&["n=1"]);
    assert!(v.flag("n=2").is_err());
    assert!(v.flag("novalue").is_err());
}

#[test]
fn samples_fill_required_parameters_for_checking() {
    let d = declared(ALL).unwrap();
    let p = d.bind(&ParamValues::samples()).unwrap();
    assert_eq!(p.values()["unit"], "sample.service");
    assert_eq!(p.values()["n"], 3, "defaults still win");
}
