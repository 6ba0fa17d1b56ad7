//! Job bodies: every problem listed with its field, every input form
//! giving the same row, and hostile bodies refused.

use super::*;
use crate::error::ApiError;
use std::path::Path;

fn registry() -> Registry {
    Registry::parse(
        r#"
[[model]]
name = "credit-default"
version = "1"
path = "x.pt"
inputs = [{ name = "student", min = 0, max = 1 }, { name = "balance", min = 0 }, { name = "income" }]
outputs = [{ name = "p" }]
"#,
        Path::new("models.toml"),
        Path::new("."),
    )
    .unwrap()
}

fn details(body: &str) -> Vec<Detail> {
    match validate(body.as_bytes(), &registry(), None) {
        Err(ValidationError::Invalid(d)) => d,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn named_and_positional_inputs_agree() {
    let r = registry();
    let a = validate(
        br#"{"model":"credit-default","inputs":{"income":40000.5,"student":1,"balance":729.52}}"#,
        &r,
        None,
    )
    .unwrap();
    let b = validate(
        br#"{"model":"credit-default@1","inputs":[1,729.52,40000.5]}"#,
        &r,
        None,
    )
    .unwrap();
    assert_eq!(a.inputs, vec![1.0, 729.52, 40000.5]);
    assert_eq!(a.inputs, b.inputs);
    assert_eq!(a.priority, Priority::Interactive);
}

#[test]
fn every_problem_is_listed_with_its_field() {
    let d = details(r#"{"model":"credit-default","inputs":{"student":2,"balance":"x","extra":1}}"#);
    let fields: Vec<_> = d.iter().map(|d| d.field.clone().unwrap()).collect();
    assert_eq!(
        fields,
        vec![
            "inputs.student",
            "inputs.balance",
            "inputs.income",
            "inputs.extra"
        ]
    );
}

#[test]
fn wrong_count_names_the_schema() {
    let d = details(r#"{"model":"credit-default","inputs":[1,2]}"#);
    assert_eq!(d.len(), 1);
    assert!(
        d[0].message.contains("student, balance, income"),
        "{:?}",
        d[0]
    );
}

#[test]
fn non_finite_values_are_refused() {
    let d = details(r#"{"model":"credit-default","inputs":[0, 1e39, 1]}"#);
    assert_eq!(d[0].field.as_deref(), Some("inputs[1]"));
    for body in [
        r#"{"model":"credit-default","inputs":[0, NaN, 1]}"#,
        r#"{"model":"credit-default","inputs":[0, Infinity, 1]}"#,
        r#"{"model":"credit-default","inputs":[0, 1e400, 1]}"#,
    ] {
        assert!(matches!(
            validate(body.as_bytes(), &registry(), None),
            Err(ValidationError::Malformed(_))
        ));
    }
}

#[test]
fn hostile_bodies_are_refused() {
    let r = registry();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let long_key = format!(
        r#"{{"model":"credit-default","inputs":{{"{}":1}}}}"#,
        "k".repeat(100_000)
    );
    for body in [
        "".to_string(),
        "null".into(),
        "{".into(),
        "\u{0}\u{1}".into(),
        r#"{"model":"credit-default"}"#.into(),
        r#"{"model":"credit-default","inputs":[1,2,3],"surprise":1}"#.into(),
        r#"{"model":7,"inputs":[1,2,3]}"#.into(),
        deep,
    ] {
        let err = validate(body.as_bytes(), &r, None).unwrap_err();
        assert!(
            ApiError::from(err.clone()).status().is_client_error(),
            "{body:.40}: {err:?}"
        );
    }
    // A key past the string limit is refused before parsing (413).
    let err = validate(long_key.as_bytes(), &r, None).unwrap_err();
    assert!(matches!(err, ValidationError::LimitExceeded(_)), "{err:?}");
    // One within it is an unknown feature, named without echoing it all.
    let key = format!(
        r#"{{"model":"credit-default","inputs":{{"{}":1}}}}"#,
        "k".repeat(4000)
    );
    let err = validate(key.as_bytes(), &r, None).unwrap_err();
    let ValidationError::Invalid(d) = err else {
        panic!()
    };
    assert!(d.iter().all(|d| d.field.as_ref().unwrap().len() < 100));
}

#[test]
fn webhook_urls_are_checked_when_callbacks_are_on() {
    let body = |url: &str| {
        format!(
            r#"{{"model":"credit-default","inputs":[1,2,3],"webhook_url":{}}}"#,
            serde_json::json!(url)
        )
    };
    // Off: any URL is refused with the reason.
    let d = details(&body("https://hooks.example.com/x"));
    assert!(d[0].message.contains("not enabled"), "{d:?}");
    let guard = Guard::default();
    let r = registry();
    let ok = validate(
        body("https://hooks.example.com/x").as_bytes(),
        &r,
        Some(&guard),
    )
    .unwrap();
    assert_eq!(
        ok.webhook_url.as_deref(),
        Some("https://hooks.example.com/x")
    );
    for (url, why) in [
        ("http://hooks.example.com/x", "scheme `http`"),
        ("https://169.254.169.254/latest", "cloud metadata"),
        ("https://0x7f.1/", "loopback"),
        ("https://[::ffff:10.0.0.1]/", "private"),
        ("https://u:p@hooks.example.com/", "user name"),
        ("hooks.example.com", "not a valid URL"),
    ] {
        let Err(ValidationError::Invalid(d)) = validate(body(url).as_bytes(), &r, Some(&guard))
        else {
            panic!("{url} passed")
        };
        assert_eq!(d[0].field.as_deref(), Some("webhook_url"));
        assert!(d[0].message.contains(why), "{url}: {d:?}");
    }
}

#[test]
fn unknown_model_and_options() {
    assert!(matches!(
        validate(br#"{"model":"nope","inputs":[1,2,3]}"#, &registry(), None),
        Err(ValidationError::UnknownModel(_))
    ));
    let d =
        details(r#"{"model":"credit-default","inputs":[1,2,3],"deadline_ms":0,"metadata":[1]}"#);
    let fields: Vec<_> = d.iter().map(|d| d.field.clone().unwrap()).collect();
    assert_eq!(fields, vec!["deadline_ms", "metadata"]);
    // A whole number may be written with a zero fraction (JSON Schema's
    // `integer`); a fraction or a negative is malformed.
    let r = registry();
    let ok = validate(
        br#"{"model":"credit-default","inputs":[1,2,3],"deadline_ms":5.0}"#,
        &r,
        None,
    );
    assert_eq!(ok.unwrap().deadline_ms, Some(5));
    for bad in ["5.5", "-1", "\"5\""] {
        let body = format!(r#"{{"model":"credit-default","inputs":[1,2,3],"deadline_ms":{bad}}}"#);
        assert!(
            matches!(
                validate(body.as_bytes(), &r, None),
                Err(ValidationError::Malformed(_))
            ),
            "{bad}"
        );
    }
}

fn seq_registry() -> Registry {
    Registry::parse(
        r#"
[[model]]
name = "seq"
version = "1"
path = "x.pt"
inputs = [{ name = "h", shape = [2, 3], min = 0 }, { name = "t" }]
outputs = [{ name = "p" }]
"#,
        Path::new("models.toml"),
        Path::new("."),
    )
    .unwrap()
}

fn row(body: &str, r: &Registry) -> Result<Vec<f32>, Vec<Detail>> {
    match validate(body.as_bytes(), r, None) {
        Ok(j) => Ok(j.inputs),
        Err(ValidationError::Invalid(d)) => Err(d),
        Err(e) => panic!("{e:?}"),
    }
}

fn fields(d: &[Detail]) -> Vec<String> {
    d.iter()
        .map(|d| d.field.clone().unwrap_or_default())
        .collect()
}

#[test]
fn tensor_features_nested_flat_and_positional_agree() {
    let r = seq_registry();
    let want = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    for body in [
        r#"{"model":"seq","inputs":{"h":[[1,2,3],[4,5,6]],"t":7}}"#,
        r#"{"model":"seq","inputs":{"h":[1,2,3,4,5,6],"t":7}}"#,
        r#"{"model":"seq","inputs":[[[1,2,3],[4,5,6]],7]}"#,
        r#"{"model":"seq","inputs":[1,2,3,4,5,6,7]}"#,
    ] {
        assert_eq!(row(body, &r).unwrap(), want, "{body}");
    }
}

#[test]
fn tensor_features_of_the_wrong_shape_or_range_are_named() {
    let r = seq_registry();
    let d = row(r#"{"model":"seq","inputs":{"h":[[1,2],[4,5]],"t":7}}"#, &r).unwrap_err();
    assert_eq!(fields(&d), vec!["inputs.h"]);
    assert!(d[0].message.contains("[2, 3]"), "{d:?}");
    let d = row(
        r#"{"model":"seq","inputs":{"h":[[1,2,3],[4,-5,"x"]],"t":7}}"#,
        &r,
    )
    .unwrap_err();
    assert_eq!(fields(&d), vec!["inputs.h[4]", "inputs.h[5]"]);
    let d = row(r#"{"model":"seq","inputs":[1,2,3]}"#, &r).unwrap_err();
    assert!(d[0].message.contains("expected 7 values"), "{d:?}");
    let d = row(r#"{"model":"seq","inputs":{"h":[[[1]]],"t":7}}"#, &r).unwrap_err();
    assert_eq!(fields(&d), vec!["inputs.h"]);
}

#[test]
fn v2_tensors_give_the_same_row_as_named_inputs() {
    let r = seq_registry();
    let named = row(
        r#"{"model":"seq","inputs":{"h":[[1,2,3],[4,5,6]],"t":7}}"#,
        &r,
    )
    .unwrap();
    for body in [
        r#"{"model":"seq","inputs":[
            {"name":"t","shape":[1],"datatype":"INT64","data":[7]},
            {"name":"h","shape":[1,2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#,
        r#"{"model":"seq","inputs":[
            {"name":"h","shape":[2,3],"datatype":"FP64","data":[[1,2,3],[4,5,6]]},
            {"name":"t","shape":[1,1],"datatype":"FP32","data":[[7]],"parameters":{}}]}"#,
        r#"{"model":"seq","inputs":[
            {"name":"input-0","shape":[1,7],"datatype":"FP32","data":[1,2,3,4,5,6,7]}]}"#,
    ] {
        assert_eq!(row(body, &r).unwrap(), named, "{body}");
    }
    let credit = registry();
    let b = row(
        r#"{"model":"credit-default","inputs":[
            {"name":"student","shape":[1],"datatype":"BOOL","data":[true]},
            {"name":"balance","shape":[1],"datatype":"FP32","data":[729.5]},
            {"name":"income","shape":[],"datatype":"FP32","data":40000}]}"#,
        &credit,
    )
    .unwrap();
    assert_eq!(b, vec![1.0, 729.5, 40000.0]);
}

#[test]
fn a_flood_of_bad_tensors_reports_at_most_a_hundred_problems() {
    let r = seq_registry();
    let tensors = vec!["{}"; 50_000].join(",");
    let body = format!(r#"{{"model":"seq","inputs":[{tensors}]}}"#);
    let d = row(&body, &r).unwrap_err();
    assert_eq!(d.len(), MAX_PROBLEMS);
}

#[test]
fn malformed_and_hostile_v2_tensors_are_refused_with_their_field() {
    let r = seq_registry();
    let cases: &[(&str, &str)] = &[
        (
            r#"[{"name":"h","shape":[2,3],"datatype":"BYTES","data":["a"]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
            "inputs[0].datatype",
        ),
        (
            r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
            "inputs[0].data",
        ),
        (
            r#"[{"name":"h","shape":[3,2],"datatype":"FP32","data":[1,2,3,4,5,6]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
            "inputs[0].shape",
        ),
        (
            r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]},{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]"#,
            "inputs[1].name",
        ),
        (
            r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]"#,
            "inputs.t",
        ),
        (
            r#"[{"name":"zz","shape":[1],"datatype":"FP32","data":[1]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
            "inputs[0].name",
        ),
        (
            r#"[{"name":"h","shape":[18446744073709551615,2],"datatype":"FP32","data":[1]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
            "inputs[0].data",
        ),
        (
            r#"[{"name":"h","datatype":"FP32","data":[1]}]"#,
            "inputs[0]",
        ),
        (
            r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,1e40]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
            "inputs[0].data[5]",
        ),
        (
            r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6],"extra":1},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
            "inputs[0]",
        ),
    ];
    for (tensors, field) in cases {
        let body = format!(r#"{{"model":"seq","inputs":{tensors}}}"#);
        let d = row(&body, &r).unwrap_err();
        assert!(fields(&d).iter().any(|f| f == field), "{field}: {d:?}");
    }
}
