//! The `infq` command-line client: a thin layer over the HTTP API.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod bulk;
pub mod client;
pub mod demo;
pub mod env;
