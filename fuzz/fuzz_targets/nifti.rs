//! Any bytes given to the NIfTI decoder return a volume or an error, never a panic,
//! a hang or an allocation beyond the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segwatch_engine::formats::{Limits, nifti};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_voxels: 1 << 20,
        max_bytes: 8 << 20,
    };
    if let Ok(volume) = nifti::decode(data, &limits) {
        assert_eq!(volume.labels.len(), volume.grid.len());
        assert!(volume.grid.spacing.iter().all(|s| s.is_finite() && *s > 0.0));
    }
});
