//! De-identification of uploads before they are stored: what segwatch keeps of a
//! DICOM SEG or a NIfTI file carries no patient-identifying attribute, and still
//! decodes to exactly the same segmentation.
//!
//! DICOM SEG: the DICOM PS3.15 Annex E Basic Application Level Confidentiality
//! Profile, applied to every attribute a SEG can carry, at every nesting depth:
//! - removed: patient attributes (other IDs, age, size, weight, address, comments,
//!   history and the rest of group 0010), visit, study-request and results groups
//!   (0032, 0038, 4008), clinical-trial attributes, physicians, operators, content
//!   creator identification, institution name, address, department and codes,
//!   station name, device serial number and other device IDs, study and series
//!   descriptions, protocol name, referenced study/patient/procedure-step
//!   sequences, request attributes and scheduled/performed procedure-step
//!   attributes, every person name (PN), date, time and date-time (DA, TM, DT),
//!   age (AS) and free text (LT, ST, UT), original and encrypted attributes, icon
//!   images, overlays, curves and every private element;
//! - emptied (type 2, kept present but zero length): PatientName, PatientID,
//!   PatientBirthDate, PatientSex, StudyDate, StudyTime, ReferringPhysicianName,
//!   StudyID, AccessionNumber, ContentCreatorName, ContentDescription;
//! - replaced by a dummy: ContentDate (19000101) and ContentTime (000000), type 1;
//! - keyed-hashed: every instance UID (value of VR UI) that is not a standard
//!   DICOM UID (root `1.2.840.10008.`) nor a class or coding-scheme UID — Study,
//!   Series and SOP Instance UIDs, referenced SOP instances (ReferencedSeries,
//!   SourceImage, DerivationImage, ReferencedImage sequences), FrameOfReferenceUID,
//!   DimensionOrganizationUID, the file meta MediaStorageSOPInstanceUID, and so on —
//!   each becomes `2.25.<first 128 bits of HMAC-SHA256(key, uid) in decimal>`, so
//!   the same UID always maps to the same hashed UID (links between instances and
//!   drill-down to the PACS by hashing its UIDs with the same key still work);
//! - added: PatientIdentityRemoved = YES, DeidentificationMethod,
//!   DeidentificationMethodCodeSequence (DCM 113100, and 113101 (clean descriptors) is
//!   *not* claimed), LongitudinalTemporalInformationModified = REMOVED.
//!
//! What the decoder reads is kept: SOP class, segmentation type, image pixel
//! attributes, SegmentSequence (numbers, codes, labels, algorithm type and
//! identification), the functional groups' geometry and segment references,
//! SliceThickness, SpacingBetweenSlices, MaximumFractionalValue, the pixel data,
//! and the equipment description (Manufacturer, ManufacturerModelName,
//! SoftwareVersions), none of which the profile removes.
//!
//! Written here because no Rust crate implements the Annex E profile: dicom-object
//! reads and writes the data set, and this module decides attribute by attribute.
//!
//! NIfTI: the free-text header fields (descrip, aux_file, intent_name, and the
//! unused NIfTI-1 data_type / db_name and NIfTI-2 unused_str bytes) are blanked
//! and extensions, which can carry whole DICOM headers, are dropped; the voxel
//! data and every geometric field are copied unchanged.

use std::io::Read;

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::{InMemDicomObject, OpenFileOptions};
use flate2::read::MultiGzDecoder;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::dicom_structure::{self, Encoding};
use super::{FormatError, Limits};

/// Largest NIfTI extension block skipped (as the decoder).
const MAX_EXTENSION_BYTES: u64 = 64 << 20;
/// Root of the UIDs the DICOM standard defines (classes, transfer syntaxes,
/// well-known frames of reference): they identify no one and are kept.
const STANDARD_ROOT: &str = "1.2.840.10008.";
const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
/// What DeidentificationMethod says (LO: at most 64 characters).
pub const METHOD: &str = "segwatch: PS3.15 E.1.1 basic profile, UIDs keyed-hashed";

const fn t(group: u16, element: u16) -> Tag {
    Tag(group, element)
}

/// Attributes kept present with an empty value (type 2 in a SEG).
const EMPTIED: [Tag; 11] = [
    t(0x0010, 0x0010), // PatientName
    t(0x0010, 0x0020), // PatientID
    t(0x0010, 0x0030), // PatientBirthDate
    t(0x0010, 0x0040), // PatientSex
    t(0x0008, 0x0020), // StudyDate
    t(0x0008, 0x0030), // StudyTime
    t(0x0008, 0x0090), // ReferringPhysicianName
    t(0x0020, 0x0010), // StudyID
    t(0x0008, 0x0050), // AccessionNumber
    t(0x0070, 0x0084), // ContentCreatorName
    t(0x0070, 0x0081), // ContentDescription
];

const CONTENT_DATE: Tag = t(0x0008, 0x0023);
const CONTENT_TIME: Tag = t(0x0008, 0x0033);
const PATIENT_IDENTITY_REMOVED: Tag = t(0x0012, 0x0062);
const DEIDENTIFICATION_METHOD: Tag = t(0x0012, 0x0063);
const DEIDENTIFICATION_METHOD_CODE_SEQUENCE: Tag = t(0x0012, 0x0064);
const LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED: Tag = t(0x0028, 0x0303);

/// Annex E attributes removed wherever they occur, beyond the rules by group
/// and by value representation in [`action`].
const REMOVED: [Tag; 81] = [
    // General study, series, equipment
    t(0x0008, 0x0051), // IssuerOfAccessionNumberSequence
    t(0x0008, 0x0080), // InstitutionName
    t(0x0008, 0x0081), // InstitutionAddress
    t(0x0008, 0x0082), // InstitutionCodeSequence
    t(0x0008, 0x0092), // ReferringPhysicianAddress
    t(0x0008, 0x0094), // ReferringPhysicianTelephoneNumbers
    t(0x0008, 0x0096), // ReferringPhysicianIdentificationSequence
    t(0x0008, 0x009D), // ConsultingPhysicianIdentificationSequence
    t(0x0008, 0x0201), // TimezoneOffsetFromUTC
    t(0x0008, 0x1010), // StationName
    t(0x0008, 0x1030), // StudyDescription
    t(0x0008, 0x1032), // ProcedureCodeSequence
    t(0x0008, 0x103E), // SeriesDescription
    t(0x0008, 0x1040), // InstitutionalDepartmentName
    t(0x0008, 0x1041), // InstitutionalDepartmentTypeCodeSequence
    t(0x0008, 0x1049), // PhysiciansOfRecordIdentificationSequence
    t(0x0008, 0x1052), // PerformingPhysicianIdentificationSequence
    t(0x0008, 0x1062), // PhysiciansReadingStudyIdentificationSequence
    t(0x0008, 0x1072), // OperatorIdentificationSequence
    t(0x0008, 0x1080), // AdmittingDiagnosesDescription
    t(0x0008, 0x1084), // AdmittingDiagnosesCodeSequence
    t(0x0008, 0x1110), // ReferencedStudySequence
    t(0x0008, 0x1111), // ReferencedPerformedProcedureStepSequence
    t(0x0008, 0x1120), // ReferencedPatientSequence
    t(0x0008, 0x4000), // IdentifyingComments
    // Acquisition and device
    t(0x0018, 0x0010), // ContrastBolusAgent
    t(0x0018, 0x1000), // DeviceSerialNumber
    t(0x0018, 0x1004), // PlateID
    t(0x0018, 0x1005), // GeneratorID
    t(0x0018, 0x1007), // CassetteID
    t(0x0018, 0x1008), // GantryID
    t(0x0018, 0x1009), // UniqueDeviceIdentifier
    t(0x0018, 0x100A), // UDISequence
    t(0x0018, 0x1030), // ProtocolName
    t(0x0018, 0x1400), // AcquisitionDeviceProcessingDescription
    t(0x0018, 0x700A), // DetectorID
    t(0x0018, 0x9424), // AcquisitionProtocolDescription
    // Procedure steps, requests, observers
    t(0x0040, 0x0001), // ScheduledStationAETitle
    t(0x0040, 0x0006), // ScheduledPerformingPhysicianName
    t(0x0040, 0x0007), // ScheduledProcedureStepDescription
    t(0x0040, 0x0009), // ScheduledProcedureStepID
    t(0x0040, 0x000B), // ScheduledPerformingPhysicianIdentificationSequence
    t(0x0040, 0x0010), // ScheduledStationName
    t(0x0040, 0x0011), // ScheduledProcedureStepLocation
    t(0x0040, 0x0012), // PreMedication
    t(0x0040, 0x0241), // PerformedStationAETitle
    t(0x0040, 0x0242), // PerformedStationName
    t(0x0040, 0x0243), // PerformedLocation
    t(0x0040, 0x0253), // PerformedProcedureStepID
    t(0x0040, 0x0254), // PerformedProcedureStepDescription
    t(0x0040, 0x0275), // RequestAttributesSequence
    t(0x0040, 0x0280), // CommentsOnThePerformedProcedureStep
    t(0x0040, 0x0400), // CommentsOnTheScheduledProcedureStep
    t(0x0040, 0x0555), // AcquisitionContextSequence
    t(0x0040, 0x1001), // RequestedProcedureID
    t(0x0040, 0x1004), // PatientTransportArrangements
    t(0x0040, 0x1005), // RequestedProcedureLocation
    t(0x0040, 0x1010), // NamesOfIntendedRecipientsOfResults
    t(0x0040, 0x1011), // IntendedRecipientsOfResultsIdentificationSequence
    t(0x0040, 0x1101), // PersonIdentificationCodeSequence
    t(0x0040, 0x1102), // PersonAddress
    t(0x0040, 0x1103), // PersonTelephoneNumbers
    t(0x0040, 0x1400), // RequestedProcedureComments
    t(0x0040, 0x2001), // ReasonForTheImagingServiceRequest
    t(0x0040, 0x2009), // OrderEntererLocation
    t(0x0040, 0x2010), // OrderCallbackPhoneNumber
    t(0x0040, 0x2016), // PlacerOrderNumberImagingServiceRequest
    t(0x0040, 0x2017), // FillerOrderNumberImagingServiceRequest
    t(0x0040, 0x2400), // ImagingServiceRequestComments
    t(0x0040, 0x3001), // ConfidentialityConstraintOnPatientDataDescription
    t(0x0040, 0xA073), // VerifyingObserverSequence
    t(0x0040, 0xA078), // AuthorObserverSequence
    t(0x0040, 0xA07A), // ParticipantSequence
    t(0x0040, 0xA07C), // CustodialOrganizationSequence
    t(0x0040, 0xA088), // VerifyingObserverIdentificationCodeSequence
    t(0x0040, 0xA730), // ContentSequence
    // Content creator, storage media, originals, signatures
    t(0x0070, 0x0086), // ContentCreatorIdentificationCodeSequence
    t(0x0088, 0x0130), // StorageMediaFileSetID
    t(0x0088, 0x0200), // IconImageSequence
    t(0x0400, 0x0500), // EncryptedAttributesSequence
    t(0x0400, 0x0561), // OriginalAttributesSequence
];

/// UI attributes that name a class or a coding scheme, not an instance: kept.
const CLASS_UIDS: [Tag; 10] = [
    t(0x0002, 0x0002), // MediaStorageSOPClassUID
    t(0x0002, 0x0010), // TransferSyntaxUID
    t(0x0002, 0x0012), // ImplementationClassUID
    t(0x0008, 0x0016), // SOPClassUID
    t(0x0008, 0x001A), // RelatedGeneralSOPClassUID
    t(0x0008, 0x001B), // OriginalSpecializedSOPClassUID
    t(0x0008, 0x010C), // CodingSchemeUID
    t(0x0008, 0x0117), // ContextUID
    t(0x0008, 0x0118), // MappingResourceUID
    t(0x0008, 0x1150), // ReferencedSOPClassUID
];

/// What happens to one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Keep,
    Remove,
    Empty,
    Dummy(&'static str),
    HashUids,
    /// A sequence whose items are de-identified in turn.
    Recurse,
}

fn action(tag: Tag, vr: VR) -> Action {
    let Tag(group, _) = tag;
    if group % 2 == 1 {
        return Action::Remove; // private
    }
    if tag == CONTENT_DATE {
        return Action::Dummy("19000101");
    }
    if tag == CONTENT_TIME {
        return Action::Dummy("000000");
    }
    if EMPTIED.contains(&tag) {
        return Action::Empty;
    }
    if [
        PATIENT_IDENTITY_REMOVED,
        DEIDENTIFICATION_METHOD,
        DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
    ]
    .contains(&tag)
    {
        return Action::Keep; // rewritten afterwards at the top level
    }
    let removed_group = matches!(group, 0x0010 | 0x0012 | 0x0032 | 0x0038 | 0x4008)
        || (0x5000..=0x50FF).contains(&group) // curves
        || (0x6000..=0x60FF).contains(&group) // overlays
        || tag == t(0xFFFA, 0xFFFA); // DigitalSignaturesSequence
    if removed_group || REMOVED.contains(&tag) {
        return Action::Remove;
    }
    match vr {
        VR::PN | VR::DA | VR::TM | VR::DT | VR::AS | VR::LT | VR::ST | VR::UT => Action::Remove,
        VR::UI if CLASS_UIDS.contains(&tag) => Action::Keep,
        VR::UI => Action::HashUids,
        VR::SQ => Action::Recurse,
        _ => Action::Keep,
    }
}

/// The hashed form of a UID: `2.25.` and the first 128 bits of
/// HMAC-SHA256(key, uid) as a decimal integer (PS3.5 B.2). Standard DICOM UIDs
/// (root `1.2.840.10008.`) are returned as they are.
pub fn hash_uid(uid: &str, key: &[u8]) -> String {
    let uid = uid.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if uid.is_empty() || uid.starts_with(STANDARD_ROOT) {
        return uid.to_owned();
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(uid.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    format!("2.25.{}", u128::from_be_bytes(first))
}

/// De-identifies a DICOM SEG (PS3.15 Annex E basic profile, see the module
/// documentation) and writes it back in its own transfer syntax. UIDs are
/// replaced by keyed hashes ([`hash_uid`]). The result decodes to the same
/// segmentation as the input.
pub fn deidentify_seg(bytes: &[u8], key: &[u8]) -> Result<Vec<u8>, FormatError> {
    let body = super::dicom_seg::part10_body(bytes)?;
    // Bounded as the decoder bounds it; the upload decoded within the limits.
    super::dicom_seg::check_structure(body, &super::Limits::default())?;
    let mut object = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(body)
        .map_err(|e| FormatError::Dicom(format!("cannot parse the data set: {e}")))?;

    clean(&mut object, key);
    object.put(DataElement::new(
        PATIENT_IDENTITY_REMOVED,
        VR::CS,
        PrimitiveValue::from("YES"),
    ));
    object.put(DataElement::new(
        DEIDENTIFICATION_METHOD,
        VR::LO,
        PrimitiveValue::from(METHOD),
    ));
    let code = |value: &str, meaning: &str| {
        InMemDicomObject::from_element_iter([
            DataElement::new(t(0x0008, 0x0100), VR::SH, PrimitiveValue::from(value)),
            DataElement::new(t(0x0008, 0x0102), VR::SH, PrimitiveValue::from("DCM")),
            DataElement::new(t(0x0008, 0x0104), VR::LO, PrimitiveValue::from(meaning)),
        ])
    };
    object.put(DataElement::new(
        DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![code(
            "113100",
            "Basic Application Confidentiality Profile",
        )]),
    ));
    object.put(DataElement::new(
        LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
        VR::CS,
        PrimitiveValue::from("REMOVED"),
    ));
    object.update_meta(|meta| {
        meta.media_storage_sop_instance_uid = hash_uid(&meta.media_storage_sop_instance_uid, key);
        meta.source_application_entity_title = None;
        meta.sending_application_entity_title = None;
        meta.receiving_application_entity_title = None;
        meta.private_information_creator_uid = None;
        meta.private_information = None;
    });

    let cannot_write = |e: dicom_object::WriteError| {
        FormatError::Dicom(format!("cannot write the de-identified data set: {e}"))
    };
    let mut out = Vec::with_capacity(bytes.len() + 1024);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    object.write_meta(&mut out).map_err(cannot_write)?;
    let mut data_set = Vec::with_capacity(bytes.len());
    object.write_dataset(&mut data_set).map_err(cannot_write)?;
    let syntax = object.meta().transfer_syntax().trim_end_matches('\0');
    let encoding = Encoding {
        explicit_vr: syntax != IMPLICIT_VR_LITTLE_ENDIAN,
        big_endian: syntax == EXPLICIT_VR_BIG_ENDIAN,
    };
    if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&data_set[..])
            .take(super::MAX_FILE_BYTES as u64)
            .read_to_end(&mut inflated)
            .map_err(|e| FormatError::Dicom(format!("deflated data set: {e}")))?;
        if let Some(explicit) = with_explicit_lengths(&inflated, encoding) {
            let mut encoder =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut encoder, &explicit)?;
            data_set = encoder.finish()?;
        }
    } else if let Some(explicit) = with_explicit_lengths(&data_set, encoding) {
        data_set = explicit;
    }
    out.extend_from_slice(&data_set);
    Ok(out)
}

const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// The data set with every undefined-length sequence and item rewritten with
/// its explicit length. dicom-object writes each sequence it has modified with
/// undefined length, which adds 8 bytes per item and per sequence; without this
/// a de-identified SEG with thousands of per-frame items would grow, and could
/// pass the upload limit the stored file is checked against. None when the data
/// set holds something this walk does not expect (the caller then keeps the
/// undefined lengths, which are valid DICOM too).
fn with_explicit_lengths(data: &[u8], encoding: Encoding) -> Option<Vec<u8>> {
    let mut walk = LengthWalk {
        data,
        at: 0,
        encoding,
        out: Vec::with_capacity(data.len()),
    };
    walk.elements(None, 0)?;
    Some(walk.out)
}

struct LengthWalk<'a> {
    data: &'a [u8],
    at: usize,
    encoding: Encoding,
    out: Vec<u8>,
}

impl LengthWalk<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        let b = self.data.get(at..at.checked_add(2)?)?;
        Some(if self.encoding.big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b = self.data.get(at..at.checked_add(4)?)?;
        let b = [b[0], b[1], b[2], b[3]];
        Some(if self.encoding.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn patch(&mut self, at: usize, len: usize) -> Option<()> {
        let len = u32::try_from(len).ok().filter(|&l| l != UNDEFINED)?;
        let bytes = if self.encoding.big_endian {
            len.to_be_bytes()
        } else {
            len.to_le_bytes()
        };
        self.out.get_mut(at..at + 4)?.copy_from_slice(&bytes);
        Some(())
    }

    fn copy(&mut self, len: usize) -> Option<()> {
        let end = self.at.checked_add(len)?;
        self.out.extend_from_slice(self.data.get(self.at..end)?);
        self.at = end;
        Some(())
    }

    /// Elements up to `end` (an offset), or up to an item delimiter (None inside
    /// an undefined-length item), or to the end of the data at depth 0.
    fn elements(&mut self, end: Option<usize>, depth: usize) -> Option<()> {
        if depth > dicom_structure::MAX_NESTING {
            return None;
        }
        loop {
            match end {
                Some(end) if self.at == end => return Some(()),
                Some(end) if self.at > end => return None,
                None if depth == 0 && self.at == self.data.len() => return Some(()),
                _ => {}
            }
            let tag = (self.u16_at(self.at)?, self.u16_at(self.at + 2)?);
            if tag == ITEM_END {
                // Only an undefined-length item ends this way; dropped with it.
                self.at += 8;
                return (end.is_none() && depth > 0).then_some(());
            }
            self.element(tag, depth)?;
        }
    }

    fn element(&mut self, tag: (u16, u16), depth: usize) -> Option<()> {
        let (len, header, sequence, length_at) = if self.encoding.explicit_vr {
            let vr = self.data.get(self.at + 4..self.at + 6)?;
            let short = super::dicom_structure::has_short_length(vr);
            if short {
                (self.u16_at(self.at + 6)? as u32, 8, false, 6)
            } else {
                (self.u32_at(self.at + 8)?, 12, vr == b"SQ", 8)
            }
        } else {
            use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
            let is_sq = dicom_dictionary_std::StandardDataDictionary
                .by_tag(Tag(tag.0, tag.1))
                .is_some_and(|e| e.vr().relaxed() == VR::SQ);
            (self.u32_at(self.at + 4)?, 8, is_sq, 4)
        };
        if !sequence {
            if len != UNDEFINED {
                return self.copy(header + len as usize);
            }
            // Encapsulated pixel data: fragments of explicit length, copied.
            self.copy(header)?;
            loop {
                let item = (self.u16_at(self.at)?, self.u16_at(self.at + 2)?);
                let item_len = self.u32_at(self.at + 4)?;
                if item == SEQUENCE_END {
                    return self.copy(8);
                }
                if item != ITEM || item_len == UNDEFINED {
                    return None;
                }
                self.copy(8 + item_len as usize)?;
            }
        }
        let start = self.out.len();
        self.copy(header)?;
        let content = self.out.len();
        let end = (len != UNDEFINED).then(|| self.at + len as usize);
        loop {
            if end == Some(self.at) {
                break;
            }
            let item = (self.u16_at(self.at)?, self.u16_at(self.at + 2)?);
            if end.is_none() && item == SEQUENCE_END {
                self.at += 8;
                break;
            }
            if item != ITEM {
                return None;
            }
            let item_len = self.u32_at(self.at + 4)?;
            let item_start = self.out.len();
            self.copy(8)?;
            let item_end = if item_len == UNDEFINED {
                None
            } else {
                Some(self.at.checked_add(item_len as usize)?)
            };
            self.elements(item_end, depth + 1)?;
            let item_len = self.out.len() - item_start - 8;
            self.patch(item_start + 4, item_len)?;
            if end.is_some_and(|end| self.at > end) {
                return None;
            }
        }
        let len = self.out.len() - content;
        self.patch(start + length_at, len)
    }
}

/// Applies [`action`] to every element of `object`, recursing into sequences.
/// Nesting is bounded by the structure check done before parsing.
fn clean(object: &mut InMemDicomObject, key: &[u8]) {
    let decisions: Vec<(Tag, Action)> = object
        .iter()
        .map(|e| {
            let decision = match action(e.tag(), e.vr()) {
                Action::Remove => Action::Remove,
                // Sequences read with another VR (UN of undefined length) too.
                _ if e.value().items().is_some() => Action::Recurse,
                decision => decision,
            };
            (e.tag(), decision)
        })
        .collect();
    for (tag, decision) in decisions {
        match decision {
            Action::Keep => {}
            Action::Remove => {
                object.remove_element(tag);
            }
            Action::Empty => {
                object.update_value(tag, |v| *v = Value::Primitive(PrimitiveValue::Empty));
            }
            Action::Dummy(text) => {
                object.update_value(tag, |v| *v = Value::Primitive(PrimitiveValue::from(text)));
            }
            Action::HashUids => {
                let Some(uids) = object
                    .get(tag)
                    .and_then(|e| e.value().to_multi_str().ok())
                    .map(|uids| uids.iter().map(|u| hash_uid(u, key)).collect::<Vec<_>>())
                else {
                    // A UI value that is not text: nothing to hash, nothing to keep.
                    object.remove_element(tag);
                    continue;
                };
                object.update_value(tag, |v| {
                    *v = Value::Primitive(PrimitiveValue::Strs(uids.iter().cloned().collect()))
                });
            }
            Action::Recurse => {
                object.update_value(tag, |v| {
                    if let Some(items) = v.items_mut() {
                        for item in items.iter_mut() {
                            clean(item, key);
                        }
                    }
                });
            }
        }
    }
}

/// NIfTI header layout of one version: where the fields are.
struct NiftiLayout {
    header_len: usize,
    /// Byte ranges of free text, blanked.
    text: &'static [(usize, usize)],
    /// dim[8]: offset and width (2 or 8 bytes).
    dim: (usize, usize),
    bitpix: usize,
    /// vox_offset: offset; f32 in NIfTI-1, i64 in NIfTI-2.
    vox_offset: usize,
}

const NIFTI1: NiftiLayout = NiftiLayout {
    header_len: 348,
    // data_type, db_name, descrip, aux_file, intent_name
    text: &[(4, 14), (14, 32), (148, 228), (228, 252), (328, 344)],
    dim: (40, 2),
    bitpix: 72,
    vox_offset: 108,
};

const NIFTI2: NiftiLayout = NiftiLayout {
    header_len: 540,
    // descrip, aux_file, intent_name, unused_str
    text: &[(240, 320), (320, 344), (508, 524), (525, 540)],
    dim: (16, 8),
    bitpix: 14,
    vox_offset: 168,
};

/// De-identifies a NIfTI-1 or NIfTI-2 file (plain or gzip-compressed): blanks the
/// free-text header fields, drops extensions and trailing bytes, and returns the
/// uncompressed file, which decodes to the same volume. Sizes are checked on the
/// header against `limits` before anything is allocated, and a gzip stream is
/// inflated no further than the header says the file reaches.
pub fn deidentify_nifti(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, FormatError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        deidentify_nifti_from(MultiGzDecoder::new(bytes), limits).map_err(|e| match e {
            FormatError::Io(e) => FormatError::Gzip(e.to_string()),
            other => other,
        })
    } else {
        deidentify_nifti_from(bytes, limits)
    }
}

fn deidentify_nifti_from(mut input: impl Read, limits: &Limits) -> Result<Vec<u8>, FormatError> {
    let mut header = vec![0u8; 540];
    super::nifti::read_exact(&mut input, &mut header[..4], "the header")?;
    let first: [u8; 4] = [header[0], header[1], header[2], header[3]];
    let (layout, big_endian) = match (i32::from_le_bytes(first), i32::from_be_bytes(first)) {
        (348, _) => (&NIFTI1, false),
        (_, 348) => (&NIFTI1, true),
        (540, _) => (&NIFTI2, false),
        (_, 540) => (&NIFTI2, true),
        (le, _) => {
            return Err(FormatError::NotNifti(format!(
                "sizeof_hdr is {le}, expected 348 (NIfTI-1) or 540 (NIfTI-2)"
            )));
        }
    };
    let header_len = layout.header_len;
    header.truncate(header_len);
    super::nifti::read_exact(&mut input, &mut header[4..], "the header")?;
    let int = |at: usize, width: usize| -> i64 {
        let b = &header[at..at + width];
        match (width, big_endian) {
            (2, false) => i16::from_le_bytes([b[0], b[1]]) as i64,
            (2, true) => i16::from_be_bytes([b[0], b[1]]) as i64,
            (_, false) => i64::from_le_bytes(b.try_into().unwrap_or_default()),
            (_, true) => i64::from_be_bytes(b.try_into().unwrap_or_default()),
        }
    };
    let (dim_at, width) = layout.dim;
    let ndim = int(dim_at, width);
    if !(1..=7).contains(&ndim) {
        return Err(FormatError::Header(format!(
            "dim[0] = {ndim}, expected 1 to 7"
        )));
    }
    let mut voxels = 1u64;
    for i in 1..=ndim as usize {
        let n = int(dim_at + i * width, width);
        voxels = u64::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .and_then(|n| voxels.checked_mul(n))
            .ok_or_else(|| FormatError::Header(format!("dim[{i}] = {n} is not usable")))?;
    }
    let bitpix = int(layout.bitpix, 2);
    if !(8..=64).contains(&bitpix) || bitpix % 8 != 0 {
        return Err(FormatError::Header(format!(
            "bitpix {bitpix} is not usable"
        )));
    }
    let data_bytes = voxels
        .checked_mul(bitpix as u64 / 8)
        .filter(|&n| voxels <= limits.max_voxels && n <= limits.max_bytes)
        .ok_or_else(|| {
            FormatError::TooLarge(format!(
                "declared voxel data of {voxels} voxels of {bitpix} bits exceeds the limits"
            ))
        })?;
    let vox_offset = if header_len == 348 {
        let b: [u8; 4] = header[108..112].try_into().unwrap_or_default();
        let v = if big_endian {
            f32::from_be_bytes(b)
        } else {
            f32::from_le_bytes(b)
        } as f64;
        if !v.is_finite() || v.fract() != 0.0 || v < 0.0 {
            return Err(FormatError::Header(format!(
                "vox_offset {v} must be a whole number"
            )));
        }
        v as u64
    } else {
        u64::try_from(int(layout.vox_offset, 8))
            .map_err(|_| FormatError::Header("negative vox_offset".into()))?
    };
    let gap = vox_offset.checked_sub(header_len as u64).ok_or_else(|| {
        FormatError::Header(format!("vox_offset {vox_offset} is inside the header"))
    })?;
    if gap > MAX_EXTENSION_BYTES {
        return Err(FormatError::TooLarge(format!(
            "vox_offset {vox_offset} leaves {gap} bytes of extensions, more than {MAX_EXTENSION_BYTES}"
        )));
    }
    let skipped = std::io::copy(&mut (&mut input).take(gap), &mut std::io::sink())?;
    if skipped < gap {
        return Err(FormatError::Truncated(format!(
            "the file ends before vox_offset {vox_offset}"
        )));
    }

    for &(start, end) in layout.text {
        header[start..end].fill(0);
    }
    // No extensions: the data follows the 4 bytes of the extension flag.
    let new_offset = header_len as u64 + 4;
    if header_len == 348 {
        let v = new_offset as f32;
        let b = if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        header[108..112].copy_from_slice(&b);
    } else {
        let v = new_offset as i64;
        let b = if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        header[layout.vox_offset..layout.vox_offset + 8].copy_from_slice(&b);
    }
    let total = usize::try_from(new_offset + data_bytes)
        .map_err(|_| FormatError::TooLarge("the image does not fit in memory".into()))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&header);
    out.extend_from_slice(&[0u8; 4]);
    out.resize(total, 0);
    super::nifti::read_exact(
        &mut input,
        &mut out[new_offset as usize..],
        "the voxel data",
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use super::*;
    use crate::formats::{decode, dicom_seg, nifti};

    const KEY: &[u8] = b"test key";

    fn fixture(path: &str) -> Vec<u8> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        std::fs::read(root.join(path)).unwrap()
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        memchr::memmem::find(haystack, needle.as_bytes()).is_some()
    }

    fn open(bytes: &[u8]) -> dicom_object::DefaultDicomObject {
        OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Auto)
            .from_reader(bytes)
            .unwrap()
    }

    fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
        object
            .get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' ').to_owned())
    }

    /// Every SEG fixture that decodes, with its transfer syntax.
    fn seg_fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dicom");
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .filter(|(_, bytes)| dicom_seg::decode(bytes, &Limits::default()).is_ok())
            .collect();
        files.sort();
        assert!(
            files.len() >= 12,
            "{:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        files
    }

    #[test]
    fn every_fixture_seg_decodes_to_the_same_segmentation_without_identifiers() {
        let expected: serde_json::Value =
            serde_json::from_slice(&fixture("dicom/expected.json")).unwrap();
        let forbidden: Vec<String> = expected["phi"]["forbidden_strings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        for (name, bytes) in seg_fixtures() {
            let limits = Limits::default();
            let before = dicom_seg::decode(&bytes, &limits).unwrap();
            let cleaned = deidentify_seg(&bytes, KEY).unwrap_or_else(|e| panic!("{name}: {e}"));
            // Explicit lengths: never larger than what was uploaded (the stored
            // file is checked against the upload limit).
            assert!(cleaned.len() <= bytes.len(), "{name} grew");
            let after = dicom_seg::decode(&cleaned, &limits)
                .unwrap_or_else(|e| panic!("{name} after de-identification: {e}"));
            assert_eq!(before.grid, after.grid, "{name}");
            assert_eq!(before.kind, after.kind, "{name}");
            assert_eq!(before.segments, after.segments, "{name}");
            assert_eq!(before.sop_class_uid, after.sop_class_uid, "{name}");
            assert_eq!(
                decode(&bytes, &limits).unwrap(),
                decode(&cleaned, &limits).unwrap(),
                "{name}"
            );
            // The same transfer syntax.
            assert_eq!(
                open(&bytes).meta().transfer_syntax(),
                open(&cleaned).meta().transfer_syntax(),
                "{name}"
            );
            let descriptive = [
                "Fake General Hospital",
                "FAKESTATION",
                "FAKE^REFERRER",
                "AI-SN-0001",
                "FAKESTUDY1",
                before
                    .provenance
                    .series_description
                    .as_deref()
                    .unwrap_or("FAKE"),
                "20240102",
                "030405",
            ];
            for value in forbidden.iter().map(String::as_str).chain(descriptive) {
                assert!(!contains(&cleaned, value), "{name} still holds {value}");
            }
            // Every instance UID is replaced by its keyed hash, in the file and in
            // what the decoder reads from it.
            let (p, q) = (&before.provenance, &after.provenance);
            for (uid, hashed) in [
                (&p.study_instance_uid, &q.study_instance_uid),
                (&p.series_instance_uid, &q.series_instance_uid),
                (&p.sop_instance_uid, &q.sop_instance_uid),
                (
                    &p.referenced_series_instance_uid,
                    &q.referenced_series_instance_uid,
                ),
                (&p.frame_of_reference_uid, &q.frame_of_reference_uid),
            ] {
                let uid = uid.as_deref().unwrap();
                assert!(!contains(&cleaned, uid), "{name} still holds {uid}");
                assert_eq!(
                    hashed.as_deref(),
                    Some(hash_uid(uid, KEY).as_str()),
                    "{name}"
                );
            }
            assert_eq!(p.manufacturer, q.manufacturer, "{name}");
            assert_eq!(p.algorithm_name, q.algorithm_name, "{name}");
            assert_eq!(p.algorithm_version, q.algorithm_version, "{name}");
            assert_eq!(p.segment_algorithm_type, q.segment_algorithm_type, "{name}");
            assert_eq!(q.series_description, None, "{name}");
            assert_eq!(q.protocol_name, None, "{name}");

            let object = open(&cleaned);
            assert_eq!(
                object.meta().media_storage_sop_instance_uid(),
                q.sop_instance_uid.as_deref().unwrap(),
                "{name}"
            );
            assert_eq!(
                text(&object, PATIENT_IDENTITY_REMOVED).as_deref(),
                Some("YES")
            );
            assert_eq!(
                text(&object, DEIDENTIFICATION_METHOD).as_deref(),
                Some(METHOD)
            );
            for tag in [t(0x0010, 0x0010), t(0x0010, 0x0020), t(0x0010, 0x0030)] {
                assert_eq!(text(&object, tag).unwrap_or_default(), "", "{name} {tag}");
            }
            for tag in [
                t(0x0008, 0x0080),
                t(0x0018, 0x1000),
                t(0x0008, 0x103E),
                t(0x0010, 0x1010),
            ] {
                assert!(object.get(tag).is_none(), "{name} keeps {tag}");
            }
            assert!(object.iter().all(|e| e.tag().0 % 2 == 0), "{name}");
            // De-identifying again changes nothing but the (hashed again) UIDs.
            let twice = deidentify_seg(&cleaned, KEY).unwrap();
            assert_eq!(
                dicom_seg::decode(&twice, &limits).unwrap().segments,
                before.segments
            );
        }
    }

    #[test]
    fn the_same_uid_hashes_the_same_way_in_every_file_and_only_with_the_same_key() {
        let ai = deidentify_seg(&fixture("dicom/ai_binary.dcm"), KEY).unwrap();
        let corrected = deidentify_seg(&fixture("dicom/corrected_binary.dcm"), KEY).unwrap();
        let again = deidentify_seg(&fixture("dicom/ai_binary.dcm"), KEY).unwrap();
        assert_eq!(ai, again, "deterministic");
        let limits = Limits::default();
        let (a, c) = (
            dicom_seg::decode(&ai, &limits).unwrap().provenance,
            dicom_seg::decode(&corrected, &limits).unwrap().provenance,
        );
        assert_eq!(a.study_instance_uid, c.study_instance_uid);
        assert_eq!(a.frame_of_reference_uid, c.frame_of_reference_uid);
        assert_ne!(a.sop_instance_uid, c.sop_instance_uid);

        let uid = "1.2.826.0.1.3680043.8.498.1234";
        let hashed = hash_uid(uid, KEY);
        assert!(
            hashed.starts_with("2.25.") && hashed.len() <= 64,
            "{hashed}"
        );
        assert!(hashed[5..].bytes().all(|b| b.is_ascii_digit()));
        assert!(!hashed[5..].starts_with('0') || hashed == "2.25.0");
        assert_eq!(hashed, hash_uid(&format!("{uid}\0"), KEY));
        assert_ne!(hashed, hash_uid(uid, b"another key"));
        // Standard UIDs (classes, transfer syntaxes) are not instance UIDs.
        assert_eq!(
            hash_uid("1.2.840.10008.5.1.4.1.1.66.4", KEY),
            "1.2.840.10008.5.1.4.1.1.66.4"
        );
    }

    #[test]
    fn nested_identifiers_and_private_elements_are_removed() {
        let mut object = open(&fixture("dicom/ai_binary.dcm"));
        let uid = "1.2.3.4.5.6.7.8.9";
        let request = InMemDicomObject::from_element_iter([
            DataElement::new(
                t(0x0008, 0x0050),
                VR::SH,
                PrimitiveValue::from("ACC-NESTED"),
            ),
            DataElement::new(t(0x0040, 0x1001), VR::SH, PrimitiveValue::from("RP-NESTED")),
            DataElement::new(t(0x0020, 0x000D), VR::UI, PrimitiveValue::from(uid)),
        ]);
        object.put(DataElement::new(
            t(0x0040, 0x0275),
            VR::SQ,
            DataSetSequence::from(vec![request.clone()]),
        ));
        // A sequence segwatch keeps, holding identifying attributes.
        let source = InMemDicomObject::from_element_iter([
            DataElement::new(t(0x0008, 0x1155), VR::UI, PrimitiveValue::from(uid)),
            DataElement::new(
                t(0x0008, 0x1150),
                VR::UI,
                PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2"),
            ),
            DataElement::new(
                t(0x0008, 0x0090),
                VR::PN,
                PrimitiveValue::from("Nested^Doctor"),
            ),
            DataElement::new(
                t(0x0008, 0x0080),
                VR::LO,
                PrimitiveValue::from("Nested Hospital"),
            ),
            DataElement::new(
                t(0x0009, 0x0010),
                VR::LO,
                PrimitiveValue::from("PRIVATE CREATOR"),
            ),
            DataElement::new(
                t(0x0009, 0x1001),
                VR::LO,
                PrimitiveValue::from("private text"),
            ),
        ]);
        object.put(DataElement::new(
            t(0x0008, 0x2112),
            VR::SQ,
            DataSetSequence::from(vec![source]),
        ));
        object.put(DataElement::new(
            t(0x0029, 0x0010),
            VR::LO,
            PrimitiveValue::from("ACME 1.0"),
        ));
        object.put(DataElement::new(
            t(0x0029, 0x1010),
            VR::OB,
            PrimitiveValue::from(b"Doe^Jane".to_vec()),
        ));
        object.put(DataElement::new(
            t(0x0008, 0x1070),
            VR::PN,
            PrimitiveValue::from("Operator^Olga"),
        ));
        object.put(DataElement::new(
            t(0x0008, 0x1010),
            VR::SH,
            PrimitiveValue::from("STATION-7"),
        ));
        object.put(DataElement::new(
            t(0x0010, 0x1040),
            VR::LO,
            PrimitiveValue::from("1 Main Street"),
        ));
        object.put(DataElement::new(
            t(0x0020, 0x4000),
            VR::LT,
            PrimitiveValue::from("free text note"),
        ));
        let mut bytes = Vec::new();
        object.write_all(&mut bytes).unwrap();
        assert!(contains(&bytes, "Nested Hospital"));

        let cleaned = deidentify_seg(&bytes, KEY).unwrap();
        for value in [
            "ACC-NESTED",
            "RP-NESTED",
            uid,
            "Nested^Doctor",
            "Nested Hospital",
            "PRIVATE CREATOR",
            "private text",
            "ACME 1.0",
            "Doe^Jane",
            "Operator^Olga",
            "STATION-7",
            "1 Main Street",
            "free text note",
        ] {
            assert!(!contains(&cleaned, value), "{value} is still there");
        }
        let object = open(&cleaned);
        let item = &object.get(t(0x0008, 0x2112)).unwrap().items().unwrap()[0];
        assert_eq!(text(item, t(0x0008, 0x1155)), Some(hash_uid(uid, KEY)));
        assert_eq!(
            text(item, t(0x0008, 0x1150)).as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
        assert!(object.get(t(0x0040, 0x0275)).is_none());
        assert_eq!(
            dicom_seg::decode(&cleaned, &Limits::default())
                .unwrap()
                .segments,
            dicom_seg::decode(&fixture("dicom/ai_binary.dcm"), &Limits::default())
                .unwrap()
                .segments
        );
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let good = fixture("dicom/ai_binary.dcm");
        assert!(deidentify_seg(b"", KEY).is_err());
        assert!(deidentify_seg(b"not dicom at all", KEY).is_err());
        assert!(deidentify_seg(&fixture("dicom/bad_truncated.dcm"), KEY).is_err());
        for cut in (0..good.len()).step_by(7) {
            let _ = deidentify_seg(&good[..cut], KEY);
        }
        let mut flipped = good.clone();
        for i in (132..flipped.len()).step_by(11) {
            flipped[i] ^= 0xA5;
            let _ = deidentify_seg(&flipped, KEY);
            flipped[i] ^= 0xA5;
        }
        for file in ["fuzz"] {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("tests/fixtures")
                .join(file);
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    let _ = deidentify_seg(&bytes, KEY);
                    let _ = deidentify_nifti(&bytes, &Limits::default());
                }
            }
        }
        assert!(deidentify_nifti(b"", &Limits::default()).is_err());
        assert!(deidentify_nifti(&[0x1f, 0x8b, 8, 0], &Limits::default()).is_err());
    }

    /// A plain little-endian NIfTI (version 1 or 2) with free text in its header
    /// and an extension holding a DICOM-like header.
    fn with_text_and_extension(plain: &[u8]) -> Vec<u8> {
        let version2 = i32::from_le_bytes(plain[..4].try_into().unwrap()) == 540;
        let (layout, header_len) = if version2 {
            (&NIFTI2, 540)
        } else {
            (&NIFTI1, 348)
        };
        let vox_offset = if version2 {
            i64::from_le_bytes(plain[168..176].try_into().unwrap()) as usize
        } else {
            f32::from_le_bytes(plain[108..112].try_into().unwrap()) as usize
        };
        let mut header = plain[..header_len].to_vec();
        for (i, &(start, end)) in layout.text.iter().enumerate() {
            let note = format!("Doe^Jane {i} PID-12345");
            let n = note.len().min(end - start);
            header[start..start + n].copy_from_slice(&note.as_bytes()[..n]);
        }
        let mut extension = Vec::new();
        let payload = b"(0010,0010) PN [Doe^Jane] (0010,0020) LO [PID-12345]";
        let size = (8 + payload.len()).div_ceil(16) * 16;
        extension.extend_from_slice(&(size as i32).to_le_bytes());
        extension.extend_from_slice(&2i32.to_le_bytes()); // DICOM extension
        extension.extend_from_slice(payload);
        extension.resize(size, 0);
        let new_offset = header_len + 4 + extension.len();
        if version2 {
            header[168..176].copy_from_slice(&(new_offset as i64).to_le_bytes());
        } else {
            header[108..112].copy_from_slice(&(new_offset as f32).to_le_bytes());
        }
        let mut out = header;
        out.extend_from_slice(&[1, 0, 0, 0]);
        out.extend_from_slice(&extension);
        out.extend_from_slice(&plain[vox_offset..]);
        out
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn nifti_text_and_extensions_are_dropped_and_the_volume_is_the_same() {
        let limits = Limits::default();
        for file in [
            "nifti/labels.nii.gz",
            "nifti/labels_nifti2.nii.gz",
            "nifti/labels_big_endian.nii",
            "nifti/labels_scaled_float.nii.gz",
            "nifti/labels_qform_only.nii.gz",
            "nifti/labels_4d_singleton.nii.gz",
            "reference/cases/P09_pred.nii.gz",
        ] {
            let bytes = fixture(file);
            let want = nifti::decode(&bytes, &limits).unwrap();
            let cleaned =
                deidentify_nifti(&bytes, &limits).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(!cleaned.starts_with(&[0x1f, 0x8b]));
            assert_eq!(nifti::decode(&cleaned, &limits).unwrap(), want, "{file}");
        }
        for file in ["nifti/labels.nii.gz", "nifti/labels_nifti2.nii.gz"] {
            let plain = gunzip(&fixture(file));
            let want = nifti::decode(&plain, &limits).unwrap();
            let tagged = with_text_and_extension(&plain);
            assert_eq!(nifti::decode(&tagged, &limits).unwrap(), want, "{file}");
            assert!(contains(&tagged, "Doe^Jane") && contains(&tagged, "PID-12345"));
            for input in [tagged.clone(), gzip(&tagged)] {
                let cleaned = deidentify_nifti(&input, &limits).unwrap();
                assert_eq!(nifti::decode(&cleaned, &limits).unwrap(), want, "{file}");
                assert!(!contains(&cleaned, "Doe^Jane"), "{file}");
                assert!(!contains(&cleaned, "PID-12345"), "{file}");
                let header_len = if file.contains("nifti2") { 540 } else { 348 };
                assert_eq!(&cleaned[header_len..header_len + 4], &[0, 0, 0, 0]);
            }
        }
        // Declared sizes over the limits are refused before allocating.
        let small = Limits {
            max_voxels: 10,
            max_bytes: 10,
        };
        assert!(matches!(
            deidentify_nifti(&fixture("nifti/labels.nii.gz"), &small),
            Err(FormatError::TooLarge(_))
        ));
        // Truncated data.
        let plain = gunzip(&fixture("nifti/labels.nii.gz"));
        assert!(matches!(
            deidentify_nifti(&plain[..plain.len() - 1], &limits),
            Err(FormatError::Truncated(_))
        ));
    }
}
