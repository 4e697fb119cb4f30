//! Area (length in 2D) of the surface element at a corner of the half-voxel-shifted
//! lattice, for each 2×2×2 (2×2) neighbourhood code, as surface-distance defines it.
//!
//! The surface is the marching-cubes surface with vertices at edge midpoints. On a
//! face with two diagonal corners inside, those corners stay apart; a configuration
//! with more than four corners inside has the surface of its complement. A polygon
//! that is not planar is split into triangles fanned from the vertex that leaves the
//! fewest planar pieces. Derived here from that definition rather than stored as a
//! table; the reference cases check it against surface-distance's own values.

use std::sync::OnceLock;

/// A corner of the unit cube, as (a, b, c) ∈ {0, 1}³ along x, y, z.
type Corner = [u8; 3];
/// A point in half-voxel units (coordinates 0, 1 or 2).
type Point = [i32; 3];

/// Bit of the neighbourhood code for the voxel at offset (a, b, c) from the corner.
fn corner_bit(c: Corner) -> u8 {
    128 >> (4 * c[0] + 2 * c[1] + c[2])
}

/// Area of every code's surface piece for a voxel spacing in mm (x, y, z).
pub fn surface_areas(spacing: [f64; 3]) -> [f64; 256] {
    let [sx, sy, sz] = spacing;
    let normals = unit_normals();
    std::array::from_fn(|code| {
        normals[code]
            .iter()
            .map(|n| {
                let scaled = [n[0] * sy * sz, n[1] * sx * sz, n[2] * sx * sy];
                scaled.iter().map(|v| v * v).sum::<f64>().sqrt()
            })
            .sum()
    })
}

/// Length of every 2×2 code's contour piece for a pixel spacing in mm (x, y).
/// Bits: 8 for (x, y), 4 for (x, y+1), 2 for (x+1, y), 1 for (x+1, y+1).
pub fn contour_lengths(spacing: [f64; 3]) -> [f64; 16] {
    let [sx, sy, _] = spacing;
    let diagonal = 0.5 * (sx * sx + sy * sy).sqrt();
    std::array::from_fn(|code| match code {
        0 | 15 => 0.0,
        // Two pixels sharing an x index: the contour runs along y.
        0b1100 | 0b0011 => sy,
        // Two pixels sharing a y index: the contour runs along x.
        0b1010 | 0b0101 => sx,
        // Diagonal pair: two corner cuts.
        0b1001 | 0b0110 => 2.0 * diagonal,
        // One pixel in or one pixel out: one corner cut.
        _ => diagonal,
    })
}

/// Triangle normals (half cross products, in voxel units) of each code's surface.
fn unit_normals() -> &'static Vec<Vec<[f64; 3]>> {
    static NORMALS: OnceLock<Vec<Vec<[f64; 3]>>> = OnceLock::new();
    NORMALS.get_or_init(|| (0..=255u8).map(code_normals).collect())
}

fn code_normals(code: u8) -> Vec<[f64; 3]> {
    let code = if code.count_ones() > 4 { !code } else { code };
    let inside = |c: Corner| code & corner_bit(c) != 0;
    polygons(&inside)
        .iter()
        .flat_map(|polygon| {
            let start = best_fan_start(polygon);
            fan(polygon, start)
                .into_iter()
                .map(|n| n.map(|v| v as f64 / 8.0))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The closed polygons of the surface within the cube, as vertex loops.
fn polygons(inside: &dyn Fn(Corner) -> bool) -> Vec<Vec<Point>> {
    let mut segments: Vec<(Point, Point)> = Vec::new();
    for axis in 0..3 {
        let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
        for side in 0..2 {
            let corner = |cu: u8, cv: u8| {
                let mut c = [0u8; 3];
                c[axis] = side;
                c[u] = cu;
                c[v] = cv;
                c
            };
            let ring = [corner(0, 0), corner(1, 0), corner(1, 1), corner(0, 1)];
            // Midpoint of face edge i (ring[i] to ring[i+1]) where the edge is cut.
            let cut = |i: usize| {
                let (a, b) = (ring[i], ring[(i + 1) % 4]);
                (inside(a) != inside(b)).then(|| [0, 1, 2].map(|k| a[k] as i32 + b[k] as i32))
            };
            let cuts: Vec<(usize, Point)> = (0..4).filter_map(|i| cut(i).map(|p| (i, p))).collect();
            match cuts.len() {
                2 => segments.push((cuts[0].1, cuts[1].1)),
                4 => {
                    // Ambiguous face: cut off each inside corner on its own.
                    for i in (0..4).filter(|&i| inside(ring[i])) {
                        segments.push((cuts[(i + 3) % 4].1, cuts[i].1));
                    }
                }
                _ => {}
            }
        }
    }
    let mut loops = Vec::new();
    while let Some((first, mut end)) = segments.pop() {
        let mut polygon = vec![first];
        while end != first {
            polygon.push(end);
            let Some(k) = segments.iter().position(|s| s.0 == end || s.1 == end) else {
                break;
            };
            let (a, b) = segments.swap_remove(k);
            end = if a == end { b } else { a };
        }
        loops.push(polygon);
    }
    loops
}

/// Twice-doubled normals (cross products of half-voxel vectors, i.e. 8× the
/// unit-voxel half cross product) of the fan from `start`.
fn fan(polygon: &[Point], start: usize) -> Vec<[i32; 3]> {
    let n = polygon.len();
    let apex = polygon[start];
    (1..n - 1)
        .map(|i| {
            let b = polygon[(start + i) % n];
            let c = polygon[(start + i + 1) % n];
            cross(sub(b, apex), sub(c, apex))
        })
        .collect()
}

/// The fan apex that splits the polygon into the fewest distinct planes.
fn best_fan_start(polygon: &[Point]) -> usize {
    (0..polygon.len())
        .min_by_key(|&start| {
            let normals = fan(polygon, start);
            let mut planes: Vec<[i32; 3]> = Vec::new();
            for n in normals {
                if !planes.iter().any(|p| cross(*p, n) == [0, 0, 0]) {
                    planes.push(n);
                }
            }
            planes.len()
        })
        .unwrap_or(0)
}

fn sub(a: Point, b: Point) -> Point {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn cross(a: Point, b: Point) -> Point {
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
    fn unit_spacing_areas_of_simple_pieces() {
        let areas = surface_areas([1.0; 3]);
        let corner = 3f64.sqrt() / 8.0;
        // One corner in or out: one corner triangle.
        assert!((areas[1] - corner).abs() < 1e-15);
        assert!((areas[254] - corner).abs() < 1e-15);
        // Four voxels on one side (a = 1): a flat unit square.
        assert!((areas[0b0000_1111] - 1.0).abs() < 1e-15);
        // Two voxels along z: a rectangle 1 × √2/2.
        assert!((areas[0b0000_0011] - 0.5f64.sqrt()).abs() < 1e-15);
        // Body diagonal: two separate corner triangles.
        assert!((areas[0b1000_0001] - 2.0 * corner).abs() < 1e-15);
        assert_eq!(areas[0], 0.0);
        assert_eq!(areas[255], 0.0);
    }

    #[test]
    fn complement_has_the_same_area() {
        let areas = surface_areas([0.7, 1.3, 2.9]);
        for code in 0..256 {
            assert!(
                (areas[code] - areas[255 - code]).abs() < 1e-12,
                "code {code}"
            );
        }
    }

    #[test]
    fn flat_faces_scale_with_the_face_spacing() {
        let areas = surface_areas([0.5, 2.0, 3.0]);
        // Voxels with a = 1 on: the surface is the plane x = 0.5, area sy·sz.
        assert!((areas[0b0000_1111] - 6.0).abs() < 1e-12);
        // Voxels with c = 1 on: the plane z = 0.5, area sx·sy.
        assert!((areas[0b0101_0101] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn every_mixed_code_has_a_surface() {
        let areas = surface_areas([1.0; 3]);
        assert!((1..255).all(|code| areas[code] > 0.0));
        let triangles: Vec<usize> = (0..=255u8)
            .map(|c| unit_normals()[c as usize].len())
            .collect();
        // A corner piece is one triangle; a flat square two; a hexagon four.
        assert_eq!(triangles[1], 1);
        assert_eq!(triangles[0b0000_1111], 2);
        assert_eq!(triangles.iter().max(), Some(&4));
    }

    #[test]
    fn contour_lengths_follow_the_pieces() {
        let lengths = contour_lengths([3.0, 4.0, 1.0]);
        assert_eq!(lengths[0b1000], 2.5);
        assert_eq!(lengths[0b1100], 4.0);
        assert_eq!(lengths[0b1010], 3.0);
        assert_eq!(lengths[0b0110], 5.0);
        assert_eq!(lengths[0b0111], 2.5);
        assert_eq!(lengths[15], 0.0);
    }
}
