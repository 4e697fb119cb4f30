//! segwatch: watches deployed medical-image segmentation models by scoring their
//! output against radiologists' corrections. See DESIGN.md for the architecture.

pub mod cli;
pub mod compute;
pub mod config;
pub mod drift;
pub mod formats;
pub mod http;
pub mod metrics;
pub mod schema;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod volume;
pub mod worker;
