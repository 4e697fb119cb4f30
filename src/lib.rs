//! segwatch: watches deployed medical-image segmentation models by scoring their
//! output against radiologists' corrections. See DESIGN.md for the architecture.

pub mod cli;
pub mod formats;
pub mod metrics;
pub mod schema;
pub mod volume;
