//! Puts a prediction and a reference on one grid, pairs their structures (by label
//! in label maps, by code in DICOM SEG, through the schema between the two) and
//! scores every pair.

use std::borrow::Cow;

use rayon::prelude::*;

use super::overlap::{Overlap, overlap};
use super::surface::{Surface, label_surfaces};
use super::{Counts, Settings, StructureMetrics, SurfaceMode, score_labels, score_structure};
use crate::schema::{Schema, UnknownPolicy};
use crate::volume::{
    BoundingBox, BoxMask, Grid, GridMismatch, LabelVolume, Labels, Layout, Segment, Segmentation,
};

/// What to score.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// Structure names, codes, tolerances, and what to do with unlisted labels.
    pub schema: Option<&'a Schema>,
    /// Label-map structures to score, including ones absent from both files.
    pub labels: Option<&'a [u16]>,
    /// Surface mode, and the tolerance of structures the schema does not set.
    pub settings: Settings,
}

/// Why two segmentations cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PairingError {
    /// The grids do not sample one lattice, or cannot be aligned as stored.
    #[error("grids differ")]
    Grid(#[from] GridMismatch),
    /// A segment lies outside the other side's grid once moved onto it.
    #[error("grids differ: {0}")]
    Coverage(String),
    /// The schema rejects unlisted structures and this one (a label or code) is unlisted.
    #[error("unknown structure: {0} is not in the structure schema")]
    Unknown(String),
}

/// One side of a pair, on the common grid.
enum Side<'a> {
    LabelMap(Cow<'a, LabelVolume>),
    Segments(Vec<Cow<'a, Segment>>),
}

/// The structures of a pair, scored on their common grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The common grid: a label map's, or for two SEGs the union of their slice ranges.
    pub grid: Grid,
    /// One entry per structure scored, in the order of the labels or segments paired.
    pub structures: Vec<StructureMetrics>,
}

/// Scores every structure of `pred` against `reference`.
pub fn evaluate(
    pred: &Segmentation,
    reference: &Segmentation,
    request: &Request,
) -> Result<Evaluation, PairingError> {
    let (grid, pred_side, ref_side) = align(pred, reference)?;
    let structures = match (&pred_side, &ref_side) {
        (Side::LabelMap(p), Side::LabelMap(r)) => evaluate_label_maps(p, r, request)?,
        _ => evaluate_segments(&grid, &pred_side, &ref_side, request)?,
    };
    Ok(Evaluation { grid, structures })
}

/// Whether two segmentations of these layouts can be compared: the same checks as
/// scoring makes, without the voxels.
pub fn check_layouts(pred: &Layout, reference: &Layout) -> Result<(), PairingError> {
    match (pred, reference) {
        (Layout::LabelMap(p), Layout::LabelMap(r)) => r.map_covering(p).map(|_| ()),
        (Layout::Segments(p), Layout::Segments(r)) => r.map_onto(p).map(|_| ()),
        (Layout::LabelMap(l), Layout::Segments(s)) | (Layout::Segments(s), Layout::LabelMap(l)) => {
            s.map_inside(l).map(|_| ())
        }
    }
    .map_err(PairingError::Grid)
}

/// Fails when the schema rejects unlisted structures and `segmentation` has one.
pub fn check_structures(segmentation: &Segmentation, schema: &Schema) -> Result<(), PairingError> {
    match segmentation {
        Segmentation::LabelMap(v) => {
            let present = overlap(&v.labels, &v.labels, v.grid.shape).present_labels();
            check_known(schema, present.iter().map(|&l| (Some(l), None)))
        }
        Segmentation::Segments { segments, .. } => check_known(
            schema,
            segments.iter().map(|s| (None, Some(s.code.as_str()))),
        ),
    }
}

/// As [`check_structures`], for a stored segmentation's structure keys
/// ([`Segmentation::structure_keys`]: `label_N`, or a segment's code).
pub fn check_structure_keys(keys: &[String], schema: &Schema) -> Result<(), PairingError> {
    check_known(
        schema,
        keys.iter().map(
            |key| match key.strip_prefix("label_").and_then(|n| n.parse().ok()) {
                Some(label) => (Some(label), None),
                None => (None, Some(key.as_str())),
            },
        ),
    )
}

/// Brings both sides onto one grid, moving voxels exactly, never resampling.
fn align<'a>(
    pred: &'a Segmentation,
    reference: &'a Segmentation,
) -> Result<(Grid, Side<'a>, Side<'a>), PairingError> {
    Ok(match (pred, reference) {
        (Segmentation::LabelMap(p), Segmentation::LabelMap(r)) => {
            let r = if r.grid.check_same(&p.grid).is_ok() {
                Cow::Borrowed(r)
            } else {
                Cow::Owned(r.reoriented_onto(&p.grid)?)
            };
            (
                p.grid.clone(),
                Side::LabelMap(Cow::Borrowed(p)),
                Side::LabelMap(r),
            )
        }
        (Segmentation::LabelMap(p), Segmentation::Segments { grid, segments }) => {
            let r = segments_onto(grid, segments, &p.grid, "reference")?;
            (p.grid.clone(), Side::LabelMap(Cow::Borrowed(p)), r)
        }
        (Segmentation::Segments { grid, segments }, Segmentation::LabelMap(r)) => {
            let p = segments_onto(grid, segments, &r.grid, "prediction")?;
            (r.grid.clone(), p, Side::LabelMap(Cow::Borrowed(r)))
        }
        (
            Segmentation::Segments {
                grid: pg,
                segments: ps,
            },
            Segmentation::Segments {
                grid: rg,
                segments: rs,
            },
        ) => {
            // The union of both slice ranges, on the prediction's axes.
            let map = rg.map_onto(pg)?;
            let (rmin, rmax) = map.map_box(BoundingBox {
                min: [0; 3],
                max: [0, 1, 2].map(|a| rg.shape[a] - 1),
            });
            let min = [0, 1, 2].map(|a| rmin[a].min(0));
            let max = [0, 1, 2].map(|a| rmax[a].max(pg.shape[a] as i64 - 1));
            let union = pg.window(min, max);
            let shift = min.map(|v| -v);
            let pred_map = crate::volume::GridMap::IDENTITY.shifted(shift);
            let p = remap_segments(ps, &pred_map, union.shape, "prediction")?;
            let r = remap_segments(rs, &map.shifted(shift), union.shape, "reference")?;
            (union, p, r)
        }
    })
}

fn segments_onto<'a>(
    source: &Grid,
    segments: &'a [Segment],
    target: &Grid,
    side: &str,
) -> Result<Side<'a>, PairingError> {
    let map = source.map_onto(target)?;
    if map == crate::volume::GridMap::IDENTITY {
        return Ok(Side::Segments(segments.iter().map(Cow::Borrowed).collect()));
    }
    remap_segments(segments, &map, target.shape, side)
}

fn remap_segments<'a>(
    segments: &'a [Segment],
    map: &crate::volume::GridMap,
    shape: [usize; 3],
    side: &str,
) -> Result<Side<'a>, PairingError> {
    if *map == crate::volume::GridMap::IDENTITY {
        return Ok(Side::Segments(segments.iter().map(Cow::Borrowed).collect()));
    }
    let moved = segments
        .iter()
        .map(|s| {
            let mask = s.mask.remapped(map, shape).ok_or_else(|| {
                PairingError::Coverage(format!(
                    "segment {} of the {side} lies outside the other image",
                    s.number
                ))
            })?;
            Ok(Cow::Owned(Segment {
                mask,
                probabilities: None,
                ..s.clone()
            }))
        })
        .collect::<Result<Vec<_>, PairingError>>()?;
    Ok(Side::Segments(moved))
}

/// Both label maps: the one-pass fast path over the schema's, the requested or
/// the present labels.
fn evaluate_label_maps(
    pred: &LabelVolume,
    reference: &LabelVolume,
    request: &Request,
) -> Result<Vec<StructureMetrics>, PairingError> {
    let counts = overlap(&pred.labels, &reference.labels, pred.grid.shape);
    let labels: Vec<u16> = match (request.labels, request.schema) {
        (Some(labels), _) => labels.to_vec(),
        (None, Some(schema)) => {
            check_known(
                schema,
                counts.present_labels().iter().map(|&l| (Some(l), None)),
            )?;
            schema.structures.iter().filter_map(|s| s.label).collect()
        }
        (None, None) => counts.present_labels(),
    };
    let specs: Vec<(u16, f64)> = labels
        .iter()
        .map(|&l| (l, tolerance(request, Some(l), None)))
        .collect();
    let mut results = score_labels(pred, reference, &counts, &specs, request.settings.surface);
    for r in &mut results {
        if let Some(def) = request
            .schema
            .and_then(|s| s.by_label(r.label.unwrap_or_default()))
        {
            r.code = def.code.clone();
            r.name = Some(def.name.clone());
        }
    }
    Ok(results)
}

/// Fails when the schema rejects unlisted structures and one of these is unlisted.
fn check_known<'k>(
    schema: &Schema,
    keys: impl Iterator<Item = (Option<u16>, Option<&'k str>)>,
) -> Result<(), PairingError> {
    if schema.unknown_labels == UnknownPolicy::Ignore {
        return Ok(());
    }
    for (label, code) in keys {
        let known = label.is_some_and(|l| schema.by_label(l).is_some())
            || code.is_some_and(|c| schema.by_code(c).is_some());
        if !known {
            return Err(PairingError::Unknown(match (label, code) {
                (_, Some(code)) => format!("segment code {code}"),
                (Some(label), None) => format!("label {label}"),
                (None, None) => "a structure".into(),
            }));
        }
    }
    Ok(())
}

fn tolerance(request: &Request, label: Option<u16>, code: Option<&str>) -> f64 {
    let schema = request.schema;
    let def = label
        .and_then(|l| schema.and_then(|s| s.by_label(l)))
        .or_else(|| code.and_then(|c| schema.and_then(|s| s.by_code(c))));
    def.and_then(|d| d.tolerance_mm)
        .unwrap_or(request.settings.tolerance_mm)
}

/// Where one side keeps a structure.
#[derive(Clone, Copy)]
enum Voxels<'a> {
    Label {
        labels: &'a Labels,
        label: u16,
        bbox: Option<BoundingBox>,
    },
    Mask(&'a BoxMask),
    Absent,
}

impl Voxels<'_> {
    fn bbox(&self) -> Option<BoundingBox> {
        match self {
            Voxels::Label { bbox, .. } => *bbox,
            Voxels::Mask(m) => m.bbox(),
            Voxels::Absent => None,
        }
    }

    /// Writes 1 where the structure is into a buffer laid out over `region`.
    fn fill(&self, grid: &Grid, region: &Region, out: &mut [u8]) {
        let Some(bbox) = self.bbox() else { return };
        for z in bbox.min[2]..=bbox.max[2] {
            for y in bbox.min[1]..=bbox.max[1] {
                let local = |x: usize| region.local([x, y, z]);
                match self {
                    Voxels::Label { labels, label, .. } => {
                        let row = grid.shape[0] * (y + grid.shape[1] * z);
                        for x in bbox.min[0]..=bbox.max[0] {
                            if labels.get(row + x) == *label {
                                out[local(x)] = 1;
                            }
                        }
                    }
                    Voxels::Mask(mask) => {
                        for x in bbox.min[0]..=bbox.max[0] {
                            if mask.contains([x, y, z]) {
                                out[local(x)] = 1;
                            }
                        }
                    }
                    Voxels::Absent => {}
                }
            }
        }
    }
}

/// A box around a structure with a one-voxel margin (not along z in 2D), so every
/// voxel of the structure has all its neighbours inside it.
struct Region {
    origin: [i64; 3],
    dims: [usize; 3],
}

impl Region {
    fn around(bbox: BoundingBox, planar: bool) -> Region {
        let margin = |a: usize| if planar && a == 2 { 0 } else { 1 };
        Region {
            origin: [0, 1, 2].map(|a| bbox.min[a] as i64 - margin(a)),
            dims: [0, 1, 2].map(|a| bbox.extent()[a] + 2 * margin(a) as usize),
        }
    }

    fn local(&self, p: [usize; 3]) -> usize {
        let l = [0, 1, 2].map(|a| (p[a] as i64 - self.origin[a]) as usize);
        l[0] + self.dims[0] * (l[1] + self.dims[1] * l[2])
    }

    /// Moves surface points from region coordinates to the grid's. In surfel mode
    /// corner c of the region lies between region voxels c − 1 and c, which keeps
    /// the same relation to the grid.
    fn to_grid(&self, mut surface: Surface) -> Surface {
        for p in &mut surface.points {
            for (v, o) in p.iter_mut().zip(self.origin) {
                *v = (*v as i64 + o) as u32;
            }
        }
        surface
    }
}

/// Counts and surfaces of one structure from its two sides, on its own box.
fn measure(
    pred: Voxels,
    reference: Voxels,
    grid: &Grid,
    mode: SurfaceMode,
) -> (Counts, Surface, Surface) {
    let Some(bbox) = BoundingBox::union_opt(pred.bbox(), reference.bbox()) else {
        return (Counts::default(), Surface::default(), Surface::default());
    };
    let region = Region::around(bbox, grid.dims == 2);
    let n = region.dims.iter().product();
    let (mut p, mut r) = (vec![0u8; n], vec![0u8; n]);
    pred.fill(grid, &region, &mut p);
    reference.fill(grid, &region, &mut r);
    let count = |v: &[u8]| v.iter().map(|&b| b as u64).sum::<u64>();
    let counts = Counts {
        pred_voxels: count(&p),
        ref_voxels: count(&r),
        tp: p.iter().zip(&r).map(|(a, b)| (a & b) as u64).sum(),
    };
    if counts.pred_voxels == 0 || counts.ref_voxels == 0 {
        return (counts, Surface::default(), Surface::default());
    }
    let local = Grid::axis_aligned(region.dims, grid.spacing, grid.dims);
    let surface = |v: Vec<u8>| {
        let mut s = label_surfaces(&Labels::U8(v), &local, mode, &[1]);
        region.to_grid(s.pop().unwrap_or_default())
    };
    let (ps, rs) = rayon::join(|| surface(p), || surface(r));
    (counts, ps, rs)
}

/// Where a side keeps the structure with this label (label maps) or code (SEG).
fn side_voxels<'a>(
    side: &'a Side,
    boxes: Option<&Overlap>,
    label: Option<u16>,
    code: Option<&str>,
) -> Voxels<'a> {
    match (side, boxes, label, code) {
        (Side::LabelMap(v), Some(o), Some(label), _) => Voxels::Label {
            labels: &v.labels,
            label,
            bbox: o.get(label).pred_box,
        },
        (Side::Segments(segments), _, _, Some(code)) => segments
            .iter()
            .find(|s| s.code == code)
            .map_or(Voxels::Absent, |s| Voxels::Mask(&s.mask)),
        _ => Voxels::Absent,
    }
}

/// A structure to score and where each side keeps it.
struct Pair<'a> {
    label: Option<u16>,
    code: Option<String>,
    name: Option<String>,
    pred: Voxels<'a>,
    reference: Voxels<'a>,
}

/// A segment of a SEG as pairing sees it.
struct SegmentRef {
    number: u16,
    code: String,
    name: Option<String>,
}

/// What finds one structure on each side: its label on a label-map side, its
/// code on a SEG side; and the name it is reported under.
struct StructureKey {
    label: Option<u16>,
    code: Option<String>,
    name: Option<String>,
}

/// With a schema: its structures, in its order (SEG with SEG: only those with a
/// code), after checking that every segment and label present is known.
fn keys_from_schema(
    schema: &Schema,
    segments: &[SegmentRef],
    labels: &[u16],
    mixed: bool,
) -> Result<Vec<StructureKey>, PairingError> {
    let seen = segments.iter().map(|s| (None, Some(s.code.as_str())));
    check_known(schema, seen.chain(labels.iter().map(|&l| (Some(l), None))))?;
    Ok(schema
        .structures
        .iter()
        .filter(|def| mixed || def.code.is_some())
        .map(|def| StructureKey {
            label: def.label,
            code: def.code.clone(),
            name: Some(def.name.clone()),
        })
        .collect())
}

/// A SEG with a label map, without a schema: segment number n pairs with label
/// n, for every number or label present on either side.
fn keys_by_number(segments: &[SegmentRef], labels: Vec<u16>) -> Vec<StructureKey> {
    let mut numbers: Vec<u16> = segments.iter().map(|s| s.number).chain(labels).collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
        .into_iter()
        .map(|n| {
            let segment = segments.iter().find(|s| s.number == n);
            StructureKey {
                label: Some(n),
                code: segment.map(|s| s.code.clone()),
                name: segment.and_then(|s| s.name.clone()),
            }
        })
        .collect()
}

/// Two SEGs without a schema: one structure per code, reference segments first.
fn keys_by_code(segments: &[SegmentRef]) -> Vec<StructureKey> {
    let mut keys: Vec<StructureKey> = Vec::new();
    for segment in segments {
        if !keys
            .iter()
            .any(|k| k.code.as_deref() == Some(segment.code.as_str()))
        {
            keys.push(StructureKey {
                label: None,
                code: Some(segment.code.clone()),
                name: segment.name.clone(),
            });
        }
    }
    keys
}

/// At least one side is a DICOM SEG: pair by code (SEG with SEG) or through the
/// schema (SEG with label map; without a schema, segment number = label value).
fn evaluate_segments(
    grid: &Grid,
    pred: &Side,
    reference: &Side,
    request: &Request,
) -> Result<Vec<StructureMetrics>, PairingError> {
    let boxes = |side: &Side| match side {
        Side::LabelMap(v) => Some(overlap(&v.labels, &v.labels, v.grid.shape)),
        Side::Segments(_) => None,
    };
    let (pred_boxes, ref_boxes) = (boxes(pred), boxes(reference));
    let segments = |side: &Side| -> Vec<SegmentRef> {
        match side {
            Side::Segments(s) => s
                .iter()
                .map(|s| SegmentRef {
                    number: s.number,
                    code: s.code.clone(),
                    name: s.name.clone(),
                })
                .collect(),
            Side::LabelMap(_) => Vec::new(),
        }
    };
    let present_labels = |boxes: &Option<Overlap>| {
        boxes
            .as_ref()
            .map(|o| o.present_labels())
            .unwrap_or_default()
    };
    let segments: Vec<SegmentRef> = segments(reference)
        .into_iter()
        .chain(segments(pred))
        .collect();
    let labels: Vec<u16> = present_labels(&ref_boxes)
        .into_iter()
        .chain(present_labels(&pred_boxes))
        .collect();
    let mixed = matches!(pred, Side::LabelMap(_)) || matches!(reference, Side::LabelMap(_));
    let keys = match (request.schema, mixed) {
        (Some(schema), _) => keys_from_schema(schema, &segments, &labels, mixed)?,
        (None, true) => keys_by_number(&segments, labels),
        (None, false) => keys_by_code(&segments),
    };
    let pairs: Vec<Pair> = keys
        .into_iter()
        .map(|StructureKey { label, code, name }| Pair {
            pred: side_voxels(pred, pred_boxes.as_ref(), label, code.as_deref()),
            reference: side_voxels(reference, ref_boxes.as_ref(), label, code.as_deref()),
            label: if mixed { label } else { None },
            code,
            name,
        })
        .collect();
    Ok(pairs
        .par_iter()
        .map(|pair| {
            let (counts, ps, rs) =
                measure(pair.pred, pair.reference, grid, request.settings.surface);
            let settings = Settings {
                surface: request.settings.surface,
                tolerance_mm: tolerance(request, pair.label, pair.code.as_deref()),
            };
            StructureMetrics {
                label: pair.label,
                code: pair.code.clone(),
                name: pair.name.clone(),
                ..score_structure(counts, &ps, &rs, grid, &settings)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_structure_keys_are_checked_as_the_segmentation_was() {
        let schema: Schema = serde_json::from_str(
            r#"{"structures": [{"label": 1, "name": "liver"}, {"code": "SCT:78961009", "name": "spleen"}],
                "unknown_labels": "reject"}"#,
        )
        .unwrap();
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_structure_keys(&keys(&["label_1", "SCT:78961009"]), &schema).is_ok());
        assert!(matches!(
            check_structure_keys(&keys(&["label_1", "label_7"]), &schema),
            Err(PairingError::Unknown(what)) if what == "label 7"
        ));
        assert!(matches!(
            check_structure_keys(&keys(&["SCT:1"]), &schema),
            Err(PairingError::Unknown(what)) if what == "segment code SCT:1"
        ));
        let lenient = Schema {
            unknown_labels: UnknownPolicy::Ignore,
            ..schema
        };
        assert!(check_structure_keys(&keys(&["label_7"]), &lenient).is_ok());
    }
}
