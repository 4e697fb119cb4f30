//! Decoding segmentation files into label volumes, with size limits checked on
//! headers before anything large is allocated.

pub mod deidentify;
pub mod dicom_seg;
mod dicom_structure;
pub mod nifti;
pub mod probability_nifti;
mod rle;

use std::path::Path;

use crate::volume::Segmentation;

/// Largest DICOM file read or rewritten, in bytes, whatever the [`Limits`].
pub(crate) const MAX_FILE_BYTES: usize = 2 << 30;

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
    /// The file could not be opened or read.
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    /// The gzip stream (of a `.nii.gz`) is corrupt.
    #[error("corrupt gzip data: {0}")]
    Gzip(String),
    /// The data ends before the header, data set or voxel data it declares.
    #[error("truncated file: {0}")]
    Truncated(String),
    /// Not a single-file NIfTI-1/2: wrong `sizeof_hdr` or magic, or a detached `.hdr`/`.img` pair.
    #[error("not a NIfTI file: {0}")]
    NotNifti(String),
    /// A NIfTI header field is unusable (dimensions, `vox_offset`, affine, …).
    #[error("invalid header: {0}")]
    Header(String),
    /// The NIfTI datatype cannot hold integer labels (complex, RGB, float128, unknown),
    /// or a probability file is not float32 or float64.
    #[error("unsupported datatype: {0}")]
    Datatype(String),
    /// The image exceeds the [`Limits`] or the file-size cap, or does not fit in memory.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A voxel holds no valid label (negative, non-integer, non-finite or above
    /// 65535), or a probability file's voxel no probability (non-finite, outside 0 to 1).
    #[error("invalid voxel value: {0}")]
    Value(String),
    /// The DICOM data set is malformed or misses a required attribute.
    #[error("invalid DICOM: {0}")]
    Dicom(String),
    /// A DICOM file whose SOP class is not (Label Map) Segmentation Storage.
    #[error("not a DICOM segmentation: {0}")]
    NotSegmentation(String),
    /// A DICOM transfer syntax other than native, deflated, big-endian or RLE.
    #[error("unsupported transfer syntax: {0}")]
    TransferSyntax(String),
    /// NumberOfFrames disagrees with the per-frame groups or the pixel data.
    #[error("frame count mismatch: {0}")]
    FrameCount(String),
    /// The SEG's frames do not form one regular grid (orientation, in-plane shift, slice spacing).
    #[error("inconsistent geometry: {0}")]
    Geometry(String),
}

/// Reads a segmentation file (NIfTI or DICOM SEG), choosing the decoder by content.
pub fn read_path(path: &Path, limits: &Limits) -> Result<Segmentation, FormatError> {
    let mut file = std::fs::File::open(path)?;
    let mut head = [0u8; 132];
    let n = std::io::Read::read(&mut file, &mut head)?;
    if is_dicom(&head[..n]) {
        drop(file);
        let bytes = std::fs::read(path)?;
        return Ok(dicom_seg::decode(&bytes, limits)?.into_segmentation());
    }
    Ok(Segmentation::LabelMap(nifti::read_path(path, limits)?))
}

/// Decodes a segmentation held in memory (NIfTI or DICOM SEG).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Segmentation, FormatError> {
    if is_dicom(bytes) {
        Ok(dicom_seg::decode(bytes, limits)?.into_segmentation())
    } else {
        Ok(Segmentation::LabelMap(nifti::decode(bytes, limits)?))
    }
}

/// A decoded upload, with what the service keeps about where it came from.
pub struct Decoded {
    /// The decoded label map or segments.
    pub segmentation: Segmentation,
    /// `nifti` or `dicom_seg`.
    pub format: &'static str,
    /// DICOM SEG only.
    pub provenance: Option<dicom_seg::Provenance>,
}

/// Decodes an upload (NIfTI or DICOM SEG), keeping DICOM provenance.
pub fn decode_upload(bytes: &[u8], limits: &Limits) -> Result<Decoded, FormatError> {
    if is_dicom(bytes) {
        let image = dicom_seg::decode(bytes, limits)?;
        let provenance = Some(image.provenance.clone());
        Ok(Decoded {
            segmentation: image.into_segmentation(),
            format: "dicom_seg",
            provenance,
        })
    } else {
        Ok(Decoded {
            segmentation: Segmentation::LabelMap(nifti::decode(bytes, limits)?),
            format: "nifti",
            provenance: None,
        })
    }
}

/// An upper bound of the voxels an upload decodes to, read from its header
/// without decoding (for admission to the compute pool).
pub fn estimated_voxels(bytes: &[u8], limits: &Limits) -> u64 {
    let estimate = if is_dicom(bytes) {
        // 1-bit frames hold 8 voxels a byte.
        bytes.len() as u64 * 8
    } else {
        nifti::declared_voxels(bytes).unwrap_or(bytes.len() as u64)
    };
    estimate.min(limits.max_voxels)
}

/// An upper bound of the bytes a probability file's voxel data inflates to
/// (every channel), read from its header: ingest holds that much while it
/// checks the file, and admits it to the compute pool as that many voxels
/// (a label voxel there stands for about a byte).
pub fn estimated_probability_bytes(bytes: &[u8], limits: &Limits) -> u64 {
    probability_nifti::declared_bytes(bytes)
        .unwrap_or(bytes.len() as u64)
        .min(limits.max_bytes)
}

/// A DICOM Part 10 file: "DICM" after the 128-byte preamble, or at the start.
/// A NIfTI header or a gzip stream is never taken for one, whatever its bytes
/// 128 to 132 happen to hold.
pub fn is_dicom(head: &[u8]) -> bool {
    const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
    if head.starts_with(&GZIP_MAGIC) || nifti::has_signature(head) {
        return false;
    }
    head.get(128..132) == Some(b"DICM") || head.starts_with(b"DICM")
}

#[cfg(test)]
mod sniffing_tests {
    use super::*;
    use crate::volume::{Grid, LabelVolume, Labels};

    #[test]
    fn a_nifti_whose_bytes_128_to_132_spell_dicm_is_read_as_nifti() {
        let grid = Grid::axis_aligned([4, 4, 2], [1.0; 3], 3);
        let volume =
            LabelVolume::new(grid, Labels::U8((0..32).map(|i| (i % 3) as u8).collect())).unwrap();
        // NIfTI-1 cal_min (offset 128) is any float; these bytes read "DICM".
        let mut plain = nifti::encode(&volume, false);
        plain[128..132].copy_from_slice(b"DICM");
        assert!(!is_dicom(&plain));
        match decode(&plain, &Limits::default()).unwrap() {
            Segmentation::LabelMap(decoded) => assert_eq!(decoded.labels, volume.labels),
            other => panic!("{other:?}"),
        }
        let gzipped = nifti::encode(&volume, true);
        assert!(!is_dicom(&gzipped));
    }
}
