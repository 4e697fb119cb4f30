//! Float NIfTI files of probabilities: one channel per structure along the
//! fourth dimension (a 3-D file is one channel), read channel by channel in
//! blocks so that no channel is ever held whole.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use super::nifti::{gzip_context, read_exact, read_header, scaling, shape_of, skip_to_data};
use super::{FormatError, Limits};
use crate::volume::Grid;

/// Voxels converted and handed over at once.
const BLOCK: usize = 1 << 16;
/// Bytes the reader's buffers take at most: a block of raw values (float64 at
/// most) and of converted ones. Reading never holds more of the voxel data.
pub const READ_BUFFER_BYTES: u64 = (BLOCK * 16) as u64;
/// Most channels a file may have.
pub const MAX_CHANNELS: usize = 4096;

/// Receives a probability file's grid, then its values block by block.
pub trait ProbabilitySink {
    /// What the sink can fail with; format errors convert into it.
    type Error: From<FormatError>;
    /// Called once, before any value, with the file's grid and channel count.
    fn start(&mut self, grid: &Grid, channels: usize) -> Result<(), Self::Error>;
    /// Values of `channel` from voxel index `first` on (x fastest), each a
    /// finite number from 0 to 1.
    fn block(&mut self, channel: usize, first: usize, values: &[f64]) -> Result<(), Self::Error>;
}

/// A failure of the file or of the sink, kept apart so that inflate failures
/// can be told from bad images.
enum Failure<E> {
    Format(FormatError),
    Sink(E),
}

impl<E> From<FormatError> for Failure<E> {
    fn from(err: FormatError) -> Self {
        Failure::Format(err)
    }
}

/// Bytes of voxel data a probability file declares, every channel counted,
/// read from its header alone (None when the header is unreadable): what
/// holding the file inflated takes.
pub fn declared_bytes(bytes: &[u8]) -> Option<u64> {
    let header = if bytes.starts_with(&[0x1f, 0x8b]) {
        read_header(&mut MultiGzDecoder::new(bytes)).ok()?
    } else {
        read_header(&mut &bytes[..]).ok()?
    };
    let ndim = usize::try_from(header.dim[0])
        .ok()
        .filter(|n| (1..=7).contains(n))?;
    let width = u64::try_from(header.bitpix).ok()? / 8;
    header.dim[1..=ndim]
        .iter()
        .try_fold(width, |acc, &n| acc.checked_mul(u64::try_from(n).ok()?))
}

/// Reads a `.nii` or `.nii.gz` file of probabilities into `sink`.
pub fn read_path<S: ProbabilitySink>(
    path: &Path,
    limits: &Limits,
    sink: &mut S,
) -> Result<(), S::Error> {
    let file = File::open(path).map_err(FormatError::from)?;
    read(BufReader::with_capacity(1 << 16, file), limits, sink)
}

/// Decodes a probability file held in memory into `sink`.
pub fn decode<S: ProbabilitySink>(
    bytes: &[u8],
    limits: &Limits,
    sink: &mut S,
) -> Result<(), S::Error> {
    read(bytes, limits, sink)
}

fn read<R: BufRead, S: ProbabilitySink>(
    mut input: R,
    limits: &Limits,
    sink: &mut S,
) -> Result<(), S::Error> {
    let gzip = input
        .fill_buf()
        .map_err(FormatError::from)?
        .starts_with(&[0x1f, 0x8b]);
    let result = if gzip {
        read_plain(MultiGzDecoder::new(input), limits, sink)
    } else {
        read_plain(input, limits, sink)
    };
    match result {
        Ok(()) => Ok(()),
        Err(Failure::Format(err)) if gzip => Err(gzip_context(err).into()),
        Err(Failure::Format(err)) => Err(err.into()),
        Err(Failure::Sink(err)) => Err(err),
    }
}

fn read_plain<R: Read, S: ProbabilitySink>(
    mut input: R,
    limits: &Limits,
    sink: &mut S,
) -> Result<(), Failure<S::Error>> {
    let header = read_header(&mut input)?;
    let width = match (header.datatype, header.bitpix) {
        (16, 32) => 4,
        (64, 64) => 8,
        (code, bits) => {
            return Err(FormatError::Datatype(format!(
                "datatype code {code} ({bits} bits): probabilities must be float32 (16) or float64 (64)"
            ))
            .into());
        }
    };
    let ndim = header.dim[0];
    let channels = if ndim >= 4 { header.dim[4] } else { 1 };
    let channels = usize::try_from(channels)
        .ok()
        .filter(|c| (1..=MAX_CHANNELS).contains(c))
        .ok_or_else(|| {
            FormatError::Header(format!(
                "dim[4] = {channels}: give 1 to {MAX_CHANNELS} channels, one per structure"
            ))
        })?;
    let mut spatial = header.clone();
    spatial.dim[4] = 1;
    spatial.dim[0] = ndim.min(3);
    if (5..=7).any(|i| i as i64 <= ndim && header.dim[i] != 1) {
        return Err(FormatError::Header(
            "dimensions 5 to 7 must be 1: channels run along the fourth".into(),
        )
        .into());
    }
    let (shape, dims) = shape_of(&spatial)?;
    let voxels = shape.iter().product::<usize>();
    if voxels as u64 > limits.max_voxels {
        return Err(FormatError::TooLarge(format!(
            "declared shape {:?} exceeds the limit of {} voxels",
            &shape[..dims as usize],
            limits.max_voxels
        ))
        .into());
    }
    let grid = super::nifti::grid_of(&header, shape, dims)?;
    sink.start(&grid, channels).map_err(Failure::Sink)?;
    skip_to_data(&mut input, &header)?;
    let scale = scaling(&header);
    let mut raw = vec![0u8; BLOCK * width];
    let mut values = Vec::with_capacity(BLOCK);
    for channel in 0..channels {
        let mut first = 0;
        while first < voxels {
            let n = BLOCK.min(voxels - first);
            read_exact(&mut input, &mut raw[..n * width], "the voxel data")?;
            convert(
                &raw[..n * width],
                width,
                header.big_endian,
                scale,
                &mut values,
            );
            // One branch-free pass over the block; the position only on failure.
            if !values
                .iter()
                .fold(true, |ok, v| ok & (0.0..=1.0).contains(v))
            {
                let (i, v) = values
                    .iter()
                    .enumerate()
                    .find(|(_, v)| !(0.0..=1.0).contains(*v))
                    .unwrap_or((0, &f64::NAN));
                return Err(FormatError::Value(format!(
                    "voxel {} of channel {channel} holds {v}, which is not a probability (0 to 1)",
                    first + i
                ))
                .into());
            }
            sink.block(channel, first, &values).map_err(Failure::Sink)?;
            first += n;
        }
    }
    Ok(())
}

/// Stored floats of `width` bytes (4 or 8) as f64 into `out`, scaled by
/// `scl_slope` / `scl_inter` when they apply.
fn convert(
    raw: &[u8],
    width: usize,
    big_endian: bool,
    scale: Option<(f64, f64)>,
    out: &mut Vec<f64>,
) {
    out.clear();
    let four = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let eight = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    let chunks = raw.chunks_exact(width);
    match (width, big_endian) {
        (4, false) => out.extend(chunks.map(|b| f64::from(f32::from_le_bytes(four(b))))),
        (4, true) => out.extend(chunks.map(|b| f64::from(f32::from_be_bytes(four(b))))),
        (_, false) => out.extend(chunks.map(|b| f64::from_le_bytes(eight(b)))),
        (_, true) => out.extend(chunks.map(|b| f64::from_be_bytes(eight(b)))),
    }
    if let Some((slope, inter)) = scale {
        for v in out.iter_mut() {
            *v = *v * slope + inter;
        }
    }
}

/// Encodes probability channels (each `grid.len()` values, x fastest) as a
/// float32 NIfTI-1 file, channels along the fourth dimension.
pub fn encode(grid: &Grid, channels: &[Vec<f32>], gzip: bool) -> Vec<u8> {
    let mut bytes = super::nifti::header_bytes(grid, 16, 32, channels.len());
    for channel in channels {
        bytes.extend(channel.iter().flat_map(|v| v.to_le_bytes()));
    }
    if gzip {
        super::nifti::gzipped(&bytes)
    } else {
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that keeps the grid and every value, checking blocks arrive in order.
    #[derive(Default)]
    struct Keep {
        grid: Option<Grid>,
        channels: Vec<Vec<f64>>,
    }

    impl ProbabilitySink for Keep {
        type Error = FormatError;
        fn start(&mut self, grid: &Grid, channels: usize) -> Result<(), FormatError> {
            self.grid = Some(grid.clone());
            self.channels = vec![Vec::new(); channels];
            Ok(())
        }
        fn block(
            &mut self,
            channel: usize,
            first: usize,
            values: &[f64],
        ) -> Result<(), FormatError> {
            assert_eq!(self.channels[channel].len(), first);
            self.channels[channel].extend_from_slice(values);
            Ok(())
        }
    }

    #[test]
    fn channels_arrive_whole_across_blocks_and_gzip() {
        // 300 × 300 voxels: two blocks per channel.
        let grid = Grid::axis_aligned([300, 300, 1], [0.5, 0.5, 1.0], 2);
        let n = grid.len();
        let channels: Vec<Vec<f32>> = (0..2)
            .map(|c| (0..n).map(|i| ((i + c) % 97) as f32 / 96.0).collect())
            .collect();
        for gzip in [false, true] {
            let mut keep = Keep::default();
            decode(
                &encode(&grid, &channels, gzip),
                &Limits::default(),
                &mut keep,
            )
            .unwrap();
            assert_eq!(keep.grid.as_ref(), Some(&grid));
            for (read, written) in keep.channels.iter().zip(&channels) {
                assert!(read.iter().zip(written).all(|(&r, &w)| r == f64::from(w)));
                assert_eq!(read.len(), n);
            }
        }
    }

    #[test]
    fn declared_bytes_count_every_channel() {
        let grid = Grid::axis_aligned([4, 3, 2], [1.0; 3], 3);
        let file = |channels: usize, gzip: bool| {
            encode(&grid, &vec![vec![0.5; grid.len()]; channels], gzip)
        };
        assert_eq!(declared_bytes(&file(1, false)), Some(24 * 4));
        assert_eq!(declared_bytes(&file(3, true)), Some(3 * 24 * 4));
        assert_eq!(declared_bytes(&file(3, false)[..100]), None);
    }

    #[test]
    fn scaling_applies_before_the_range_check() {
        let grid = Grid::axis_aligned([2, 2, 2], [1.0; 3], 3);
        let mut bytes = encode(&grid, &[vec![2.0; 8]], false);
        let mut keep = Keep::default();
        let err = decode(&bytes, &Limits::default(), &mut keep).unwrap_err();
        assert!(matches!(err, FormatError::Value(m) if m.contains("voxel 0 of channel 0 holds 2")));
        // scl_slope 0.25 (offset 112) makes every value 0.5.
        bytes[112..116].copy_from_slice(&0.25f32.to_le_bytes());
        decode(&bytes, &Limits::default(), &mut keep).unwrap();
        assert_eq!(keep.channels, [vec![0.5; 8]]);
    }
}
