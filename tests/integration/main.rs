//! segwatch's integration tests, one binary (one link, one run) with a module
//! per subject. The service tests need PostgreSQL (`SEGWATCH_TEST_ADMIN_URL`,
//! default postgres://postgres@127.0.0.1:5432/postgres); each test creates its
//! own database.

mod cli_eval;
mod common;
mod compare;
mod dicom_eval;
mod dicom_seg;
mod dicomweb;
mod drift;
mod drift_api;
mod drift_metrics;
mod gate;
mod history;
mod leases;
mod metrics_detail;
mod nifti_files;
mod probabilistic;
mod probabilistic_service;
mod probability_upload;
mod properties;
mod readers;
mod reference;
mod retention;
mod service;
mod shadow;
mod upgrade;
