//! segwatch's engine: label volumes on their grids, NIfTI and DICOM SEG
//! decoding and de-identification, segmentation metrics (overlap, surface
//! distances, surface Dice), structure schemas, drift detection and the
//! statistics of comparing and gating model versions.
//!
//! Pure by construction: this crate depends on no async runtime, database or
//! HTTP crate, so the service (`segwatch`) and any other program can use it as
//! a library ([`arrays`] scores label images held as `ndarray` arrays). The
//! metric definitions are in `docs/metrics.md`, the drift method in
//! `docs/drift.md`, the comparison statistics in `docs/compare.md`.

#![deny(missing_docs)]

pub mod arrays;
pub mod compare;
pub mod drift;
pub mod formats;
pub mod metrics;
pub mod schema;
pub mod volume;
