//! The registry file: parsing, lookups, the checks and the message-size rule.

use super::*;
use std::path::Path;

const GOOD: &str = r#"
[[model]]
name = "credit-default"
version = "1"
path = "credit-default.pt"
inputs = [{ name = "student", min = 0, max = 1 }, { name = "balance" }, { name = "income" }]
outputs = [{ name = "default_probability" }]

[[model]]
name = "credit-default"
version = "2"
default = true
path = "/abs/credit-default-2.pt"
inputs = [{ name = "student" }, { name = "balance" }, { name = "income" }]
outputs = [{ name = "default_probability" }]
max_batch_size = 128
"#;

fn parse(text: &str) -> Result<Registry, RegistryError> {
    Registry::parse(text, Path::new("config/models.toml"), Path::new("config"))
}

#[test]
fn parses_and_resolves_versions() {
    let r = parse(GOOD).unwrap();
    assert_eq!(r.names(), vec!["credit-default"]);
    assert_eq!(r.resolve("credit-default").unwrap().version, "2");
    let v1 = r.resolve("credit-default@1").unwrap();
    assert_eq!(v1.path, Path::new("config/credit-default.pt"));
    assert_eq!(v1.max_batch_size, 64);
    assert_eq!(v1.width(), 3);
    assert_eq!(
        r.resolve("credit-default@2").unwrap().path,
        Path::new("/abs/credit-default-2.pt")
    );
    assert!(r.resolve("credit-default@3").is_none());
    assert!(r.resolve("other").is_none());
}

#[test]
fn unknown_fields_are_named_with_their_line() {
    let text = GOOD.replace("max_batch_size = 128", "max_batch_sise = 128");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.starts_with("config/models.toml:"), "{err}");
    assert!(err.contains("max_batch_sise"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn tensor_features_lay_out_row_major_after_one_another() {
    let text = GOOD.replacen(
        "{ name = \"balance\" }",
        "{ name = \"balance\", shape = [2, 3] }",
        1,
    );
    let r = parse(&text).unwrap();
    let m = r.resolve("credit-default@1").unwrap();
    assert_eq!(m.width(), 8);
    assert_eq!(m.offsets(), vec![0, 1, 7]);
    assert!(!m.is_scalar());
    let cols: Vec<String> = m.columns().into_iter().map(|(_, c)| c).collect();
    assert_eq!(cols[0], "student");
    assert_eq!(cols[1], "balance[0]");
    assert_eq!(cols[6], "balance[5]");
    assert_eq!(cols[7], "income");
    assert_eq!(m.instances, 1);
    assert_eq!(m.precision, Precision::F32);
}

#[test]
fn bad_values_name_model_and_field() {
    let cases = [
        (
            "max_batch_size = 128",
            "max_batch_size = 0",
            "max_batch_size",
        ),
        (
            "name = \"credit-default\"\nversion = \"2\"",
            "name = \"Credit Default\"\nversion = \"2\"",
            "name",
        ),
        (
            "max_batch_size = 128",
            "max_batch_size = 8\nmax_batch_delay_ms = 99999",
            "max_batch_delay_ms",
        ),
        ("max_batch_size = 128", "device = \"tpu\"", "device"),
        ("version = \"2\"", "version = \"1\"", "version"),
        (
            "{ name = \"student\" }, { name = \"balance\" }",
            "{ name = \"x\" }, { name = \"x\" }",
            "inputs",
        ),
        ("min = 0, max = 1", "min = 2, max = 1", "inputs"),
        (
            "{ name = \"balance\" }",
            "{ name = \"balance\", shape = [0, 4] }",
            "inputs.shape",
        ),
        (
            "{ name = \"balance\" }",
            "{ name = \"balance\", shape = [1000, 1000] }",
            "inputs.shape",
        ),
        (
            "{ name = \"balance\" }",
            "{ name = \"balance\", shape = [1, 1, 1, 1, 1] }",
            "inputs.shape",
        ),
        ("max_batch_size = 128", "instances = 0", "instances"),
        (
            "max_batch_size = 128",
            "device = \"cpu\"\nprecision = \"f16\"",
            "precision",
        ),
        // Unbounded inputs would overflow in f16.
        ("max_batch_size = 128", "precision = \"f16\"", "precision"),
    ];
    for (from, to, field) in cases {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "case {field} did not apply");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("field `{field}`")), "{field}: {err}");
        assert!(err.starts_with("config/models.toml: model `"), "{err}");
    }
}

#[test]
fn f16_needs_inputs_bounded_within_its_range_and_bf16_does_not() {
    let bounded = GOOD.replacen(
        "inputs = [{ name = \"student\" }, { name = \"balance\" }, { name = \"income\" }]",
        "inputs = [{ name = \"student\", min = 0, max = 1 }, { name = \"balance\", min = 0, max = 20000 }, { name = \"income\", min = 0, max = 65504 }]",
        1,
    );
    assert_ne!(bounded, GOOD);
    let f16 = bounded.replace("max_batch_size = 128", "precision = \"f16\"");
    assert_eq!(
        parse(&f16)
            .unwrap()
            .resolve("credit-default@2")
            .unwrap()
            .precision,
        Precision::F16
    );
    let wide = f16.replace("max = 65504", "max = 100000");
    let err = parse(&wide).unwrap_err().to_string();
    assert!(
        err.contains("field `precision`") && err.contains("`income`"),
        "{err}"
    );
    let low = f16.replace(
        "{ name = \"balance\", min = 0,",
        "{ name = \"balance\", min = -70000,",
    );
    assert!(parse(&low).unwrap_err().to_string().contains("`balance`"));
    let bf16 = wide.replace("\"f16\"", "\"bf16\"");
    assert!(parse(&bf16).is_ok());
}

#[test]
fn hostile_files_are_refused_cleanly() {
    for text in [
        "",
        "[[model]]",
        "model = 3",
        "\u{0}\u{1}garbage[[",
        "[[model]]\nname = 1",
    ] {
        assert!(parse(text).is_err(), "{text:?} accepted");
    }
    let missing = Registry::load(Path::new("/nonexistent/models.toml")).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/models.toml"));
}

#[test]
fn chunks_of_any_width_fit_in_a_message() {
    use crate::message::MAX_MESSAGE_BYTES;
    // f32s in their JSON form, across every exponent: at most 17
    // characters (a sign, `0.00000` and 9 digits).
    let longest = (0..=u32::MAX)
        .step_by(9_973)
        .map(f32::from_bits)
        .chain([-0.000_001_234_567_8, -f32::MAX, -f32::MIN_POSITIVE])
        .filter(|v| v.is_finite())
        .map(|v| serde_json::to_string(&v).unwrap().len())
        .max();
    assert!(longest.is_some_and(|n| (15..MAX_ENCODED_VALUE_BYTES).contains(&n)));
    let r = parse(GOOD).unwrap();
    let mut spec = r.resolve("credit-default@1").unwrap().clone();
    assert_eq!(spec.chunk_rows(256), 256, "narrow models keep chunk_rows");
    assert_eq!(spec.chunk_rows(0), 1);
    for width in [3usize, 4096, 8192, MAX_WIDTH] {
        spec.inputs = vec![FeatureSpec {
            name: "x".into(),
            dtype: Dtype::F32,
            shape: vec![width],
            min: None,
            max: None,
            description: String::new(),
            categories: Default::default(),
            reason: None,
        }];
        let rows = spec.chunk_rows(65_536) as usize;
        assert!(rows >= 1 && rows <= rows_per_message(width), "{width}");
        // A full chunk of the longest values leaves the envelope's
        // share of the message.
        let values = vec![-0.000_001_234_567_8f32; rows * width];
        let len = serde_json::to_vec(&values).unwrap().len();
        assert!(
            len + MESSAGE_ENVELOPE_BYTES <= MAX_MESSAGE_BYTES,
            "width {width}: {len} bytes"
        );
    }
    assert_eq!(rows_per_message(0), 0);
    assert_eq!(rows_per_message(MAX_MESSAGE_BYTES), 0);
    assert_eq!(rows_per_message(usize::MAX), 0);
}

#[test]
fn devices_parse() {
    assert_eq!(parse_device("auto"), Some(DeviceChoice::Auto));
    assert_eq!(parse_device("cpu"), Some(DeviceChoice::Cpu));
    assert_eq!(parse_device("cuda:1"), Some(DeviceChoice::Cuda(1)));
    assert_eq!(parse_device("cuda:x"), None);
    assert_eq!(parse_device("gpu"), None);
}

#[test]
fn categorical_features_take_names_or_codes_and_nothing_else() {
    let text = GOOD.replacen(
        "{ name = \"student\", min = 0, max = 1 }",
        "{ name = \"student\", min = 0, max = 1, categories = { No = 0, Yes = 1 } }",
        1,
    );
    let r = parse(&text).unwrap();
    let f = &r.resolve("credit-default@1").unwrap().inputs[0];
    assert_eq!(f.text("Yes", false), Ok(1.0));
    assert_eq!(f.text("No", false), Ok(0.0));
    assert_eq!(f.text("1", false), Ok(1.0), "codes are accepted too");
    assert_eq!(f.category("Yes"), Ok(1.0));
    let err = f.text("Maybe", false).unwrap_err();
    assert_eq!(err, "`Maybe` is not one of No (0), Yes (1)");
    assert_eq!(f.number(0.5).unwrap_err(), "must be one of No (0), Yes (1)");
    assert!(f.category("yes").is_err(), "names are matched exactly");
    // A plain number feature: decimal commas only when asked for.
    let balance = &r.resolve("credit-default@1").unwrap().inputs[1];
    assert_eq!(balance.text("1234,5", true), Ok(1234.5));
    assert!(balance.text("1234,5", false).is_err());
    assert!(balance.text("1.234,5", true).is_err(), "no thousands marks");
    assert_eq!(balance.category("x").unwrap_err(), "must be a number");
}

#[test]
fn bad_categories_are_refused_at_load() {
    for (cats, why) in [
        ("{ No = 0, Yes = 0 }", "codes are distinct"),
        ("{ No = 0, Yes = 2 }", "within min and max"),
        ("{ \" No\" = 0 }", "without spaces"),
        ("{ No = 0.1 }", "32-bit floats"),
    ] {
        let text = GOOD.replacen(
            "{ name = \"student\", min = 0, max = 1 }",
            &format!("{{ name = \"student\", min = 0, max = 1, categories = {cats} }}"),
            1,
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("inputs.categories") && err.contains(why),
            "{cats}: {err}"
        );
    }
    let text = GOOD.replacen(
        "{ name = \"balance\" }",
        "{ name = \"balance\", shape = [2], categories = { A = 0 } }",
        1,
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("only a single number"), "{err}");
}

#[test]
fn explain_sections_are_checked_at_load() {
    let with = |extra: &str, reasons: bool| {
        let mut text = GOOD.replacen(
            "max_batch_size = 128",
            &format!(
                "max_batch_size = 128\nexplain = {{ method = \"integrated_gradients\", {extra} }}"
            ),
            1,
        );
        if reasons {
            text = text.replacen(
                "inputs = [{ name = \"student\" }, { name = \"balance\" }, { name = \"income\" }]",
                "inputs = [{ name = \"student\", reason = \"s\" }, { name = \"balance\", reason = \"b\", shape = [2, 2] }, { name = \"income\", reason = \"i\" }]",
                1,
            );
        }
        parse(&text).map_err(|e| e.to_string())
    };
    let good = "baseline = { student = 0, balance = [1, 2], income = 3 }";
    let r = with(good, true).unwrap();
    let spec = r.resolve("credit-default@2").unwrap();
    let x = spec.explain.as_ref().unwrap();
    assert_eq!(x.steps, 32);
    assert_eq!(x.top_k, 4);
    assert_eq!(
        x.baseline_row(&spec.inputs).unwrap(),
        [0.0, 1.0, 2.0, 1.0, 2.0, 3.0],
        "one value per entry of the last dimension, repeated"
    );
    for (extra, reasons, field) in [
        (good, false, "inputs.reason"),
        (
            "baseline = { student = 0, balance = 1 }",
            true,
            "`income` has no baseline value",
        ),
        (
            "baseline = { student = 0, balance = 1, income = 1, other = 2 }",
            true,
            "`other` is not an input",
        ),
        (
            "baseline = { student = 0, balance = [1, 2, 3], income = 1 }",
            true,
            "one per entry of its last dimension",
        ),
        (
            "baseline = { student = 1e39, balance = 1, income = 1 }",
            true,
            "finite",
        ),
        (
            "baseline = { student = 0, balance = 1, income = 1 }, steps = 0",
            true,
            "explain.steps",
        ),
        (
            "baseline = { student = 0, balance = 1, income = 1 }, top_k = 0",
            true,
            "explain.top_k",
        ),
        (
            "baseline = { student = 0, balance = 1, income = 1 }, output = \"nope\"",
            true,
            "explain.output",
        ),
        (
            "baseline = { student = 0, balance = 1, income = 1 }, adverse = \"up\"",
            true,
            "adverse",
        ),
    ] {
        let err = with(extra, reasons).unwrap_err();
        assert!(err.contains(field), "{extra}: {err}");
    }
    let text = GOOD.replacen(
        "max_batch_size = 128",
        "max_batch_size = 128\nsha256 = \"ABC\"",
        1,
    );
    assert!(parse(&text).unwrap_err().to_string().contains("sha256"));
    let err = with(
        "baseline = { student = 0, balance = 1, income = 1 }, method = \"shap\"",
        true,
    )
    .unwrap_err();
    assert!(err.contains("method") || err.contains("shap"), "{err}");
}
