//! Exact Euclidean distances, with anisotropic spacing, from query points to the
//! nearest of a set of site points on the same lattice.
//!
//! A separable distance transform: a linear scan along x (sites are binary), then
//! the lower envelope of parabolas along y and along z (Felzenszwalb & Huttenlocher,
//! "Distance Transforms of Sampled Functions", 2012). Written here because no
//! maintained crate offers an exact anisotropic 3D transform restricted to boxes.
//!
//! The transform never covers more than it must: the x and y passes run over the
//! sites' rows and slices only, the y pass is evaluated on the queries' box, and the
//! z pass only along lines that hold a query. Sites far from every query are left out
//! when a check proves they cannot be the nearest. Squared distances add up per axis
//! in x, y, z order, like scipy's `distance_transform_edt`.

/// Points are lattice coordinates (x, y, z).
pub type Point = [u32; 3];

/// Lines of the y pass gathered together, so that each cache line read is used whole.
const TILE: usize = 8;
/// Slices of the y-pass output interleaved at once into the z-fastest layout.
const SLAB_GROUP: usize = 8;
/// Sites farther than this from the queries' box are left out on a first attempt.
const SITE_MARGIN_MM: f64 = 20.0;

/// An inclusive box of lattice points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Box3 {
    min: [u32; 3],
    max: [u32; 3],
}

impl Box3 {
    fn of(points: &[Point]) -> Option<Box3> {
        let first = *points.first()?;
        Some(points.iter().fold(
            Box3 {
                min: first,
                max: first,
            },
            |b, p| Box3 {
                min: [0, 1, 2].map(|a| b.min[a].min(p[a])),
                max: [0, 1, 2].map(|a| b.max[a].max(p[a])),
            },
        ))
    }

    fn len(&self, axis: usize) -> usize {
        (self.max[axis] - self.min[axis]) as usize + 1
    }
}

/// Distance in mm from each query to its nearest site (infinite when there is none),
/// in the order of `queries`.
pub fn nearest_site_distances(queries: &[Point], sites: &[Point], spacing: [f64; 3]) -> Vec<f64> {
    let (Some(query_box), Some(site_box)) = (Box3::of(queries), Box3::of(sites)) else {
        return vec![f64::INFINITY; queries.len()];
    };
    // First attempt: only sites near the queries' box; exact where the nearest site
    // found is closer than any left-out site could be.
    let margin = [0, 1, 2].map(|a| (SITE_MARGIN_MM / spacing[a]).ceil() as u32);
    let near = Box3 {
        min: [0, 1, 2].map(|a| {
            query_box.min[a]
                .saturating_sub(margin[a])
                .max(site_box.min[a])
        }),
        max: [0, 1, 2].map(|a| (query_box.max[a] + margin[a]).min(site_box.max[a])),
    };
    if near != site_box {
        let kept: Vec<Point> = sites
            .iter()
            .copied()
            .filter(|p| (0..3).all(|a| (near.min[a]..=near.max[a]).contains(&p[a])))
            .collect();
        if let Some(kept_box) = Box3::of(&kept) {
            let squared = squared_distances(queries, query_box, &kept, kept_box, spacing);
            let proven = queries.iter().zip(&squared).all(|(q, &d2)| {
                // Distance from q to the nearest left-out site is at least its distance
                // to the near box's faces that have sites beyond them.
                let bound = (0..3)
                    .flat_map(|a| {
                        let below = (near.min[a] > site_box.min[a])
                            .then(|| (q[a] as f64 - near.min[a] as f64 + 1.0) * spacing[a]);
                        let above = (near.max[a] < site_box.max[a])
                            .then(|| (near.max[a] as f64 + 1.0 - q[a] as f64) * spacing[a]);
                        [below, above]
                    })
                    .flatten()
                    .fold(f64::INFINITY, f64::min);
                d2 <= bound * bound
            });
            if proven {
                return squared.into_iter().map(f64::sqrt).collect();
            }
        }
    }
    squared_distances(queries, query_box, sites, site_box, spacing)
        .into_iter()
        .map(f64::sqrt)
        .collect()
}

/// Squared distances from each query to the nearest site.
fn squared_distances(
    queries: &[Point],
    qb: Box3,
    sites: &[Point],
    sb: Box3,
    spacing: [f64; 3],
) -> Vec<f64> {
    let (qx, qy) = (qb.len(0), qb.len(1));
    let (sy, sz) = (sb.len(1), sb.len(2));
    // x range scanned per row: the queries' and the sites' x extents.
    let x0 = qb.min[0].min(sb.min[0]);
    let scan_len = (qb.max[0].max(sb.max[0]) - x0) as usize + 1;
    let q_offset = (qb.min[0] - x0) as usize;

    // Sites as a row mask over the scan range, slice by slice.
    let mut mask = vec![0u8; scan_len * sy * sz];
    for p in sites {
        let row = (p[1] - sb.min[1]) as usize + sy * (p[2] - sb.min[2]) as usize;
        mask[row * scan_len + (p[0] - x0) as usize] = 1;
    }

    // Passes x and y, slice by slice; output z-fastest: a2[z + sz·(x + qx·y)].
    let mut a2 = vec![f64::INFINITY; sz * qx * qy];
    let mut slice_x = vec![f64::INFINITY; qx * sy];
    let mut group = vec![f64::INFINITY; SLAB_GROUP * qx * qy];
    let mut scan = vec![f64::INFINITY; scan_len];
    let mut envelope = Envelope::new(sy.max(sz));
    let mut tile = vec![0.0; TILE * sy];
    let mut tile_out = vec![0.0; TILE * qy];
    let y_shift = qb.min[1] as i64 - sb.min[1] as i64;
    for z in 0..sz {
        for y in 0..sy {
            let row = (y + sy * z) * scan_len;
            nearest_in_row(&mask[row..row + scan_len], &mut scan, spacing[0]);
            slice_x[y * qx..(y + 1) * qx].copy_from_slice(&scan[q_offset..q_offset + qx]);
        }
        let out = &mut group[(z % SLAB_GROUP) * qx * qy..][..qx * qy];
        for x0 in (0..qx).step_by(TILE) {
            let w = TILE.min(qx - x0);
            for y in 0..sy {
                for t in 0..w {
                    tile[t * sy + y] = slice_x[y * qx + x0 + t];
                }
            }
            for t in 0..w {
                let line = &mut tile_out[t * qy..(t + 1) * qy];
                if envelope.build(&tile[t * sy..(t + 1) * sy], spacing[1]) {
                    for (o, v) in line.iter_mut().zip(envelope.evaluate_from(y_shift, qy)) {
                        *o = v;
                    }
                } else {
                    line.fill(f64::INFINITY);
                }
            }
            for y in 0..qy {
                for t in 0..w {
                    out[x0 + t + qx * y] = tile_out[t * qy + y];
                }
            }
        }
        if z % SLAB_GROUP == SLAB_GROUP - 1 || z == sz - 1 {
            let first = z - z % SLAB_GROUP;
            for (column, chunk) in a2.chunks_exact_mut(sz).enumerate() {
                for (slot, zi) in (first..=z).enumerate() {
                    chunk[zi] = group[slot * qx * qy + column];
                }
            }
        }
    }

    // Pass z along each line that holds a query.
    let lines = group_by_line(queries, qb);
    let mut out = vec![f64::INFINITY; queries.len()];
    let z_of = |i: u32| queries[i as usize][2] as i64 - sb.min[2] as i64;
    for (line, members) in lines.iter() {
        let f = &a2[line * sz..(line + 1) * sz];
        if members.len() <= DIRECT_QUERIES {
            for &i in members {
                out[i as usize] = lowest_parabola(f, z_of(i), spacing[2]);
            }
        } else if envelope.build(f, spacing[2]) {
            for &i in members {
                out[i as usize] = envelope.at(z_of(i));
            }
        }
    }
    out
}

/// Below this many queries on a line, trying every parabola beats building the envelope.
const DIRECT_QUERIES: usize = 4;

/// min over p of `(spacing·(q − p))² + f(p)`: the envelope at one point, by trying all.
fn lowest_parabola(f: &[f64], q: i64, spacing: f64) -> f64 {
    f.iter()
        .enumerate()
        .map(|(p, &fp)| {
            let d = (q - p as i64) as f64 * spacing;
            d * d + fp
        })
        .fold(f64::INFINITY, f64::min)
}

/// Squared distance along a row to the nearest site in that row.
fn nearest_in_row(sites: &[u8], out: &mut [f64], spacing: f64) {
    let mut last: Option<usize> = None;
    for (x, (&s, d)) in sites.iter().zip(out.iter_mut()).enumerate() {
        if s != 0 {
            last = Some(x);
        }
        *d = match last {
            Some(l) => {
                let dx = (x - l) as f64 * spacing;
                dx * dx
            }
            None => f64::INFINITY,
        };
    }
    let mut next: Option<usize> = None;
    for (x, (&s, d)) in sites.iter().zip(out.iter_mut()).enumerate().rev() {
        if s != 0 {
            next = Some(x);
        }
        if let Some(n) = next {
            let dx = (n - x) as f64 * spacing;
            *d = d.min(dx * dx);
        }
    }
}

/// Query indices grouped by (x, y) line of the queries' box, as (line, members).
struct LineGroups {
    starts: Vec<u32>,
    members: Vec<u32>,
}

impl LineGroups {
    fn iter(&self) -> impl Iterator<Item = (usize, &[u32])> {
        self.starts
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] < w[1])
            .map(|(line, w)| (line, &self.members[w[0] as usize..w[1] as usize]))
    }
}

fn group_by_line(queries: &[Point], qb: Box3) -> LineGroups {
    let qx = qb.len(0);
    let line = |p: &Point| (p[0] - qb.min[0]) as usize + qx * (p[1] - qb.min[1]) as usize;
    let mut starts = vec![0u32; qx * qb.len(1) + 1];
    for p in queries {
        starts[line(p) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut fill = starts.clone();
    let mut members = vec![0u32; queries.len()];
    for (i, p) in queries.iter().enumerate() {
        let slot = &mut fill[line(p)];
        members[*slot as usize] = i as u32;
        *slot += 1;
    }
    LineGroups { starts, members }
}

/// Lower envelope of the parabolas `(spacing·(q − p))² + f(p)` of one line.
struct Envelope {
    vertices: Vec<usize>,
    values: Vec<f64>,
    bounds: Vec<f64>,
    count: usize,
    spacing: f64,
}

impl Envelope {
    fn new(max_len: usize) -> Self {
        Envelope {
            vertices: vec![0; max_len],
            values: vec![0.0; max_len],
            bounds: vec![0.0; max_len + 1],
            count: 0,
            spacing: 1.0,
        }
    }

    /// Builds the envelope of `f`; false when `f` has no finite value.
    fn build(&mut self, f: &[f64], spacing: f64) -> bool {
        let Some(first) = f.iter().position(|v| v.is_finite()) else {
            return false;
        };
        let s2 = spacing * spacing;
        let (v, z) = (&mut self.vertices, &mut self.bounds);
        let mut k = 0usize;
        v[0] = first;
        z[0] = f64::NEG_INFINITY;
        z[1] = f64::INFINITY;
        for (q, &fq) in f.iter().enumerate().skip(first + 1) {
            if !fq.is_finite() {
                continue;
            }
            loop {
                let p = v[k];
                // Where the parabolas of p and q meet. z[0] is −∞, so k stays ≥ 0.
                let meet =
                    ((fq - f[p]) / s2 + (q * q) as f64 - (p * p) as f64) / (2 * (q - p)) as f64;
                if meet <= z[k] {
                    k -= 1;
                } else {
                    k += 1;
                    v[k] = q;
                    z[k] = meet;
                    z[k + 1] = f64::INFINITY;
                    break;
                }
            }
        }
        self.count = k + 1;
        for i in 0..self.count {
            self.values[i] = f[v[i]];
        }
        self.spacing = spacing;
        true
    }

    fn value(&self, k: usize, q: i64) -> f64 {
        let d = (q - self.vertices[k] as i64) as f64 * self.spacing;
        d * d + self.values[k]
    }

    /// The envelope at `start, start + 1, …` (`n` positions, line coordinates).
    fn evaluate_from(&self, start: i64, n: usize) -> impl Iterator<Item = f64> + '_ {
        let mut k = 0usize;
        (start..start + n as i64).map(move |q| {
            while k + 1 < self.count && self.bounds[k + 1] < q as f64 {
                k += 1;
            }
            self.value(k, q)
        })
    }

    /// The envelope at one position.
    fn at(&self, q: i64) -> f64 {
        let k = self.bounds[1..self.count].partition_point(|&b| b < q as f64);
        self.value(k, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute_force(queries: &[Point], sites: &[Point], spacing: [f64; 3]) -> Vec<f64> {
        queries
            .iter()
            .map(|q| {
                sites
                    .iter()
                    .map(|s| {
                        let d = |a: usize| {
                            let v = q[a].abs_diff(s[a]) as f64 * spacing[a];
                            v * v
                        };
                        d(0) + d(1) + d(2)
                    })
                    .fold(f64::INFINITY, f64::min)
                    .sqrt()
            })
            .collect()
    }

    fn points(max: [u32; 3], n: usize) -> impl Strategy<Value = Vec<Point>> {
        prop::collection::vec(
            (0..max[0], 0..max[1], 0..max[2]).prop_map(|(x, y, z)| [x, y, z]),
            0..n,
        )
    }

    proptest! {
        #[test]
        fn equals_brute_force(
            queries in points([14, 12, 9], 40),
            sites in points([14, 12, 9], 30),
            spacing in (0.2f64..3.0, 0.2f64..3.0, 0.2f64..3.0),
        ) {
            let spacing = [spacing.0, spacing.1, spacing.2];
            let fast = nearest_site_distances(&queries, &sites, spacing);
            prop_assert_eq!(fast, brute_force(&queries, &sites, spacing));
        }

        #[test]
        fn far_apart_points_use_the_margin_check(
            queries in points([6, 6, 6], 20),
            sites in points([6, 6, 6], 20),
            far in points([4, 4, 4], 5),
            offset in 30u32..200,
        ) {
            // Sites near the queries plus a cluster far away, and the reverse.
            let spacing = [0.7, 0.9, 2.5];
            let shifted: Vec<Point> = far.iter().map(|p| [p[0] + offset, p[1] + offset / 2, p[2] + offset / 3]).collect();
            let all: Vec<Point> = sites.iter().chain(&shifted).copied().collect();
            prop_assert_eq!(nearest_site_distances(&queries, &all, spacing), brute_force(&queries, &all, spacing));
            prop_assert_eq!(nearest_site_distances(&all, &queries, spacing), brute_force(&all, &queries, spacing));
        }
    }

    proptest! {
        #[test]
        fn dense_query_lines_equal_brute_force(
            sites in points([9, 7, 11], 25),
            spacing in (0.2f64..3.0, 0.2f64..3.0, 0.2f64..3.0),
        ) {
            // Every lattice point is a query, so lines take the envelope path.
            let queries: Vec<Point> = (0..11).flat_map(|z| (0..7).flat_map(move |y| (0..9).map(move |x| [x, y, z]))).collect();
            let spacing = [spacing.0, spacing.1, spacing.2];
            prop_assert_eq!(nearest_site_distances(&queries, &sites, spacing), brute_force(&queries, &sites, spacing));
        }
    }

    #[test]
    fn no_sites_is_infinite() {
        let d = nearest_site_distances(&[[1, 2, 3]], &[], [1.0; 3]);
        assert_eq!(d, vec![f64::INFINITY]);
        assert!(nearest_site_distances(&[], &[[0, 0, 0]], [1.0; 3]).is_empty());
    }

    #[test]
    fn planar_and_single_points() {
        let d = nearest_site_distances(&[[0, 0, 0], [3, 4, 0]], &[[0, 0, 0]], [1.0, 1.0, 1.0]);
        assert_eq!(d, vec![0.0, 5.0]);
        let d = nearest_site_distances(&[[1, 1, 1]], &[[0, 0, 0], [1, 1, 3]], [1.0, 2.0, 3.0]);
        assert_eq!(d, vec![(1.0f64 + 4.0 + 9.0).sqrt()]);
    }
}
