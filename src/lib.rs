//! segwatch: watches deployed medical-image segmentation models by scoring their
//! output against radiologists' corrections. This crate is the I/O shell (HTTP,
//! store, workers, telemetry, CLI) around the pure engine crate
//! `segwatch-engine`, re-exported here; `docs/architecture.md` maps the layers.

pub mod cli;
pub mod compute;
pub mod config;
pub mod http;
pub mod ids;
pub mod ingest;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod views;
pub mod worker;

pub use segwatch_engine::{compare, drift, formats, metrics, schema, volume};
