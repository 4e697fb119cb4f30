//! Exact Euclidean distance transform with anisotropic spacing.
//!
//! Separable: a linear scan along x (the input is binary), then the lower envelope
//! of parabolas along y and z (Felzenszwalb & Huttenlocher, "Distance Transforms of
//! Sampled Functions", 2012). Written here because no maintained crate offers an
//! exact, anisotropic, 3D transform over a caller's sub-box. Squared distances add
//! up per axis in x, y, z order, like scipy's `distance_transform_edt`, so values
//! agree bit for bit with a direct computation from the nearest site.

/// Lines gathered together in the y and z passes, so each cache line read is used whole.
const TILE: usize = 8;

/// Squared distance in mm² from every point of a `dims` box (x fastest) to the
/// nearest point where `sites` is non-zero; `f64::INFINITY` everywhere if there is none.
pub fn squared_distances(sites: &[u8], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let [nx, ny, nz] = dims;
    debug_assert_eq!(sites.len(), nx * ny * nz);
    let mut out = vec![f64::INFINITY; sites.len()];
    if sites.is_empty() {
        return out;
    }
    for (row, site_row) in out.chunks_exact_mut(nx).zip(sites.chunks_exact(nx)) {
        scan_row(site_row, row, spacing[0]);
    }
    let mut lines = Lines::new(ny.max(nz));
    if ny > 1 {
        for slab in out.chunks_exact_mut(nx * ny) {
            lines.transform_strided(slab, nx, ny, nx, spacing[1]);
        }
    }
    if nz > 1 {
        // Lines along z: for each y, the x-tiles of that row across all slices.
        for y in 0..ny {
            lines.transform_strided(&mut out[y * nx..], nx, nz, nx * ny, spacing[2]);
        }
    }
    out
}

/// Squared distance along a row to the nearest site in that row.
fn scan_row(sites: &[u8], out: &mut [f64], spacing: f64) {
    let mut last: Option<usize> = None;
    for (x, (&s, d)) in sites.iter().zip(out.iter_mut()).enumerate() {
        if s != 0 {
            last = Some(x);
        }
        if let Some(l) = last {
            let dx = (x - l) as f64 * spacing;
            *d = dx * dx;
        }
    }
    let mut next: Option<usize> = None;
    for (x, (&s, d)) in sites.iter().zip(out.iter_mut()).enumerate().rev() {
        if s != 0 {
            next = Some(x);
        }
        if let Some(n) = next {
            let dx = (n - x) as f64 * spacing;
            let dx2 = dx * dx;
            if dx2 < *d {
                *d = dx2;
            }
        }
    }
}

/// Scratch space for the 1D lower-envelope transform of a tile of lines.
struct Lines {
    tile: Vec<f64>,
    vertices: Vec<usize>,
    bounds: Vec<f64>,
    result: Vec<f64>,
}

impl Lines {
    fn new(max_len: usize) -> Self {
        Lines {
            tile: vec![0.0; TILE * max_len],
            vertices: vec![0; max_len],
            bounds: vec![0.0; max_len + 1],
            result: vec![0.0; max_len],
        }
    }

    /// Transforms `width` parallel lines of `len` points `stride` apart, starting at
    /// `data[0..width]`, in tiles of adjacent lines.
    fn transform_strided(
        &mut self,
        data: &mut [f64],
        width: usize,
        len: usize,
        stride: usize,
        spacing: f64,
    ) {
        for x0 in (0..width).step_by(TILE) {
            let w = TILE.min(width - x0);
            for i in 0..len {
                let src = &data[x0 + i * stride..x0 + i * stride + w];
                for (t, &v) in src.iter().enumerate() {
                    self.tile[t * len + i] = v;
                }
            }
            for t in 0..w {
                let line = t * len..(t + 1) * len;
                if self.envelope(line.clone(), spacing) {
                    self.tile[line].copy_from_slice(&self.result[..len]);
                }
            }
            for i in 0..len {
                let dst = &mut data[x0 + i * stride..x0 + i * stride + w];
                for (t, v) in dst.iter_mut().enumerate() {
                    *v = self.tile[t * len + i];
                }
            }
        }
    }

    /// Lower envelope of parabolas `(spacing·(q−p))² + f(p)` over one line of the
    /// tile; writes it to `result` and returns false when the line has no finite value.
    fn envelope(&mut self, line: std::ops::Range<usize>, spacing: f64) -> bool {
        let f = &self.tile[line];
        let Some(first) = f.iter().position(|v| v.is_finite()) else {
            return false;
        };
        let s2 = spacing * spacing;
        let v = &mut self.vertices;
        let z = &mut self.bounds;
        let mut k = 0usize;
        v[0] = first;
        z[0] = f64::NEG_INFINITY;
        z[1] = f64::INFINITY;
        for q in first + 1..f.len() {
            let fq = f[q];
            if !fq.is_finite() {
                continue;
            }
            loop {
                let p = v[k];
                // Where the parabolas of p and q meet, in index units. z[0] is −∞,
                // so k never drops below 0.
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
        let mut k = 0usize;
        for (q, out) in self.result[..f.len()].iter_mut().enumerate() {
            while z[k + 1] < q as f64 {
                k += 1;
            }
            let p = v[k];
            let d = (q.abs_diff(p)) as f64 * spacing;
            *out = d * d + f[p];
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Nearest-site distance by trying every site, summed in x, y, z order.
    fn brute_force(sites: &[u8], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
        let coords = |i: usize| {
            [
                i % dims[0],
                (i / dims[0]) % dims[1],
                i / (dims[0] * dims[1]),
            ]
        };
        let site_points: Vec<[usize; 3]> = (0..sites.len())
            .filter(|&i| sites[i] != 0)
            .map(coords)
            .collect();
        (0..sites.len())
            .map(|i| {
                let q = coords(i);
                site_points
                    .iter()
                    .map(|s| {
                        let d = |a: usize| {
                            let v = q[a].abs_diff(s[a]) as f64 * spacing[a];
                            v * v
                        };
                        d(0) + d(1) + d(2)
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn equals_brute_force(
            dims in (1usize..12, 1usize..12, 1usize..9),
            density in 0.0f64..0.3,
            seed in any::<u64>(),
            spacing in (0.2f64..3.0, 0.2f64..3.0, 0.2f64..3.0),
        ) {
            let dims = [dims.0, dims.1, dims.2];
            let n = dims.iter().product::<usize>();
            let mut state = seed | 1;
            let sites: Vec<u8> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state % 10_000) as f64 / 10_000.0 < density) as u8
                })
                .collect();
            let spacing = [spacing.0, spacing.1, spacing.2];
            let fast = squared_distances(&sites, dims, spacing);
            let slow = brute_force(&sites, dims, spacing);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                prop_assert!(a == b || (a - b).abs() <= 1e-12 * b, "voxel {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn no_sites_is_infinite() {
        let d = squared_distances(&[0; 8], [2, 2, 2], [1.0; 3]);
        assert!(d.iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn single_site_distances() {
        let mut sites = vec![0u8; 27];
        sites[13] = 1; // centre of 3×3×3
        let d = squared_distances(&sites, [3, 3, 3], [1.0, 2.0, 3.0]);
        assert_eq!(d[13], 0.0);
        assert_eq!(d[0], 1.0 + 4.0 + 9.0);
        assert_eq!(d[12], 1.0);
        assert_eq!(d[4], 9.0);
    }
}
