//! The model registry end to end: two models served at once, each with its
//! own queues and batching settings; Open Inference Protocol (KServe v2)
//! tensors giving the same outputs as named inputs, singly and in bulk; a
//! bad registry entry or model file stopping start-up with the file and
//! the field or model named.

mod explain;
mod lineage;
mod serving;
mod startup;
mod support;
mod versions;
