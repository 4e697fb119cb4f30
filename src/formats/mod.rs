//! Decoding segmentation files into label volumes, with size limits checked on
//! headers before anything large is allocated.

pub mod nifti;

use std::path::Path;

use crate::volume::LabelVolume;

/// Caps on what a decoder will allocate, checked against headers before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest number of voxels in one image.
    pub max_voxels: u64,
    /// Largest decompressed voxel data in bytes.
    pub max_bytes: u64,
}

impl Default for Limits {
    /// 512 × 512 × 2048 voxels and 2 GiB of voxel data.
    fn default() -> Self {
        Limits {
            max_voxels: 512 * 512 * 2048,
            max_bytes: 2 << 30,
        }
    }
}

/// What is wrong with an input file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt gzip data: {0}")]
    Gzip(String),
    #[error("truncated file: {0}")]
    Truncated(String),
    #[error("not a NIfTI file: {0}")]
    NotNifti(String),
    #[error("invalid header: {0}")]
    Header(String),
    #[error("unsupported datatype: {0}")]
    Datatype(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("invalid voxel value: {0}")]
    Value(String),
}

/// Reads a label image from a file, choosing the decoder by content.
pub fn read_path(path: &Path, limits: &Limits) -> Result<LabelVolume, FormatError> {
    nifti::read_path(path, limits)
}
