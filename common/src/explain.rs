//! Reason codes: how a row's attributions (one value per input value, by
//! integrated gradients in the worker) become what clients read: each
//! feature's attribution, and the features that pushed the score toward
//! the adverse outcome the most, with their reason texts.
//!
//! A single job's explanation is rendered by the worker when it stores the
//! result; a batch's rows by the producer when it streams results, from the
//! plan recorded with the batch at acceptance (so they stay readable after
//! a registry reload). Both call [`ExplainPlan::explain`], so a job's
//! reasons and the same row's in a batch are the same.

use crate::registry::{Adverse, ModelSpec};
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

/// What a model's explanations need from its registry entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainPlan {
    /// The explained output's name.
    pub output: String,
    /// `true` when a lower output is the adverse one.
    #[serde(default)]
    pub lower_is_adverse: bool,
    /// Reasons per row, at most.
    pub top_k: usize,
    /// The least push toward the adverse outcome that makes a reason.
    #[serde(default)]
    pub min_contribution: f32,
    /// The inputs in schema order.
    pub features: Vec<PlanFeature>,
}

/// One input of an [`ExplainPlan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFeature {
    /// Its name.
    pub name: String,
    /// Values it has in the input row (1 for a number).
    pub size: usize,
    /// Whether it is a tensor (its values are listed one by one too).
    #[serde(default)]
    pub tensor: bool,
    /// Its reason text.
    pub reason: String,
}

impl ExplainPlan {
    /// The plan of a model version with an `explain` section.
    pub fn of(spec: &ModelSpec) -> Option<Self> {
        let x = spec.explain.as_ref()?;
        let output = spec.outputs.get(x.output_index(&spec.outputs)?)?;
        Some(Self {
            output: output.name.clone(),
            lower_is_adverse: x.adverse == Adverse::Lower,
            top_k: x.top_k.min(spec.inputs.len()),
            min_contribution: x.min_contribution as f32,
            features: spec
                .inputs
                .iter()
                .map(|f| PlanFeature {
                    name: f.name.clone(),
                    size: f.size(),
                    tensor: !f.shape.is_empty(),
                    reason: f.reason.clone().unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// Values in one input row.
    pub fn width(&self) -> usize {
        self.features.iter().map(|f| f.size).sum()
    }

    /// One row's explanation from its attributions (one per input value,
    /// in schema order; [`Self::width`] of them).
    pub fn explain<'a>(&'a self, attributions: &'a [f32]) -> Explanation<'a> {
        let mut at = 0;
        let per_feature: Vec<(&PlanFeature, &[f32], f32)> = self
            .features
            .iter()
            .map(|f| {
                let values = attributions.get(at..at + f.size).unwrap_or_default();
                at += f.size;
                // Summed in f64, so a long tensor adds no rounding of its own.
                let sum = values.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
                (f, values, sum)
            })
            .collect();
        let adverse = |v: f32| if self.lower_is_adverse { -v } else { v };
        let mut order: Vec<usize> = (0..per_feature.len())
            .filter(|&i| {
                let push = adverse(per_feature[i].2);
                push > 0.0 && push >= self.min_contribution
            })
            .collect();
        // Largest push first; on a tie, schema order.
        order.sort_by(|&a, &b| {
            adverse(per_feature[b].2)
                .total_cmp(&adverse(per_feature[a].2))
                .then(a.cmp(&b))
        });
        order.truncate(self.top_k);
        Explanation {
            plan: self,
            per_feature,
            reasons: order,
        }
    }
}

/// One row's explanation, serialised as
/// `{"output", "attributions": {feature: sum}, "elements": {tensor feature:
/// [values]}, "reasons": [{"feature", "reason", "contribution"}]}`.
pub struct Explanation<'a> {
    plan: &'a ExplainPlan,
    per_feature: Vec<(&'a PlanFeature, &'a [f32], f32)>,
    reasons: Vec<usize>,
}

impl Explanation<'_> {
    /// The reason texts, strongest first.
    pub fn reason_texts(&self) -> impl Iterator<Item = &str> {
        self.reasons
            .iter()
            .map(|&i| self.per_feature[i].0.reason.as_str())
    }

    /// Each feature's attribution (the sum over a tensor), in schema order.
    pub fn attributions(&self) -> impl Iterator<Item = (&str, f32)> {
        self.per_feature
            .iter()
            .map(|(f, _, sum)| (f.name.as_str(), *sum))
    }

    /// Each tensor feature's attributions, value by value, in schema
    /// order.
    pub fn elements(&self) -> impl Iterator<Item = (&str, &[f32])> {
        self.per_feature
            .iter()
            .filter(|(f, ..)| f.tensor)
            .map(|(f, values, _)| (f.name.as_str(), *values))
    }

    /// As JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an explanation serialises")
    }
}

struct Sums<'a>(&'a [(&'a PlanFeature, &'a [f32], f32)]);
impl Serialize for Sums<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(f, _, sum)| (f.name.as_str(), sum)))
    }
}

struct Elements<'a>(&'a [(&'a PlanFeature, &'a [f32], f32)]);
impl Serialize for Elements<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (f, values, _) in self.0.iter().filter(|(f, ..)| f.tensor) {
            m.serialize_entry(&f.name, values)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Reason<'a> {
    feature: &'a str,
    reason: &'a str,
    contribution: f32,
}

impl Serialize for Explanation<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let tensors = self.per_feature.iter().any(|(f, ..)| f.tensor);
        let mut st = s.serialize_struct("Explanation", 3 + usize::from(tensors))?;
        st.serialize_field("output", &self.plan.output)?;
        st.serialize_field("attributions", &Sums(&self.per_feature))?;
        if tensors {
            st.serialize_field("elements", &Elements(&self.per_feature))?;
        }
        let reasons: Vec<Reason> = self
            .reasons
            .iter()
            .map(|&i| {
                let (f, _, sum) = &self.per_feature[i];
                Reason {
                    feature: &f.name,
                    reason: &f.reason,
                    contribution: *sum,
                }
            })
            .collect();
        st.serialize_field("reasons", &reasons)?;
        st.end()
    }
}

/// The explanation's form, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(as = Explanation)]
#[allow(dead_code)]
pub struct ExplanationDoc {
    /// The explained output.
    output: String,
    /// Each feature's attribution (a tensor feature's: the sum of its
    /// values'); they sum to the output less its value at the baseline.
    attributions: std::collections::HashMap<String, f32>,
    /// A tensor feature's attribution per value, row-major.
    elements: Option<std::collections::HashMap<String, Vec<f32>>>,
    /// The features that pushed the output toward the adverse outcome the
    /// most, strongest first (at most the model's `top_k`).
    reasons: Vec<ReasonDoc>,
}

/// One principal reason, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(as = Reason)]
#[allow(dead_code)]
pub struct ReasonDoc {
    /// The feature.
    feature: String,
    /// Its reason text, from the registry.
    reason: String,
    /// Its attribution.
    contribution: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(lower: bool) -> ExplainPlan {
        let f = |name: &str, size: usize| PlanFeature {
            name: name.into(),
            size,
            tensor: size > 1,
            reason: format!("{name} reason"),
        };
        ExplainPlan {
            output: "p".into(),
            lower_is_adverse: lower,
            top_k: 2,
            min_contribution: 0.0,
            features: vec![f("a", 1), f("h", 3), f("c", 1), f("d", 1)],
        }
    }

    #[test]
    fn reasons_are_the_strongest_pushes_toward_the_adverse_side() {
        let p = plan(false);
        let attr = [0.1, 0.2, 0.2, -0.1, -0.5, 0.05];
        let e = p.explain(&attr);
        let sums: Vec<(&str, f32)> = e.attributions().collect();
        assert_eq!(sums[1], ("h", 0.3));
        assert_eq!(
            e.reason_texts().collect::<Vec<_>>(),
            ["h reason", "a reason"]
        );
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["elements"]["h"], serde_json::json!([0.2, 0.2, -0.1]));
        assert_eq!(v["reasons"][0]["feature"], "h");
        assert_eq!(v["reasons"].as_array().unwrap().len(), 2, "top_k");
        let keys: Vec<&String> = v["attributions"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4);
        // Lower is adverse: the most negative first; none pushing that way
        // gives no reason.
        let p = plan(true);
        let e = p.explain(&attr);
        assert_eq!(e.reason_texts().collect::<Vec<_>>(), ["c reason"]);
        let e = p.explain(&[0.0; 6]);
        assert_eq!(e.reason_texts().count(), 0);
        // Pushes below the least contribution are not reasons.
        let p = ExplainPlan {
            min_contribution: 0.2,
            ..plan(false)
        };
        let e = p.explain(&attr);
        assert_eq!(e.reason_texts().collect::<Vec<_>>(), ["h reason"]);
    }
}
