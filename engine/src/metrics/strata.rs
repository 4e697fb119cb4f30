//! Size strata: results grouped by the reference volume of a structure or of
//! a lesion, so that small structures are not averaged away by large ones.

use super::lesions::ReferenceLesion;

/// Default band edges in mL for a structure: < 10, 10–100, 100–1000, ≥ 1000.
pub const STRUCTURE_BANDS_ML: [f64; 3] = [10.0, 100.0, 1000.0];

/// Default band edges in mL for lesions (a 0.1 mL sphere is about 6 mm across,
/// 1 mL 12 mm, 10 mL 27 mm): < 0.1, 0.1–1, 1–10, ≥ 10.
pub const LESION_BANDS_ML: [f64; 3] = [0.1, 1.0, 10.0];

/// The band of a volume under ascending `edges`: how many edges are at or
/// below it (0 to `edges.len()`).
pub fn band(volume_ml: f64, edges: &[f64]) -> usize {
    edges.iter().take_while(|&&edge| edge <= volume_ml).count()
}

/// A band's name: `<10 mL`, `10–100 mL` or `≥1000 mL`.
pub fn band_name(band: usize, edges: &[f64]) -> String {
    match (band.checked_sub(1).map(|i| edges[i]), edges.get(band)) {
        (None, Some(upper)) => format!("<{upper} mL"),
        (Some(lower), Some(upper)) => format!("{lower}–{upper} mL"),
        (Some(lower), None) => format!("≥{lower} mL"),
        (None, None) => "all".to_owned(),
    }
}

/// Reference lesions and those detected (matched), by band of their volume
/// under `edges`: one entry per band, empty bands included.
pub fn lesions_by_band(lesions: &[ReferenceLesion], edges: &[f64]) -> Vec<(u32, u32)> {
    let mut counts = vec![(0, 0); edges.len() + 1];
    for lesion in lesions {
        let (reference, detected) = &mut counts[band(lesion.volume_ml, edges)];
        *reference += 1;
        *detected += u32::from(!lesion.matched.is_empty());
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::{STRUCTURE_BANDS_ML, band, band_name};

    #[test]
    fn an_edge_belongs_to_the_band_above_it() {
        let edges = STRUCTURE_BANDS_ML;
        let bands: Vec<usize> = [0.0, 9.99, 10.0, 99.0, 100.0, 1000.0, 5000.0]
            .iter()
            .map(|&v| band(v, &edges))
            .collect();
        assert_eq!(bands, [0, 0, 1, 1, 2, 3, 3]);
        let names: Vec<String> = (0..4).map(|b| band_name(b, &edges)).collect();
        assert_eq!(names, ["<10 mL", "10–100 mL", "100–1000 mL", "≥1000 mL"]);
        assert_eq!(band_name(0, &[]), "all");
    }
}
