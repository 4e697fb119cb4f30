//! Property tests: on random small 2D and 3D label maps with random anisotropic
//! spacing, the engine equals a brute-force computation over all surface point pairs.

use proptest::prelude::*;
use segwatch::metrics::pairing::{Request, evaluate};
use segwatch::metrics::surfel_area::{contour_lengths, surface_areas};
use segwatch::metrics::{Empty, Settings, StructureMetrics, SurfaceMode};
use segwatch::volume::{BoxMask, Grid, LabelVolume, Labels, Segment, Segmentation};

/// A surface point: lattice coordinates and its weight.
type Point = ([i64; 3], f64);

fn coords(i: usize, shape: [usize; 3]) -> [i64; 3] {
    [
        (i % shape[0]) as i64,
        ((i / shape[0]) % shape[1]) as i64,
        (i / (shape[0] * shape[1])) as i64,
    ]
}

/// Mask value at signed coordinates; outside the image is background.
fn at(mask: &[bool], shape: [usize; 3], p: [i64; 3]) -> bool {
    (0..3).all(|a| p[a] >= 0 && (p[a] as usize) < shape[a])
        && mask[p[0] as usize + shape[0] * (p[1] as usize + shape[1] * p[2] as usize)]
}

/// Voxels with a face neighbour outside the structure (4 in 2D, 6 in 3D).
fn voxel_surface(mask: &[bool], shape: [usize; 3], planar: bool) -> Vec<Point> {
    let axes = if planar { 2 } else { 3 };
    (0..mask.len())
        .filter(|&i| mask[i])
        .map(|i| coords(i, shape))
        .filter(|p| {
            (0..axes).any(|a| {
                [-1, 1].iter().any(|d| {
                    let mut q = *p;
                    q[a] += d;
                    !at(mask, shape, q)
                })
            })
        })
        .map(|p| (p, 1.0))
        .collect()
}

/// Corners (voxel corner k sits between voxels k−1 and k) with a mixed neighbourhood.
fn surfel_surface(mask: &[bool], shape: [usize; 3], planar: bool, spacing: [f64; 3]) -> Vec<Point> {
    let areas = surface_areas(spacing);
    let lengths = contour_lengths(spacing);
    let mut points = Vec::new();
    let z_corners = if planar { 1 } else { shape[2] as i64 + 1 };
    for k in 0..z_corners {
        for j in 0..=shape[1] as i64 {
            for i in 0..=shape[0] as i64 {
                let corner = [i, j, k];
                let (code, full, weight_of): (usize, usize, &dyn Fn(usize) -> f64) = if planar {
                    let mut code = 0;
                    for (bit, (a, b)) in [(0, 0), (0, 1), (1, 0), (1, 1)].iter().enumerate() {
                        if at(mask, shape, [i - 1 + a, j - 1 + b, 0]) {
                            code |= 8 >> bit;
                        }
                    }
                    (code, 15, &|c| lengths[c])
                } else {
                    let mut code = 0;
                    for bit in 0..8 {
                        let (a, b, c) = ((bit >> 2) & 1, (bit >> 1) & 1, bit & 1);
                        if at(mask, shape, [i - 1 + a, j - 1 + b, k - 1 + c]) {
                            code |= 128 >> bit;
                        }
                    }
                    (code, 255, &|c| areas[c])
                };
                if code != 0 && code != full {
                    points.push((corner, weight_of(code)));
                }
            }
        }
    }
    points
}

fn distances(from: &[Point], to: &[Point], spacing: [f64; 3]) -> Vec<(f64, f64)> {
    from.iter()
        .map(|(p, w)| {
            let d = to
                .iter()
                .map(|(q, _)| {
                    let axis = |a: usize| {
                        let v = (p[a] - q[a]) as f64 * spacing[a];
                        v * v
                    };
                    axis(0) + axis(1) + axis(2)
                })
                .fold(f64::INFINITY, f64::min)
                .sqrt();
            (d, *w)
        })
        .collect()
}

/// Linear-interpolation percentile by full sort.
fn linear_percentile(values: &[(f64, f64)], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().map(|x| x.0).collect();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Weighted nearest rank: first distance whose cumulative weight fraction reaches q.
fn weighted_percentile(values: &[(f64, f64)], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let total: f64 = v.iter().map(|x| x.1).sum();
    let mut cum = 0.0;
    for (d, w) in &v {
        cum += w;
        if cum / total >= q {
            return *d;
        }
    }
    v.last().unwrap().0
}

struct Expected {
    hd: f64,
    hd95: f64,
    assd: f64,
    masd: f64,
    nsd: f64,
}

fn brute_force(
    pred: &[bool],
    reference: &[bool],
    grid: &Grid,
    mode: SurfaceMode,
    tolerance: f64,
) -> Expected {
    let planar = grid.dims == 2;
    let surface = |m: &[bool]| match mode {
        SurfaceMode::Voxel => voxel_surface(m, grid.shape, planar),
        SurfaceMode::Surfel => surfel_surface(m, grid.shape, planar, grid.spacing),
    };
    let (ps, rs) = (surface(pred), surface(reference));
    let a = distances(&ps, &rs, grid.spacing);
    let b = distances(&rs, &ps, grid.spacing);
    let weight = |v: &[(f64, f64)]| v.iter().map(|x| x.1).sum::<f64>();
    let weighted = |v: &[(f64, f64)]| v.iter().map(|x| x.0 * x.1).sum::<f64>();
    let within = |v: &[(f64, f64)]| {
        v.iter()
            .filter(|x| x.0 <= tolerance)
            .map(|x| x.1)
            .sum::<f64>()
    };
    let percentile = |v: &[(f64, f64)], q| match mode {
        SurfaceMode::Voxel => linear_percentile(v, q),
        SurfaceMode::Surfel => weighted_percentile(v, q),
    };
    Expected {
        hd: percentile(&a, 1.0).max(percentile(&b, 1.0)),
        hd95: percentile(&a, 0.95).max(percentile(&b, 0.95)),
        assd: (weighted(&a) + weighted(&b)) / (weight(&a) + weight(&b)),
        masd: (weighted(&a) / weight(&a) + weighted(&b) / weight(&b)) / 2.0,
        nsd: (within(&a) + within(&b)) / (weight(&a) + weight(&b)),
    }
}

fn close(got: f64, expected: f64) -> bool {
    (got - expected).abs() <= 1e-9 * expected.abs().max(1.0)
}

/// Random label maps made of runs, so structures have interiors and borders.
fn label_map(n: usize, max_label: u8) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0..=max_label, 1usize..8), 1..=n).prop_map(move |runs| {
        runs.iter()
            .flat_map(|&(l, len)| std::iter::repeat_n(l, len))
            .chain(std::iter::repeat(0))
            .take(n)
            .collect()
    })
}

fn case() -> impl Strategy<Value = (Grid, Vec<u8>, Vec<u8>, SurfaceMode, f64)> {
    let shape = prop_oneof![
        (2usize..12, 2usize..12).prop_map(|(x, y)| ([x, y, 1], 2u8)),
        (2usize..8, 2usize..8, 2usize..7).prop_map(|(x, y, z)| ([x, y, z], 3u8)),
    ];
    let spacing = (0.3f64..3.0, 0.3f64..3.0, 0.3f64..3.0);
    let mode = prop_oneof![Just(SurfaceMode::Voxel), Just(SurfaceMode::Surfel)];
    (shape, spacing, mode, 0.0f64..4.0).prop_flat_map(|((shape, dims), (sx, sy, sz), mode, tol)| {
        let n = shape.iter().product::<usize>();
        let grid = Grid::axis_aligned(shape, [sx, sy, sz], dims);
        (
            Just(grid),
            label_map(n, 3),
            label_map(n, 3),
            Just(mode),
            Just(tol),
        )
    })
}

fn check(
    s: &StructureMetrics,
    pred: &[u8],
    reference: &[u8],
    grid: &Grid,
    mode: SurfaceMode,
    tol: f64,
) -> Result<(), TestCaseError> {
    let label = s.label.unwrap() as u8;
    let p: Vec<bool> = pred.iter().map(|&v| v == label).collect();
    let r: Vec<bool> = reference.iter().map(|&v| v == label).collect();
    let count = |m: &[bool]| m.iter().filter(|&&v| v).count() as u64;
    let tp = p.iter().zip(&r).filter(|(a, b)| **a && **b).count() as u64;
    prop_assert_eq!(
        (s.pred_voxels, s.ref_voxels, s.tp),
        (count(&p), count(&r), tp)
    );
    prop_assert_eq!((s.fp, s.fn_), (count(&p) - tp, count(&r) - tp));
    if s.empty != Empty::None {
        return Ok(());
    }
    let e = brute_force(&p, &r, grid, mode, tol);
    for (name, got, want) in [
        ("hd", s.hd_mm, e.hd),
        ("hd95", s.hd95_mm, e.hd95),
        ("assd", s.assd_mm, e.assd),
        ("masd", s.masd_mm, e.masd),
        ("nsd", s.nsd, e.nsd),
    ] {
        prop_assert!(
            close(got, want),
            "label {} {}: engine {} vs brute force {}",
            label,
            name,
            got,
            want
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn engine_equals_brute_force((grid, pred, reference, mode, tol) in case()) {
        let volume = |v: &Vec<u8>| Segmentation::LabelMap(LabelVolume::new(grid.clone(), Labels::U8(v.clone())).unwrap());
        let request = Request {
            labels: Some(&[1, 2, 3]),
            settings: Settings { surface: mode, tolerance_mm: tol },
            ..Request::default()
        };
        let results = evaluate(&volume(&pred), &volume(&reference), &request).unwrap().structures;
        for s in &results {
            check(s, &pred, &reference, &grid, mode, tol)?;
        }
    }
}

/// The same label map as coded segments, one mask per label (what a DICOM SEG gives).
fn as_segments(grid: &Grid, labels: &[u8]) -> Segmentation {
    let segments = (1..=3u8)
        .map(|l| {
            let points = labels
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == l)
                .map(|(i, _)| {
                    let c = coords(i, grid.shape);
                    [c[0] as usize, c[1] as usize, c[2] as usize]
                });
            Segment {
                number: l as u16,
                code: format!("SCT:{l}"),
                name: None,
                algorithm_type: None,
                mask: BoxMask::from_points(points.collect::<Vec<_>>().into_iter()),
                probabilities: None,
            }
        })
        .collect();
    Segmentation::Segments {
        grid: grid.clone(),
        segments,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn segments_score_like_label_maps((grid, pred, reference, mode, tol) in case()) {
        let settings = Settings { surface: mode, tolerance_mm: tol };
        let request = Request { labels: Some(&[1, 2, 3]), settings, ..Request::default() };
        let volume = |v: &Vec<u8>| Segmentation::LabelMap(LabelVolume::new(grid.clone(), Labels::U8(v.clone())).unwrap());
        let by_label = evaluate(&volume(&pred), &volume(&reference), &request).unwrap().structures;
        let by_code = evaluate(&as_segments(&grid, &pred), &as_segments(&grid, &reference), &Request { settings, ..Request::default() })
            .unwrap()
            .structures;
        for s in &by_label {
            let code = format!("SCT:{}", s.label.unwrap());
            match by_code.iter().find(|c| c.code.as_deref() == Some(code.as_str())) {
                Some(c) => {
                    prop_assert_eq!((c.pred_voxels, c.ref_voxels, c.tp, c.empty), (s.pred_voxels, s.ref_voxels, s.tp, s.empty));
                    for (a, b) in [(c.hd_mm, s.hd_mm), (c.hd95_mm, s.hd95_mm), (c.assd_mm, s.assd_mm), (c.masd_mm, s.masd_mm), (c.nsd, s.nsd)] {
                        prop_assert!(a == b || close(a, b), "{} {} vs {}", code, a, b);
                    }
                }
                // Segments empty on both sides are still listed by code.
                None => prop_assert_eq!(s.empty, Empty::Both),
            }
        }
    }
}
