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
use super::{FormatError, Limits, MAX_FILE_BYTES};

mod frames;
mod geometry;
use crate::volume::{BoundingBox, BoxMask, FractionMap, Grid, Segment, Segmentation};

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
    /// FRACTIONAL with SegmentationFractionalType PROBABILITY: keep the values.
    probability: bool,
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
            probability: kind == SegKind::Fractional
                && text(object, tags::SEGMENTATION_FRACTIONAL_TYPE).as_deref()
                    == Some("PROBABILITY"),
            bits_allocated,
            encapsulated,
            limits: *limits,
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
