#!/usr/bin/env python3
"""Write bench/data/ref_seg.dcm: the label map bench/data/ref.nii.gz as a BINARY
DICOM SEG (highdicom), one segment per label 1..10, empty frames omitted.

The source "CT" series is synthetic: 300 header-only pydicom datasets (no pixel
data) on the NIfTI's grid, 512 rows x 512 columns, pixel spacing 0.8 mm, slice
spacing 1.5 mm. Every UID and date is fixed, so the output is byte-identical from
run to run. Run bench/make_ct_pair.py first.

Usage: make_big_seg.py [--ref bench/data/ref.nii.gz] [--out bench/data/ref_seg.dcm]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import _venv

_venv.ensure()

import highdicom as hd  # noqa: E402  (after the venv check, on purpose)
import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DATE, TIME = "20240101", "120000"

# label -> (segment label, segmented property type); category: anatomical structure.
SEGMENTS = {
    1: ("liver", codes.SCT.Liver), 2: ("spleen", codes.SCT.Spleen),
    3: ("kidney_right", codes.SCT.Kidney), 4: ("kidney_left", codes.SCT.Kidney),
    5: ("pancreas", codes.SCT.Pancreas), 6: ("aorta", codes.SCT.Aorta),
    7: ("gallbladder", codes.SCT.Gallbladder), 8: ("urinary_bladder", codes.SCT.Bladder),
    9: ("adrenal_right", codes.SCT.AdrenalGland), 10: ("adrenal_left", codes.SCT.AdrenalGland),
}


def uid(name: str) -> str:
    """A fixed UID for `name`: the 2.25 (UUID-derived) form, no registered root needed."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'segwatch-bench/ref_seg/' + name).int}"


def mm(x) -> float:
    """A float32 header value as a short decimal (0.8, not 0.80000001192093)."""
    return round(float(x), 5)


def source_ct(affine_ras: np.ndarray, shape) -> list[Dataset]:
    """Header-only CT slices on the NIfTI grid. NIfTI voxel (i, j, k) is pixel
    (row j, column i) of slice k; the affine goes from RAS to DICOM's LPS."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    slices = []
    for k in range(shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid(f"3.{k + 1}")
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("1"), uid("2")
        ds.FrameOfReferenceUID = uid("4")
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "SEGWATCH", "Bench^Synthetic", "", "O"
        ds.StudyID, ds.AccessionNumber, ds.StudyDate, ds.StudyTime = "1", "", DATE, TIME
        ds.ReferringPhysicianName, ds.Modality, ds.Manufacturer = "", "CT", "segwatch-bench"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.Rows, ds.Columns = shape[1], shape[0]
        ds.PixelSpacing = [mm(spacing[1]), mm(spacing[0])]            # row, column spacing
        ds.SliceThickness = ds.SpacingBetweenSlices = mm(spacing[2])
        ds.ImageOrientationPatient = [mm(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [mm(v) for v in lps[:3, :3] @ [0, 0, k] + lps[:3, 3]]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        slices.append(ds)
    return slices


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default=os.path.join(DATA, "ref.nii.gz"))
    ap.add_argument("--out", default=os.path.join(DATA, "ref_seg.dcm"))
    args = ap.parse_args()
    t0 = time.perf_counter()

    img = nib.load(args.ref)
    labels = np.asarray(img.dataobj).astype(np.uint8)
    frames = np.ascontiguousarray(labels.transpose(2, 1, 0))         # (slice, row, column)
    sources = source_ct(img.affine, labels.shape)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=name,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=code,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, (name, code) in SEGMENTS.items()
    ]
    t_in = time.perf_counter()

    # Label-map style input: highdicom splits it into one binary mask per segment.
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uid("5"), series_number=100,
        sop_instance_uid=uid("6"), instance_number=1,
        manufacturer="segwatch-bench", manufacturer_model_name="make_big_seg.py",
        software_versions=f"highdicom {hd.__version__}", device_serial_number="1",
        content_date=DATE, content_time=TIME, omit_empty_frames=True,
    )
    # highdicom stamps creation/contribution times and a random dimension
    # organisation UID: pin them so the file is deterministic.
    seg.InstanceCreationDate, seg.InstanceCreationTime = DATE, TIME
    seg.SeriesDate, seg.SeriesTime = DATE, TIME
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DATE + TIME
    for item in [*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence]:
        item.DimensionOrganizationUID = uid("7")
    t_seg = time.perf_counter()

    seg.save_as(args.out)
    t_all = time.perf_counter() - t0
    print(f"{args.out}: {seg.NumberOfFrames} frames {seg.Rows}x{seg.Columns}, "
          f"{len(SEGMENTS)} segments, {os.path.getsize(args.out) / 1e6:.1f} MB")
    print(f"read+prepare {t_in - t0:.1f} s, highdicom encode {t_seg - t_in:.1f} s, "
          f"write {t_all - (t_seg - t0):.1f} s, total {t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
