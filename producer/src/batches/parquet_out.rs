//! Batch results as Apache Parquet, written row group by row group as the
//! stored chunks are read, so memory stays bounded by one group whatever
//! the batch's size.
//!
//! Columns, in this order: `row` (uint64), the client's passthrough
//! columns (string), the model's outputs (float32), for an explained batch
//! `reason_1..reason_k` (string), `attribution_<feature>` (float32; a
//! tensor feature's is the sum over its values) and `elements_<feature>`
//! (list of float32, a tensor feature's values one by one), then `model`,
//! `version`, `model_sha256` and `error` (string). A value a row does not
//! have is null: the outputs of a failed row, the error of one that
//! succeeded.

use arrow_array::builder::{
    ArrayBuilder, Float32Builder, ListBuilder, StringBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use infq_common::explain::{ExplainPlan, Explanation};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

/// `Content-Type` of Parquet results.
pub const CONTENT_TYPE: &str = "application/vnd.apache.parquet";

/// One result row, as every format renders it.
pub struct RowView<'a> {
    /// Its number in the uploaded file, from 1.
    pub row: u64,
    /// Its passthrough values (none where its chunk has none).
    pub ids: &'a [String],
    /// Its outputs, if it has them.
    pub values: Option<&'a [f32]>,
    /// Its explanation, for an explained batch's row with outputs.
    pub explanation: Option<Explanation<'a>>,
    /// The model file that ran it.
    pub sha256: Option<&'a str>,
    /// Why it has no outputs.
    pub error: Option<&'a str>,
}

/// Writes result rows as a Parquet file, one row group per [`Self::group`].
pub struct ParquetSink {
    writer: ArrowWriter<Vec<u8>>,
    schema: SchemaRef,
    model: Arc<str>,
    version: Arc<str>,
    row: UInt64Builder,
    ids: Vec<StringBuilder>,
    outputs: Vec<Float32Builder>,
    reasons: Vec<StringBuilder>,
    attributions: Vec<Float32Builder>,
    elements: Vec<ListBuilder<Float32Builder>>,
    models: StringBuilder,
    versions: StringBuilder,
    sha256: StringBuilder,
    error: StringBuilder,
}

impl ParquetSink {
    /// A sink for a batch's results: its passthrough columns, outputs and
    /// explanation plan.
    pub fn new(
        passthrough: &[String],
        outputs: &[String],
        explain: Option<&ExplainPlan>,
        model: Arc<str>,
        version: Arc<str>,
    ) -> parquet::errors::Result<Self> {
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        let number = |name: &str| Field::new(name, DataType::Float32, true);
        let mut fields = vec![Field::new("row", DataType::UInt64, false)];
        fields.extend(passthrough.iter().map(|n| text(n)));
        fields.extend(outputs.iter().map(|n| number(n)));
        let (mut reasons, mut attributions, mut elements) = (0, 0, 0);
        if let Some(plan) = explain {
            reasons = plan.top_k;
            fields.extend((1..=plan.top_k).map(|k| text(&format!("reason_{k}"))));
            for f in &plan.features {
                fields.push(number(&format!("attribution_{}", f.name)));
                attributions += 1;
            }
            for f in plan.features.iter().filter(|f| f.tensor) {
                fields.push(Field::new(
                    format!("elements_{}", f.name),
                    DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true))),
                    true,
                ));
                elements += 1;
            }
        }
        fields.extend(["model", "version", "model_sha256", "error"].map(text));
        let schema = Arc::new(Schema::new(fields));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
        Ok(Self {
            writer,
            schema,
            model,
            version,
            row: UInt64Builder::new(),
            ids: (0..passthrough.len())
                .map(|_| StringBuilder::new())
                .collect(),
            outputs: (0..outputs.len()).map(|_| Float32Builder::new()).collect(),
            reasons: (0..reasons).map(|_| StringBuilder::new()).collect(),
            attributions: (0..attributions).map(|_| Float32Builder::new()).collect(),
            elements: (0..elements)
                .map(|_| ListBuilder::new(Float32Builder::new()))
                .collect(),
            models: StringBuilder::new(),
            versions: StringBuilder::new(),
            sha256: StringBuilder::new(),
            error: StringBuilder::new(),
        })
    }

    /// Adds a row to the group being built.
    pub fn push(&mut self, r: &RowView<'_>) {
        self.row.append_value(r.row);
        for (k, b) in self.ids.iter_mut().enumerate() {
            b.append_option(r.ids.get(k));
        }
        for (k, b) in self.outputs.iter_mut().enumerate() {
            b.append_option(r.values.and_then(|v| v.get(k)).copied());
        }
        let e = r.explanation.as_ref();
        let mut texts = e.map(|e| e.reason_texts());
        for b in &mut self.reasons {
            b.append_option(texts.as_mut().and_then(Iterator::next));
        }
        let mut sums = e.map(|e| e.attributions());
        for b in &mut self.attributions {
            b.append_option(sums.as_mut().and_then(Iterator::next).map(|(_, v)| v));
        }
        let mut lists = e.map(|e| e.elements());
        for b in &mut self.elements {
            match lists.as_mut().and_then(Iterator::next) {
                Some((_, values)) => {
                    b.values().append_slice(values);
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        self.models.append_value(&self.model);
        self.versions.append_value(&self.version);
        self.sha256.append_option(r.values.and(r.sha256));
        self.error.append_option(r.error);
    }

    /// Closes the rows pushed since the last call as a row group, and
    /// returns the bytes of the file written so far and not yet taken.
    pub fn group(&mut self) -> parquet::errors::Result<Vec<u8>> {
        if !self.row.is_empty() {
            let mut columns: Vec<ArrayRef> = vec![Arc::new(self.row.finish())];
            columns.extend(
                self.ids
                    .iter_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef),
            );
            columns.extend(
                self.outputs
                    .iter_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef),
            );
            columns.extend(
                self.reasons
                    .iter_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef),
            );
            columns.extend(
                self.attributions
                    .iter_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef),
            );
            columns.extend(
                self.elements
                    .iter_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef),
            );
            for b in [
                &mut self.models,
                &mut self.versions,
                &mut self.sha256,
                &mut self.error,
            ] {
                columns.push(Arc::new(b.finish()));
            }
            let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
            self.writer.write(&batch)?;
            self.writer.flush()?;
        }
        self.writer.sync()?;
        // Taking the bytes out leaves the writer's own count of what it
        // wrote, which places the footer's offsets, as it is.
        Ok(std::mem::take(self.writer.inner_mut()))
    }

    /// Closes the last group and the file: the rest of its bytes.
    pub fn finish(mut self) -> parquet::errors::Result<Vec<u8>> {
        let mut out = self.group()?;
        out.extend(self.writer.into_inner()?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, UInt64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn groups_stream_out_and_read_back_as_one_file() {
        let mut sink = ParquetSink::new(
            &["loan_id".into()],
            &["p".into()],
            None,
            Arc::from("m"),
            Arc::from("1"),
        )
        .unwrap();
        let ids = ["L-1".to_string()];
        let mut file = Vec::new();
        for group in 0..3u64 {
            for r in 0..4u64 {
                let row = group * 4 + r + 1;
                let v = [row as f32 / 16.0];
                let fails = row == 6;
                sink.push(&RowView {
                    row,
                    ids: if row == 7 { &[] } else { &ids },
                    values: (!fails).then_some(&v[..]),
                    explanation: None,
                    sha256: Some("ab"),
                    error: fails.then_some("bad row"),
                });
            }
            file.extend(sink.group().unwrap());
            assert!(!file.is_empty(), "each group is sent as it closes");
        }
        file.extend(sink.finish().unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 12);
        let b = &batches[0];
        let names: Vec<&str> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "row",
                "loan_id",
                "p",
                "model",
                "version",
                "model_sha256",
                "error"
            ]
        );
        let all = arrow_select_concat(&batches);
        assert_eq!(all.0, (1..=12).collect::<Vec<u64>>());
        assert_eq!(all.1[5], None, "row 6 failed");
        assert_eq!(all.1[4], Some(5.0 / 16.0));
        assert_eq!(all.2[5].as_deref(), Some("bad row"));
        assert_eq!(all.3[6], None, "row 7 has no id");
        assert_eq!(all.3[0].as_deref(), Some("L-1"));
    }

    /// Rows, outputs, errors and ids of all batches.
    #[allow(clippy::type_complexity)]
    fn arrow_select_concat(
        batches: &[RecordBatch],
    ) -> (
        Vec<u64>,
        Vec<Option<f32>>,
        Vec<Option<String>>,
        Vec<Option<String>>,
    ) {
        let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for b in batches {
            out.0
                .extend(b.column(0).as_primitive::<UInt64Type>().values().iter());
            out.1
                .extend(b.column(2).as_primitive::<Float32Type>().iter());
            out.2.extend(
                b.column(6)
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.map(String::from)),
            );
            out.3.extend(
                b.column(1)
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.map(String::from)),
            );
        }
        out
    }
}
