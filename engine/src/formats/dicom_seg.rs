//! DICOM Segmentation objects: BINARY, FRACTIONAL and LABELMAP, native, deflated,
//! big-endian or RLE-encoded, decoded into one mask per segment on the slice grid.
//!
//! The data set is parsed with dicom-object; pixel data is unpacked here because
//! the DICOM crates do not decode 1-bit frames packed across byte boundaries.
//! Segments are identified by their coded property type (plus modifier). Patient
//! name, ID and birth date are never read into any structure.

use std::collections::BTreeMap;

use dicom_core::Tag;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use serde::Serialize;

use super::dicom_structure::{self, Encoding, Problem};
use super::{FormatError, Limits};
use crate::volume::{BoundingBox, BoxMask, FractionMap, Grid, Segment, Segmentation};

/// Largest SEG file accepted, in bytes, before parsing.
const MAX_FILE_BYTES: usize = 2 << 30;
/// Geometry tolerance between frames, in mm.
const POSITION_TOLERANCE_MM: f64 = 1e-3;
/// Smallest slice spacing accepted, in mm.
const MIN_SLICE_SPACING_MM: f64 = 1e-3;
/// Orientation tolerance between frames (difference of direction cosines).
const ORIENTATION_TOLERANCE: f64 = 1e-4;

const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const LABEL_MAP_SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.7";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
/// Transfer syntaxes whose pixel data is stored natively (or inflated by the parser).
const NATIVE_SYNTAXES: [&str; 4] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
];
/// Code of the LABELMAP background segment.
const BACKGROUND_CODE: &str = "DCM:125040";

/// How a SEG stores its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SegKind {
    /// SegmentationType BINARY: one 1-bit frame per segment and slice.
    Binary,
    /// SegmentationType FRACTIONAL: 8-bit probability or occupancy per voxel.
    Fractional,
    /// Label Map Segmentation: one frame per slice, pixel value = SegmentNumber.
    Labelmap,
}

/// Where a SEG comes from: what the service keeps about it. No patient data.
/// Text fields are trimmed, and None when the attribute is absent or empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Provenance {
    /// SOPInstanceUID of the SEG itself.
    pub sop_instance_uid: Option<String>,
    /// StudyInstanceUID.
    pub study_instance_uid: Option<String>,
    /// SeriesInstanceUID of the SEG's own series.
    pub series_instance_uid: Option<String>,
    /// SeriesInstanceUID of the first ReferencedSeriesSequence item: the segmented image series.
    pub referenced_series_instance_uid: Option<String>,
    /// FrameOfReferenceUID: the patient coordinate system of the grid.
    pub frame_of_reference_uid: Option<String>,
    /// AUTOMATIC when every segment is; otherwise the most manual type present.
    pub segment_algorithm_type: Option<String>,
    /// AlgorithmName of the first segment (its algorithm identification, else SegmentAlgorithmName).
    pub algorithm_name: Option<String>,
    /// AlgorithmVersion of the first segment's algorithm identification.
    pub algorithm_version: Option<String>,
    /// Manufacturer of the equipment (or software) that produced the SEG.
    pub manufacturer: Option<String>,
    /// ManufacturerModelName.
    pub manufacturer_model_name: Option<String>,
    /// SoftwareVersions, as stored (possibly several, backslash-separated).
    pub software_versions: Option<String>,
    /// SeriesDescription.
    pub series_description: Option<String>,
    /// ContentLabel.
    pub content_label: Option<String>,
    /// BodyPartExamined.
    pub body_part_examined: Option<String>,
    /// ProtocolName.
    pub protocol_name: Option<String>,
    /// SliceThickness from the pixel measures, in mm; None when absent or not positive.
    pub slice_thickness_mm: Option<f64>,
}

/// A decoded SEG: its segments on the grid its frames span.
#[derive(Debug, Clone, PartialEq)]
pub struct SegImage {
    /// x = columns, y = rows, z = slices in increasing order along the normal;
    /// RAS affine.
    pub grid: Grid,
    /// How the segments were stored.
    pub kind: SegKind,
    /// The segments in SegmentSequence order, LABELMAP background left out.
    pub segments: Vec<Segment>,
    /// Where the SEG comes from.
    pub provenance: Provenance,
    /// Segmentation or Label Map Segmentation Storage.
    pub sop_class_uid: String,
}

impl SegImage {
    /// The segments on their grid, without provenance.
    pub fn into_segmentation(self) -> Segmentation {
        Segmentation::Segments {
            grid: self.grid,
            segments: self.segments,
        }
    }
}

fn invalid(what: impl Into<String>) -> FormatError {
    FormatError::Dicom(what.into())
}

/// The Part 10 stream of a file, from its "DICM" prefix, after checking its
/// size. Files start with a 128-byte preamble and "DICM"; streams may omit
/// the preamble.
pub(super) fn part10_body(bytes: &[u8]) -> Result<&[u8], FormatError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(FormatError::TooLarge(format!(
            "{} bytes, more than {MAX_FILE_BYTES}",
            bytes.len()
        )));
    }
    let body = if bytes.get(128..132) == Some(b"DICM") {
        &bytes[128..]
    } else {
        bytes
    };
    if !body.starts_with(b"DICM") {
        return Err(invalid("no DICM prefix: not a DICOM Part 10 file"));
    }
    Ok(body)
}

/// Decodes a DICOM SEG held in memory.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<SegImage, FormatError> {
    let body = part10_body(bytes)?;
    check_structure(body, limits)?;
    let object = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(body)
        .map_err(read_error)?;
    let syntax = object
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    let sop_class = text(&object, tags::SOP_CLASS_UID).unwrap_or_default();
    if sop_class != SEGMENTATION_STORAGE && sop_class != LABEL_MAP_SEGMENTATION_STORAGE {
        return Err(FormatError::NotSegmentation(format!(
            "SOP class {sop_class} (modality {}) is not a Segmentation",
            text(&object, tags::MODALITY).unwrap_or_default()
        )));
    }
    let encapsulated = if NATIVE_SYNTAXES.contains(&syntax.as_str()) {
        false
    } else if syntax == RLE_LOSSLESS {
        true
    } else {
        return Err(FormatError::TransferSyntax(format!(
            "{syntax}; segwatch reads native, deflated, big-endian and RLE SEGs"
        )));
    };
    Seg::parse(&object, encapsulated, limits)?.decode()
}

/// Room for a data set's attributes beside its voxel data when a deflated
/// data set is inflated.
const DATA_SET_ALLOWANCE: u64 = 1 << 20;

/// Checks the data set's structure before the DICOM parser sees it, so that
/// parsing is bounded; a deflated data set may inflate to at most the voxel
/// data limit (plus room for its attributes).
pub(super) fn check_structure(body: &[u8], limits: &Limits) -> Result<(), FormatError> {
    let to_error = |problem| match problem {
        Problem::Truncated(m) => FormatError::Truncated(m),
        Problem::Malformed(m) => invalid(m),
    };
    dicom_structure::check_meta_group(&body[4..]).map_err(to_error)?;
    let mut data_set = body;
    let meta = dicom_object::FileMetaTable::from_reader(&mut data_set)
        .map_err(|e| invalid(format!("file meta group: {e}")))?;
    let syntax = meta.transfer_syntax().trim_end_matches('\0');
    let encoding = Encoding {
        explicit_vr: syntax != IMPLICIT_VR_LITTLE_ENDIAN,
        big_endian: syntax == EXPLICIT_VR_BIG_ENDIAN,
    };
    let inflated;
    let data_set = if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        let cap = limits
            .max_bytes
            .saturating_add(DATA_SET_ALLOWANCE)
            .min(MAX_FILE_BYTES as u64);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(flate2::read::DeflateDecoder::new(data_set), cap + 1),
            &mut bytes,
        )
        .map_err(|e| invalid(format!("deflated data set: {e}")))?;
        if bytes.len() as u64 > cap {
            return Err(FormatError::TooLarge(format!(
                "the deflated data set inflates to more than {cap} bytes"
            )));
        }
        inflated = bytes;
        &inflated[..]
    } else {
        data_set
    };
    dicom_structure::check(data_set, encoding).map_err(to_error)
}

/// SOPClassUID and SOPInstanceUID of a DICOM file, when it is readable that far
/// (for reporting on files that do not decode as SEGs).
pub fn instance_uids(bytes: &[u8]) -> (Option<String>, Option<String>) {
    let body = if bytes.get(128..132) == Some(b"DICM") {
        &bytes[128..]
    } else {
        bytes
    };
    if !body.starts_with(b"DICM") || check_structure(body, &Limits::default()).is_err() {
        return (None, None);
    }
    match OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(body)
    {
        Ok(object) => (
            text(&object, tags::SOP_CLASS_UID),
            text(&object, tags::SOP_INSTANCE_UID),
        ),
        Err(_) => (None, None),
    }
}

/// dicom-object reports truncation as a failure to read a token or value.
fn read_error(err: dicom_object::ReadError) -> FormatError {
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    if chain.contains("failed to fill whole buffer")
        || chain.to_lowercase().contains("unexpected end")
    {
        FormatError::Truncated(format!("the DICOM data set ends early ({chain})"))
    } else if chain.contains("ransfer syntax") {
        FormatError::TransferSyntax(chain)
    } else {
        invalid(chain)
    }
}

fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = object.element_opt(tag).ok()??.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
}

fn number<T: TryFrom<i64>>(object: &InMemDicomObject, tag: Tag) -> Option<T> {
    let value = object.element_opt(tag).ok()??.to_int::<i64>().ok()?;
    T::try_from(value).ok()
}

fn floats(object: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let values = object.element_opt(tag).ok()??.to_multi_float64().ok()?;
    values.iter().all(|v| v.is_finite()).then_some(values)
}

/// SpacingBetweenSlices when given: a value that is not a positive finite
/// number is refused rather than ignored.
fn declared_spacing(measures: &InMemDicomObject) -> Result<Option<f64>, FormatError> {
    let Some(element) = measures
        .element_opt(tags::SPACING_BETWEEN_SLICES)
        .ok()
        .flatten()
    else {
        return Ok(None);
    };
    let text = element.to_str().unwrap_or_default();
    if text.trim().is_empty() {
        return Ok(None);
    }
    match floats(measures, tags::SPACING_BETWEEN_SLICES).and_then(|v| v.first().copied()) {
        Some(s) if s > 0.0 => Ok(Some(s)),
        _ => Err(FormatError::Geometry(format!(
            "SpacingBetweenSlices (0018,0088) is {:?}: it must be a positive number of mm",
            text.trim()
        ))),
    }
}

fn items(object: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    object.element_opt(tag).ok()??.items()
}

fn first_item(object: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    items(object, tag)?.first()
}

/// `SCHEME:VALUE` of the first item of a code sequence.
fn code_of(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let item = first_item(object, tag)?;
    let scheme = text(item, tags::CODING_SCHEME_DESIGNATOR)?;
    let value = text(item, tags::CODE_VALUE)
        .or_else(|| text(item, tags::LONG_CODE_VALUE))
        .or_else(|| text(item, tags::URN_CODE_VALUE))?;
    Some(format!("{scheme}:{value}"))
}

/// Segment identity from a SegmentSequence item.
struct SegmentInfo {
    number: u16,
    code: String,
    name: Option<String>,
    algorithm_type: Option<String>,
}

impl SegmentInfo {
    fn parse(item: &InMemDicomObject) -> Result<Self, FormatError> {
        let number = number::<u16>(item, tags::SEGMENT_NUMBER)
            .ok_or_else(|| invalid("a segment has no SegmentNumber"))?;
        let property =
            first_item(item, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE).ok_or_else(|| {
                invalid(format!(
                    "segment {number} has no SegmentedPropertyTypeCodeSequence"
                ))
            })?;
        let mut code =
            code_of(item, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE).ok_or_else(|| {
                invalid(format!(
                    "segment {number} has an incomplete property type code"
                ))
            })?;
        let modifier = code_of(
            property,
            tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE,
        )
        .or_else(|| code_of(item, tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE));
        if let Some(modifier) = modifier {
            code = format!("{code}^{modifier}");
        }
        Ok(SegmentInfo {
            number,
            code,
            name: text(item, tags::SEGMENT_LABEL),
            algorithm_type: text(item, tags::SEGMENT_ALGORITHM_TYPE),
        })
    }
}

/// Per-frame geometry and segment reference.
struct Frame {
    position: [f64; 3],
    orientation: [f64; 6],
    segment: Option<u16>,
}

/// Everything needed to decode the pixel data, read from the data set.
struct Seg<'a> {
    object: &'a InMemDicomObject,
    kind: SegKind,
    rows: usize,
    columns: usize,
    frames: Vec<Frame>,
    segments: Vec<SegmentInfo>,
    pixel_spacing: [f64; 2],
    spacing_between_slices: Option<f64>,
    slice_thickness: Option<f64>,
    max_fraction: u16,
    bits_allocated: usize,
    encapsulated: bool,
    limits: Limits,
}

impl<'a> Seg<'a> {
    fn parse(
        object: &'a InMemDicomObject,
        encapsulated: bool,
        limits: &Limits,
    ) -> Result<Self, FormatError> {
        let kind = match text(object, tags::SEGMENTATION_TYPE).as_deref() {
            Some("BINARY") => SegKind::Binary,
            Some("FRACTIONAL") => SegKind::Fractional,
            Some("LABELMAP") => SegKind::Labelmap,
            Some(other) => return Err(invalid(format!("unknown SegmentationType {other}"))),
            None => return Err(invalid("missing SegmentationType")),
        };
        let rows = number::<usize>(object, tags::ROWS)
            .filter(|&r| r > 0)
            .ok_or_else(|| invalid("missing or zero Rows"))?;
        let columns = number::<usize>(object, tags::COLUMNS)
            .filter(|&c| c > 0)
            .ok_or_else(|| invalid("missing or zero Columns"))?;
        let frame_count = number::<usize>(object, tags::NUMBER_OF_FRAMES).unwrap_or(1);
        let voxels = (rows as u64) * (columns as u64) * (frame_count as u64);
        if voxels > limits.max_voxels {
            return Err(FormatError::TooLarge(format!(
                "{frame_count} frames of {rows} × {columns} exceed the limit of {} voxels",
                limits.max_voxels
            )));
        }
        let bits_allocated = number::<usize>(object, tags::BITS_ALLOCATED).unwrap_or(0);
        let expected_bits: &[usize] = match kind {
            SegKind::Binary => &[1],
            SegKind::Fractional => &[8],
            SegKind::Labelmap => &[8, 16],
        };
        if !expected_bits.contains(&bits_allocated) {
            return Err(invalid(format!(
                "BitsAllocated {bits_allocated} does not fit a {kind:?} segmentation"
            )));
        }
        let segment_items = items(object, tags::SEGMENT_SEQUENCE)
            .ok_or_else(|| invalid("missing SegmentSequence"))?;
        let segments = segment_items
            .iter()
            .map(SegmentInfo::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let shared = first_item(object, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
        let per_frame = items(object, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .ok_or_else(|| invalid("missing PerFrameFunctionalGroupsSequence"))?;
        if per_frame.len() != frame_count {
            return Err(FormatError::FrameCount(format!(
                "NumberOfFrames is {frame_count} but PerFrameFunctionalGroupsSequence has {} items",
                per_frame.len()
            )));
        }
        // A functional group from the frame's own groups, else the shared ones.
        let group = |frame: &'a InMemDicomObject, tag: Tag| {
            first_item(frame, tag).or_else(|| shared.and_then(|s| first_item(s, tag)))
        };
        let measures = shared
            .and_then(|s| first_item(s, tags::PIXEL_MEASURES_SEQUENCE))
            .or_else(|| {
                per_frame
                    .first()
                    .and_then(|f| first_item(f, tags::PIXEL_MEASURES_SEQUENCE))
            })
            .ok_or_else(|| invalid("missing PixelMeasuresSequence"))?;
        let pixel_spacing = floats(measures, tags::PIXEL_SPACING)
            .filter(|v| v.len() == 2 && v.iter().all(|&s| s > 0.0))
            .ok_or_else(|| invalid("missing or invalid PixelSpacing"))?;
        let frames = per_frame
            .iter()
            .enumerate()
            .map(|(i, frame)| {
                let position = group(frame, tags::PLANE_POSITION_SEQUENCE)
                    .and_then(|g| floats(g, tags::IMAGE_POSITION_PATIENT))
                    .filter(|v| v.len() == 3)
                    .ok_or_else(|| {
                        invalid(format!("frame {} has no ImagePositionPatient", i + 1))
                    })?;
                let orientation = group(frame, tags::PLANE_ORIENTATION_SEQUENCE)
                    .and_then(|g| floats(g, tags::IMAGE_ORIENTATION_PATIENT))
                    .filter(|v| v.len() == 6)
                    .ok_or_else(|| {
                        invalid(format!("frame {} has no ImageOrientationPatient", i + 1))
                    })?;
                let segment = group(frame, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
                    .and_then(|g| number::<u16>(g, tags::REFERENCED_SEGMENT_NUMBER));
                if kind != SegKind::Labelmap && segment.is_none() {
                    return Err(invalid(format!("frame {} names no segment", i + 1)));
                }
                Ok(Frame {
                    position: [position[0], position[1], position[2]],
                    orientation: std::array::from_fn(|k| orientation[k]),
                    segment,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_fraction = number::<u16>(object, tags::MAXIMUM_FRACTIONAL_VALUE).unwrap_or(255);
        if kind == SegKind::Fractional && max_fraction == 0 {
            return Err(invalid("MaximumFractionalValue is 0"));
        }
        Ok(Seg {
            object,
            kind,
            rows,
            columns,
            frames,
            segments,
            pixel_spacing: [pixel_spacing[0], pixel_spacing[1]],
            spacing_between_slices: declared_spacing(measures)?,
            slice_thickness: floats(measures, tags::SLICE_THICKNESS)
                .and_then(|v| v.first().copied())
                .filter(|&s| s > 0.0),
            max_fraction,
            bits_allocated,
            encapsulated,
            limits: *limits,
        })
    }

    /// Places frames on a regular slice lattice and builds the grid.
    fn geometry(&self) -> Result<(Grid, Vec<usize>), FormatError> {
        let first = self
            .frames
            .first()
            .ok_or_else(|| invalid("the SEG has no frames"))?;
        let o = first.orientation;
        for (i, f) in self.frames.iter().enumerate() {
            if (0..6).any(|k| (f.orientation[k] - o[k]).abs() > ORIENTATION_TOLERANCE) {
                return Err(FormatError::Geometry(format!(
                    "frame {} has orientation {:?}, frame 1 {:?}: mixed orientations",
                    i + 1,
                    f.orientation,
                    o
                )));
            }
        }
        let row_cosine = [o[0], o[1], o[2]];
        let column_cosine = [o[3], o[4], o[5]];
        if let Some(why) = orientation_problem(row_cosine, column_cosine) {
            return Err(FormatError::Geometry(format!(
                "ImageOrientationPatient {o:?}: {why}"
            )));
        }
        let normal = cross(row_cosine, column_cosine);
        let along = |p: [f64; 3], axis: [f64; 3]| p[0] * axis[0] + p[1] * axis[1] + p[2] * axis[2];
        for (i, f) in self.frames.iter().enumerate() {
            let drift = [row_cosine, column_cosine]
                .map(|axis| along(f.position, axis) - along(first.position, axis));
            if drift.iter().any(|d| d.abs() > POSITION_TOLERANCE_MM) {
                return Err(FormatError::Geometry(format!(
                    "frame {} is shifted by {:.4} mm within the image plane",
                    i + 1,
                    drift[0].hypot(drift[1])
                )));
            }
        }
        let depths: Vec<f64> = self
            .frames
            .iter()
            .map(|f| along(f.position, normal))
            .collect();
        let lowest = depths.iter().copied().fold(f64::INFINITY, f64::min);
        let mut distinct: Vec<f64> = depths.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup_by(|a, b| (*a - *b).abs() <= POSITION_TOLERANCE_MM);
        let spacing = match self.spacing_between_slices {
            Some(s) => s,
            None => distinct
                .windows(2)
                .map(|w| w[1] - w[0])
                .fold(f64::INFINITY, f64::min)
                .min(f64::INFINITY),
        };
        let spacing = if spacing.is_finite() {
            spacing
        } else {
            self.slice_thickness.unwrap_or(1.0)
        };
        if !(spacing.is_finite() && spacing >= MIN_SLICE_SPACING_MM) {
            return Err(FormatError::Geometry(format!(
                "slice spacing {spacing} mm is not usable"
            )));
        }
        // Checked in floating point before any index is formed, so far-apart frames
        // cannot overflow the slice count.
        let plane = (self.rows * self.columns) as f64;
        let span = depths
            .iter()
            .fold(0.0f64, |m, d| m.max((d - lowest) / spacing))
            .round()
            + 1.0;
        if !span.is_finite() || plane * span > self.limits.max_voxels as f64 {
            return Err(FormatError::TooLarge(format!(
                "the frames span {span} slices of {} × {}, more than the limit of {} voxels",
                self.rows, self.columns, self.limits.max_voxels
            )));
        }
        let mut slices = Vec::with_capacity(depths.len());
        for (i, d) in depths.iter().enumerate() {
            let steps = (d - lowest) / spacing;
            if (steps - steps.round()).abs() * spacing > POSITION_TOLERANCE_MM.max(1e-3 * spacing) {
                return Err(FormatError::Geometry(format!(
                    "frame {} lies {:.4} mm from the slice lattice of spacing {spacing} mm: inconsistent slice spacing",
                    i + 1,
                    (steps - steps.round()).abs() * spacing
                )));
            }
            slices.push(steps.round() as usize);
        }
        let slice_count = span as usize;
        let origin_lps: [f64; 3] =
            std::array::from_fn(|k| first.position[k] - (depths[0] - lowest) * normal[k]);
        // LPS to RAS: negate the first two world coordinates.
        let ras = |v: [f64; 3]| [-v[0], -v[1], v[2]];
        let (dx, dy) = (self.pixel_spacing[1], self.pixel_spacing[0]);
        let columns = [
            ras(row_cosine).map(|c| c * dx),
            ras(column_cosine).map(|c| c * dy),
            ras(normal).map(|c| c * spacing),
        ];
        let origin = ras(origin_lps);
        let affine =
            std::array::from_fn(|r| [columns[0][r], columns[1][r], columns[2][r], origin[r]]);
        let grid = Grid {
            shape: [self.columns, self.rows, slice_count],
            spacing: [dx, dy, spacing],
            affine,
            dims: 3,
        };
        if let Some(why) = grid.degeneracy() {
            return Err(FormatError::Geometry(format!(
                "PixelSpacing and slice spacing give an unusable grid: {why}"
            )));
        }
        Ok((grid, slices))
    }

    /// The pixel data, checked against the frame count.
    fn pixel_data(&self) -> Result<PixelData<'a>, FormatError> {
        let pixels = self.rows * self.columns;
        let frames = self.frames.len();
        let element = self
            .object
            .element_opt(tags::PIXEL_DATA)
            .ok()
            .flatten()
            .ok_or_else(|| invalid("missing PixelData"))?;
        if self.encapsulated {
            let Value::PixelSequence(sequence) = element.value() else {
                return Err(invalid(
                    "RLE transfer syntax but the pixel data is not encapsulated",
                ));
            };
            let fragments = sequence.fragments();
            if fragments.len() != frames {
                return Err(FormatError::FrameCount(format!(
                    "NumberOfFrames is {frames} but the pixel data has {} RLE fragments",
                    fragments.len()
                )));
            }
            return Ok(PixelData::Rle(fragments));
        }
        let Value::Primitive(value) = element.value() else {
            return Err(invalid(
                "encapsulated pixel data in a native transfer syntax",
            ));
        };
        let data = match value {
            PrimitiveValue::U8(bytes) => PixelData::Bytes(bytes),
            PrimitiveValue::U16(words) if self.bits_allocated == 16 => PixelData::Words(words),
            // OW pixel data of byte-sized samples is a little-endian byte stream.
            PrimitiveValue::U16(words) => {
                PixelData::OwnedBytes(words.iter().flat_map(|w| w.to_le_bytes()).collect())
            }
            _ => return Err(invalid("PixelData has an unexpected value representation")),
        };
        let have = match &data {
            PixelData::Bytes(b) => b.len(),
            PixelData::OwnedBytes(b) => b.len(),
            PixelData::Words(w) => 2 * w.len(),
            PixelData::Rle(_) => 0,
        };
        let need = match self.bits_allocated {
            1 => (frames * pixels).div_ceil(8),
            bits => frames * pixels * bits / 8,
        };
        if have < need {
            return Err(FormatError::FrameCount(format!(
                "NumberOfFrames is {frames} but the pixel data holds {have} of the {need} bytes they need"
            )));
        }
        Ok(data)
    }

    /// Writes the non-zero pixels of frame `f` as (pixel index, value) into `out`
    /// (BINARY: value 1).
    fn nonzero_pixels(
        &self,
        data: &PixelData,
        f: usize,
        out: &mut Vec<(usize, u16)>,
    ) -> Result<(), FormatError> {
        let pixels = self.rows * self.columns;
        out.clear();
        let keep = |out: &mut Vec<(usize, u16)>, values: &mut dyn Iterator<Item = u16>| {
            out.extend(values.enumerate().filter(|(_, v)| *v != 0));
        };
        match (data, self.bits_allocated) {
            (PixelData::Rle(fragments), bits) => {
                let values = super::rle::decode_frame(&fragments[f], pixels, bits)
                    .map_err(|e| invalid(format!("frame {}: {e}", f + 1)))?;
                keep(out, &mut values.into_iter());
            }
            (PixelData::Words(words), _) => keep(
                out,
                &mut words[f * pixels..(f + 1) * pixels].iter().copied(),
            ),
            (PixelData::Bytes(bytes), 1) => set_bits(bytes, f * pixels, pixels, out),
            (PixelData::OwnedBytes(bytes), 1) => set_bits(bytes, f * pixels, pixels, out),
            (PixelData::Bytes(bytes), bits) => {
                keep(out, &mut native_samples(bytes, bits, f, pixels))
            }
            (PixelData::OwnedBytes(bytes), bits) => {
                keep(out, &mut native_samples(bytes, bits, f, pixels))
            }
        }
        Ok(())
    }

    /// Segment slot of each pixel value of frame `f`, or None for background.
    fn slot_of(
        &self,
        known: &BTreeMap<u16, usize>,
        f: usize,
        value: u16,
    ) -> Result<Option<usize>, FormatError> {
        if value == 0 {
            return Ok(None);
        }
        if self.kind == SegKind::Fractional && 2 * (value as u32) < self.max_fraction as u32 {
            return Ok(None);
        }
        let number = match self.kind {
            SegKind::Labelmap => value,
            _ => self.frames[f].segment.unwrap_or_default(),
        };
        known.get(&number).map(|&slot| Some(slot)).ok_or_else(|| {
            invalid(format!(
                "frame {} references segment {number}, which SegmentSequence does not define",
                f + 1
            ))
        })
    }

    fn decode(self) -> Result<SegImage, FormatError> {
        let (grid, slices) = self.geometry()?;
        let data = self.pixel_data()?;
        let known: BTreeMap<u16, usize> = self
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| (s.number, i))
            .collect();
        if known.len() != self.segments.len() {
            return Err(invalid("two segments share a SegmentNumber"));
        }
        let columns = self.columns;
        let at = |i: usize, z: usize| [i % columns, i / columns, z];
        // Pass 1: each segment's box (and, for FRACTIONAL, the box of non-zero values).
        let mut boxes: Vec<Option<BoundingBox>> = vec![None; self.segments.len()];
        let mut soft_boxes: Vec<Option<BoundingBox>> = vec![None; self.segments.len()];
        let mut values = Vec::new();
        for (f, &z) in slices.iter().enumerate() {
            self.nonzero_pixels(&data, f, &mut values)?;
            for &(i, v) in &values {
                let p = BoundingBox::point(at(i, z));
                if self.kind == SegKind::Fractional {
                    let slot = *known
                        .get(&self.frames[f].segment.unwrap_or_default())
                        .ok_or_else(|| {
                            invalid(format!("frame {} references an undefined segment", f + 1))
                        })?;
                    soft_boxes[slot] = BoundingBox::union_opt(soft_boxes[slot], Some(p));
                }
                if let Some(slot) = self.slot_of(&known, f, v)? {
                    boxes[slot] = BoundingBox::union_opt(boxes[slot], Some(p));
                }
            }
        }
        // Pass 2: the voxels.
        let mut masks: Vec<BoxMask> = boxes
            .iter()
            .map(|b| b.map(BoxMask::with_box).unwrap_or_default())
            .collect();
        let mut fractions: Vec<Option<FractionMap>> = soft_boxes
            .iter()
            .map(|b| {
                b.map(|bbox| FractionMap {
                    bbox,
                    values: vec![0; bbox.extent().iter().product()],
                    max: self.max_fraction,
                })
            })
            .collect();
        for (f, &z) in slices.iter().enumerate() {
            self.nonzero_pixels(&data, f, &mut values)?;
            for &(i, v) in &values {
                let p = at(i, z);
                if self.kind == SegKind::Fractional
                    && let Some(slot) = known.get(&self.frames[f].segment.unwrap_or_default())
                    && let Some(map) = &mut fractions[*slot]
                {
                    map.set(p, v.min(u8::MAX as u16) as u8);
                }
                if let Some(slot) = self.slot_of(&known, f, v)? {
                    masks[slot].insert(p);
                }
            }
        }
        let provenance = self.provenance();
        let segments = self
            .segments
            .into_iter()
            .zip(masks.into_iter().zip(fractions))
            .filter(|(info, _)| info.code != BACKGROUND_CODE)
            .map(|(info, (mask, fractions))| Segment {
                number: info.number,
                code: info.code,
                name: info.name,
                algorithm_type: info.algorithm_type,
                mask,
                probabilities: fractions,
            })
            .collect();
        Ok(SegImage {
            grid,
            kind: self.kind,
            segments,
            provenance,
            sop_class_uid: text(self.object, tags::SOP_CLASS_UID).unwrap_or_default(),
        })
    }

    fn provenance(&self) -> Provenance {
        let o = self.object;
        let segment_item = items(o, tags::SEGMENT_SEQUENCE).and_then(|s| s.first());
        let algorithm = segment_item
            .and_then(|s| first_item(s, tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE));
        let types: Vec<&str> = self
            .segments
            .iter()
            .filter_map(|s| s.algorithm_type.as_deref())
            .collect();
        let overall = ["MANUAL", "SEMIAUTOMATIC", "AUTOMATIC"]
            .into_iter()
            .find(|t| types.contains(t));
        Provenance {
            sop_instance_uid: text(o, tags::SOP_INSTANCE_UID),
            study_instance_uid: text(o, tags::STUDY_INSTANCE_UID),
            series_instance_uid: text(o, tags::SERIES_INSTANCE_UID),
            referenced_series_instance_uid: first_item(o, tags::REFERENCED_SERIES_SEQUENCE)
                .and_then(|s| text(s, tags::SERIES_INSTANCE_UID)),
            frame_of_reference_uid: text(o, tags::FRAME_OF_REFERENCE_UID),
            segment_algorithm_type: overall.map(str::to_owned),
            algorithm_name: algorithm
                .and_then(|a| text(a, tags::ALGORITHM_NAME))
                .or_else(|| segment_item.and_then(|s| text(s, tags::SEGMENT_ALGORITHM_NAME))),
            algorithm_version: algorithm.and_then(|a| text(a, tags::ALGORITHM_VERSION)),
            manufacturer: text(o, tags::MANUFACTURER),
            manufacturer_model_name: text(o, tags::MANUFACTURER_MODEL_NAME),
            software_versions: text(o, tags::SOFTWARE_VERSIONS),
            series_description: text(o, tags::SERIES_DESCRIPTION),
            content_label: text(o, tags::CONTENT_LABEL),
            body_part_examined: text(o, tags::BODY_PART_EXAMINED),
            protocol_name: text(o, tags::PROTOCOL_NAME),
            slice_thickness_mm: self.slice_thickness,
        }
    }
}

/// Pixel data as stored: native bytes or words, or one RLE fragment per frame.
enum PixelData<'a> {
    Bytes(&'a [u8]),
    OwnedBytes(Vec<u8>),
    Words(&'a [u16]),
    Rle(&'a [Vec<u8>]),
}

/// The set pixels of a 1-bit frame of `pixels` starting at bit `start`. Frames are
/// packed back to back across byte boundaries, first pixel in the lowest bit; zero
/// bytes are skipped whole.
fn set_bits(bytes: &[u8], start: usize, pixels: usize, out: &mut Vec<(usize, u16)>) {
    let end = start + pixels;
    for byte in start / 8..end.div_ceil(8) {
        let b = bytes[byte];
        if b == 0 {
            continue;
        }
        for bit in 0..8 {
            let index = byte * 8 + bit;
            if (b >> bit) & 1 == 1 && (start..end).contains(&index) {
                out.push((index - start, 1));
            }
        }
    }
}

/// 8- or 16-bit (little-endian) samples of frame `f`.
fn native_samples(
    bytes: &[u8],
    bits: usize,
    f: usize,
    pixels: usize,
) -> Box<dyn Iterator<Item = u16> + '_> {
    if bits == 8 {
        Box::new(
            bytes[f * pixels..(f + 1) * pixels]
                .iter()
                .map(|&b| b as u16),
        )
    } else {
        Box::new(
            bytes[2 * f * pixels..2 * (f + 1) * pixels]
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]])),
        )
    }
}

/// Why a row and a column direction cannot orient an image plane: they must be
/// unit vectors (within 1 %) and orthogonal (within 1 %).
fn orientation_problem(row: [f64; 3], column: [f64; 3]) -> Option<&'static str> {
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let unit = |v: [f64; 3]| (dot(v, v).sqrt() - 1.0).abs() <= 0.01;
    if row.iter().chain(&column).any(|v| !v.is_finite()) {
        Some("not finite")
    } else if !unit(row) || !unit(column) {
        Some("the row and column directions must be unit vectors")
    } else if dot(row, column).abs() > 0.01 {
        Some("the row and column directions must be orthogonal")
    } else {
        None
    }
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_skewed_orientations_are_refused() {
        assert_eq!(orientation_problem([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), None);
        assert!(
            orientation_problem([0.0; 3], [0.0; 3])
                .unwrap()
                .contains("unit")
        );
        assert!(
            orientation_problem([1.0, 0.0, 0.0], [0.6, 0.8, 0.0])
                .unwrap()
                .contains("orthogonal")
        );
        assert!(orientation_problem([f64::NAN, 0.0, 0.0], [0.0, 1.0, 0.0]).is_some());
    }
}

#[cfg(test)]
mod limit_tests {
    use std::io::Write;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dicom");
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn a_deflated_data_set_inflating_past_the_limits_is_too_large() {
        let limits = Limits {
            max_voxels: 1 << 20,
            max_bytes: 1 << 20,
        };
        let file = fixture("ai_binary_deflate.dcm");
        assert!(decode(&file, &limits).is_ok());
        // The same file meta group, then 3 MiB of zeros deflated to a few KB.
        let body = part10_body(&file).unwrap();
        let group_length = u32::from_le_bytes(body[12..16].try_into().unwrap()) as usize;
        let mut bomb = body[..16 + group_length].to_vec();
        let mut deflate =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        deflate.write_all(&vec![0u8; 3 << 20]).unwrap();
        bomb.extend(deflate.finish().unwrap());
        let err = decode(&bomb, &limits).err().unwrap();
        assert!(matches!(err, FormatError::TooLarge(_)), "{err}");
    }

    #[test]
    fn a_spacing_between_slices_that_is_not_positive_is_refused() {
        // Replace the fixture's SpacingBetweenSlices (DS) by bad values of the same length.
        let file = fixture("ai_binary.dcm");
        let tag = [0x18u8, 0x00, 0x88, 0x00, b'D', b'S'];
        let at = file
            .windows(tag.len())
            .position(|w| w == tag)
            .expect("the fixture has SpacingBetweenSlices");
        let length = u16::from_le_bytes([file[at + 6], file[at + 7]]) as usize;
        for bad in ["0", "NaN", "-1"] {
            let mut edited = file.clone();
            let value = &mut edited[at + 8..at + 8 + length];
            value.fill(b' ');
            value[..bad.len()].copy_from_slice(bad.as_bytes());
            let err = decode(&edited, &Limits::default()).err().unwrap();
            assert!(matches!(err, FormatError::Geometry(_)), "{bad}: {err}");
            assert!(err.to_string().contains("SpacingBetweenSlices"), "{err}");
        }
    }
}
