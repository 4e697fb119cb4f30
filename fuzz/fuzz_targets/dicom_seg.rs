//! Any bytes given to the DICOM SEG decoder return segments or an error, never a
//! panic, a hang or an allocation beyond the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segwatch_engine::formats::{Limits, dicom_seg};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_voxels: 1 << 20,
        max_bytes: 8 << 20,
    };
    if let Ok(image) = dicom_seg::decode(data, &limits) {
        for segment in &image.segments {
            assert!(segment.mask.voxels() <= image.grid.len() as u64);
        }
    }
});
