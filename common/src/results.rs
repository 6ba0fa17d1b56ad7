//! How results are encoded: one job's outputs as a JSON object keyed by
//! output name, and a bulk chunk's rows as a JSON array with one element per
//! row (an array of outputs, an error string, or for an explained row
//! `{"v": outputs, "a": attributions}`, one attribution per input value). The worker writes these
//! forms and the producer reads them back, so both live here.
//!
//! Floats are written in their shortest f32 form, which reads back exactly.

use crate::registry::OutputSpec;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// One row's outputs, serialised as `{"<name>": value, ...}` in schema order.
pub struct NamedOutputs<'a>(pub &'a [OutputSpec], pub &'a [f32]);

impl Serialize for NamedOutputs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|o| o.name.as_str()).zip(self.1))
    }
}

/// One row's outputs as JSON text.
pub fn output_json(outputs: &[OutputSpec], row: &[f32]) -> String {
    serde_json::to_string(&NamedOutputs(outputs, row)).expect("outputs serialise")
}

/// One row of a chunk as the worker writes it.
#[derive(Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum RowOut<'a> {
    /// The row's outputs.
    Values(&'a [f32]),
    /// Why the row has no outputs.
    Error(&'a str),
    /// The row's outputs and its attributions.
    Explained {
        /// Outputs.
        v: &'a [f32],
        /// Attributions, one per input value.
        a: &'a [f32],
    },
}

/// One row of a chunk as the producer reads it (see [`RowOut`]; read by
/// the JSON type of the element, without buffering it first as an
/// untagged enum would).
#[derive(Debug, Clone, PartialEq)]
pub enum RowResult {
    /// The row's outputs.
    Values(Vec<f32>),
    /// Why the row has no outputs.
    Error(String),
    /// The row's outputs and its attributions.
    Explained {
        /// Outputs.
        v: Vec<f32>,
        /// Attributions, one per input value.
        a: Vec<f32>,
    },
}

impl RowResult {
    /// The row's outputs, if it has them.
    pub fn values(&self) -> Option<&[f32]> {
        match self {
            RowResult::Values(v) | RowResult::Explained { v, .. } => Some(v),
            RowResult::Error(_) => None,
        }
    }

    /// The row's attributions, if it was explained.
    pub fn attributions(&self) -> Option<&[f32]> {
        match self {
            RowResult::Explained { a, .. } => Some(a),
            _ => None,
        }
    }
}

/// A chunk's rows with the SHA-256 of the model file that ran them.
#[derive(Serialize)]
struct ChunkOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    rows: &'a [RowOut<'a>],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ids: &'a [String],
}

/// A chunk's stored text: `{"sha256", "rows": [...], "ids": [...]}` when
/// the model that ran it is known or its rows carry passthrough values
/// (`ids`, row by row), else the bare array of rows (as earlier releases
/// and dead-lettered chunks store it).
pub fn chunk_json(sha256: Option<&str>, rows: &[RowOut], ids: &[String]) -> String {
    if sha256.is_none() && ids.is_empty() {
        return serde_json::to_string(rows).expect("rows serialise");
    }
    serde_json::to_string(&ChunkOut { sha256, rows, ids }).expect("rows serialise")
}

impl<'de> Deserialize<'de> for RowResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Explained {
            v: Vec<f32>,
            a: Vec<f32>,
        }
        struct Row;
        impl<'de> Visitor<'de> for Row {
            type Value = RowResult;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of outputs, an error string or {\"v\", \"a\"}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RowResult, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(RowResult::Values)
            }
            fn visit_str<E: serde::de::Error>(self, e: &str) -> Result<RowResult, E> {
                Ok(RowResult::Error(e.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, e: String) -> Result<RowResult, E> {
                Ok(RowResult::Error(e))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RowResult, A::Error> {
                let Explained { v, a } = Explained::deserialize(MapAccessDeserializer::new(map))?;
                Ok(RowResult::Explained { v, a })
            }
        }
        d.deserialize_any(Row)
    }
}

/// A stored chunk as read back: the bare array of rows, or the object
/// with lineage (told apart by the JSON type, as for [`RowResult`]).
#[derive(Debug, Clone, PartialEq)]
enum StoredForm {
    Rows(Vec<RowResult>),
    WithLineage(WithLineage),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct WithLineage {
    #[serde(default)]
    sha256: Option<String>,
    rows: Vec<RowResult>,
    #[serde(default)]
    ids: Vec<String>,
}

impl<'de> Deserialize<'de> for StoredForm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> Visitor<'de> for Form {
            type Value = StoredForm;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of rows or {\"sha256\", \"rows\", \"ids\"}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<StoredForm, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(StoredForm::Rows)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StoredForm, A::Error> {
                WithLineage::deserialize(MapAccessDeserializer::new(map))
                    .map(StoredForm::WithLineage)
            }
        }
        d.deserialize_any(Form)
    }
}

/// A stored chunk: its rows, and the SHA-256 of the model file that ran
/// them when recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    /// The model file's SHA-256.
    pub sha256: Option<String>,
    /// One result per row, in order.
    pub rows: Vec<RowResult>,
    /// The rows' passthrough values, row by row (empty when none).
    pub ids: Vec<String>,
}

/// Parses a stored chunk, in either form [`chunk_json`] writes.
pub fn parse_chunk(text: &str) -> Result<StoredChunk, serde_json::Error> {
    Ok(match serde_json::from_str(text)? {
        StoredForm::Rows(rows) => StoredChunk {
            sha256: None,
            rows,
            ids: Vec::new(),
        },
        StoredForm::WithLineage(WithLineage { sha256, rows, ids }) => {
            StoredChunk { sha256, rows, ids }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_exactly() {
        let a = [0.123_456_79_f32, 1.0e-30];
        let rows = [
            RowOut::Values(&a),
            RowOut::Error("bad row"),
            RowOut::Values(&[0.5]),
        ];
        let text = serde_json::to_string(&rows).unwrap();
        assert_eq!(text, r#"[[0.12345679,1e-30],"bad row",[0.5]]"#);
        let back = parse_chunk(&text).unwrap();
        assert_eq!(back.sha256, None);
        assert_eq!(back.rows[0], RowResult::Values(a.to_vec()));
        assert_eq!(back.rows[1], RowResult::Error("bad row".into()));
        assert!(parse_chunk("[{}]").is_err());
        let text = chunk_json(Some("ab12"), &rows, &[]);
        assert_eq!(
            text,
            r#"{"sha256":"ab12","rows":[[0.12345679,1e-30],"bad row",[0.5]]}"#
        );
        let back = parse_chunk(&text).unwrap();
        assert_eq!(back.sha256.as_deref(), Some("ab12"));
        assert_eq!(back.rows.len(), 3);
        let ids = ["L-1".to_string(), "L-1".into(), "L,3".into()];
        let back = parse_chunk(&chunk_json(Some("ab12"), &rows, &ids)).unwrap();
        assert_eq!(back.ids, ids);
        let explained = [RowOut::Explained {
            v: &[0.5],
            a: &[0.25, -0.125],
        }];
        let text = serde_json::to_string(&explained).unwrap();
        assert_eq!(text, r#"[{"v":[0.5],"a":[0.25,-0.125]}]"#);
        let back = parse_chunk(&text).unwrap().rows;
        assert_eq!(back[0].values(), Some(&[0.5][..]));
        assert_eq!(back[0].attributions(), Some(&[0.25, -0.125][..]));
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            "5",
            "null",
            r#""rows""#,
            "[null]",
            "[true]",
            r#"[["x"]]"#,
            r#"[{"v":[1]}]"#,
            r#"[{"v":[1],"a":"x"}]"#,
            r#"{"sha256":"ab"}"#,
            r#"{"rows":3}"#,
            r#"{"rows":[],"ids":[1]}"#,
            "[[1e99]]",
            "[[1,2]",
        ] {
            assert!(parse_chunk(bad).is_err(), "{bad}");
        }
        let ok = parse_chunk(r#"{"sha256":null,"rows":[[1],"e",{"a":[2],"v":[3],"x":0}],"y":1}"#)
            .unwrap();
        assert_eq!(ok.sha256, None);
        assert_eq!(
            ok.rows,
            vec![
                RowResult::Values(vec![1.0]),
                RowResult::Error("e".into()),
                RowResult::Explained {
                    v: vec![3.0],
                    a: vec![2.0]
                }
            ]
        );
        assert_eq!(
            parse_chunk(r#"["a\"b"]"#).unwrap().rows[0],
            RowResult::Error("a\"b".into())
        );
    }

    #[test]
    fn outputs_are_named_in_schema_order() {
        let outs = [
            OutputSpec {
                name: "z".into(),
                description: String::new(),
            },
            OutputSpec {
                name: "a".into(),
                description: String::new(),
            },
        ];
        assert_eq!(output_json(&outs, &[0.25, 1.0]), r#"{"z":0.25,"a":1.0}"#);
    }
}
