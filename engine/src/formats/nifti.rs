//! NIfTI-1 and NIfTI-2 label images, plain or gzip-compressed, either byte order.
//!
//! Written by hand rather than with the `nifti` crate because that crate reads only
//! NIfTI-1, allocates the voxel data before the caller can check the declared size,
//! and cannot cap decompressed bytes; the fixed headers are simple to parse exactly.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use super::{FormatError, Limits};
use crate::volume::{Grid, LabelVolume, Labels};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Largest gap between header and voxel data (extensions) we will skip.
const MAX_EXTENSION_BYTES: u64 = 64 << 20;
/// Trailing bytes read after the voxel data so that gzip verifies its checksum.
const MAX_TRAILING_BYTES: u64 = 64 << 10;

/// Reads a `.nii` or `.nii.gz` file.
pub fn read_path(path: &Path, limits: &Limits) -> Result<LabelVolume, FormatError> {
    let open = || File::open(path).map(|f| BufReader::with_capacity(1 << 16, f));
    read(open()?, open, limits)
}

/// Decodes a NIfTI image held in memory.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<LabelVolume, FormatError> {
    read(bytes, || Ok(bytes), limits)
}

/// Decodes from a buffered reader, inflating first if the stream is gzip;
/// `reopen` gives the stream again to tell corrupt gzip from a bad image.
fn read<R: BufRead>(
    mut input: R,
    reopen: impl FnOnce() -> io::Result<R>,
    limits: &Limits,
) -> Result<LabelVolume, FormatError> {
    if !input.fill_buf()?.starts_with(&GZIP_MAGIC) {
        return read_plain(input, limits);
    }
    let err = match read_plain(MultiGzDecoder::new(input), limits) {
        Ok(volume) => return Ok(volume),
        Err(err) => gzip_context(err),
    };
    if matches!(
        err,
        FormatError::Gzip(_) | FormatError::Truncated(_) | FormatError::Io(_)
    ) {
        return Err(err);
    }
    // A damaged deflate stream can inflate to garbage before its checksum fails:
    // blame the compression rather than the garbage.
    let cap = limits.max_bytes + MAX_EXTENSION_BYTES + 1024;
    match io::copy(
        &mut MultiGzDecoder::new(reopen()?).take(cap),
        &mut io::sink(),
    ) {
        Err(e) => Err(gzip_context(FormatError::Io(e))),
        Ok(_) => Err(err),
    }
}

/// Voxels a NIfTI header declares, without reading the data; None if the
/// header cannot be read.
pub fn declared_voxels(bytes: &[u8]) -> Option<u64> {
    let header = if bytes.starts_with(&GZIP_MAGIC) {
        read_header(&mut MultiGzDecoder::new(bytes)).ok()?
    } else {
        read_header(&mut &bytes[..]).ok()?
    };
    let (shape, _) = shape_of(&header).ok()?;
    shape
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64))
}

/// Maps inflate failures, which surface as I/O errors, to format errors.
pub(super) fn gzip_context(err: FormatError) -> FormatError {
    match err {
        FormatError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            FormatError::Truncated(format!("the gzip stream ends early ({e})"))
        }
        FormatError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::Other
            ) =>
        {
            FormatError::Gzip(e.to_string())
        }
        other => other,
    }
}

/// The header fields segwatch needs, from either NIfTI version.
#[derive(Debug, Clone)]
pub(super) struct Header {
    header_len: u64,
    pub(super) dim: [i64; 8],
    pub(super) datatype: i16,
    pub(super) bitpix: i16,
    pixdim: [f64; 8],
    vox_offset: f64,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
    pub(super) big_endian: bool,
}

/// Little helper reading fixed-offset fields in the file's byte order.
struct Fields<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Fields<'_> {
    fn array<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.bytes[offset..offset + N]);
        if self.big_endian {
            out.reverse();
        }
        out
    }
    fn i16(&self, offset: usize) -> i16 {
        i16::from_le_bytes(self.array(offset))
    }
    fn i32(&self, offset: usize) -> i32 {
        i32::from_le_bytes(self.array(offset))
    }
    fn i64(&self, offset: usize) -> i64 {
        i64::from_le_bytes(self.array(offset))
    }
    fn f32(&self, offset: usize) -> f64 {
        f32::from_le_bytes(self.array(offset)) as f64
    }
    fn f64(&self, offset: usize) -> f64 {
        f64::from_le_bytes(self.array(offset))
    }
}

pub(super) fn read_header<R: Read>(input: &mut R) -> Result<Header, FormatError> {
    let mut bytes = vec![0u8; 540];
    read_exact(input, &mut bytes[..4], "the header")?;
    let le = i32::from_le_bytes(bytes[..4].try_into().unwrap_or_default());
    let be = i32::from_be_bytes(bytes[..4].try_into().unwrap_or_default());
    let (version, big_endian) = match (le, be) {
        (348, _) => (1, false),
        (_, 348) => (1, true),
        (540, _) => (2, false),
        (_, 540) => (2, true),
        _ => {
            return Err(FormatError::NotNifti(format!(
                "sizeof_hdr is {le}, expected 348 (NIfTI-1) or 540 (NIfTI-2)"
            )));
        }
    };
    let header_len = if version == 1 { 348 } else { 540 };
    read_exact(input, &mut bytes[4..header_len], "the header")?;
    let f = Fields {
        bytes: &bytes,
        big_endian,
    };
    if version == 1 {
        check_magic(&bytes[344..348], b"n+1\0", b"ni1\0")?;
        Ok(Header {
            header_len: header_len as u64,
            dim: std::array::from_fn(|i| f.i16(40 + 2 * i) as i64),
            datatype: f.i16(70),
            bitpix: f.i16(72),
            pixdim: std::array::from_fn(|i| f.f32(76 + 4 * i)),
            vox_offset: f.f32(108),
            scl_slope: f.f32(112),
            scl_inter: f.f32(116),
            qform_code: f.i16(252) as i32,
            sform_code: f.i16(254) as i32,
            quatern: std::array::from_fn(|i| f.f32(256 + 4 * i)),
            qoffset: std::array::from_fn(|i| f.f32(268 + 4 * i)),
            srow: std::array::from_fn(|r| std::array::from_fn(|c| f.f32(280 + 16 * r + 4 * c))),
            big_endian,
        })
    } else {
        check_magic(&bytes[4..8], b"n+2\0", b"ni2\0")?;
        Ok(Header {
            header_len: header_len as u64,
            dim: std::array::from_fn(|i| f.i64(16 + 8 * i)),
            datatype: f.i16(12),
            bitpix: f.i16(14),
            pixdim: std::array::from_fn(|i| f.f64(104 + 8 * i)),
            vox_offset: f.i64(168) as f64,
            scl_slope: f.f64(176),
            scl_inter: f.f64(184),
            qform_code: f.i32(344),
            sform_code: f.i32(348),
            quatern: std::array::from_fn(|i| f.f64(352 + 8 * i)),
            qoffset: std::array::from_fn(|i| f.f64(376 + 8 * i)),
            srow: std::array::from_fn(|r| std::array::from_fn(|c| f.f64(400 + 32 * r + 8 * c))),
            big_endian,
        })
    }
}

/// Whether `head` starts with a single-file NIfTI-1 or NIfTI-2 header:
/// `sizeof_hdr` 348 or 540 (either byte order) and its `n+1`/`n+2` magic.
pub fn has_signature(head: &[u8]) -> bool {
    let Some(size) = head.get(..4) else {
        return false;
    };
    let size: [u8; 4] = [size[0], size[1], size[2], size[3]];
    let (le, be) = (i32::from_le_bytes(size), i32::from_be_bytes(size));
    if le == 348 || be == 348 {
        head.get(344..348) == Some(b"n+1\0")
    } else if le == 540 || be == 540 {
        head.get(4..8) == Some(b"n+2\0")
    } else {
        false
    }
}

fn check_magic(found: &[u8], single: &[u8], pair: &[u8]) -> Result<(), FormatError> {
    if found == single {
        Ok(())
    } else if found == pair {
        Err(FormatError::NotNifti(
            "a detached .hdr/.img header; send the single-file .nii form".into(),
        ))
    } else {
        Err(FormatError::NotNifti(format!(
            "bad magic {:?}",
            String::from_utf8_lossy(found)
        )))
    }
}

/// Voxel storage types segwatch accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datatype {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl Datatype {
    fn from_code(code: i16) -> Result<Self, FormatError> {
        Ok(match code {
            2 => Datatype::U8,
            256 => Datatype::I8,
            512 => Datatype::U16,
            4 => Datatype::I16,
            768 => Datatype::U32,
            8 => Datatype::I32,
            1280 => Datatype::U64,
            1024 => Datatype::I64,
            16 => Datatype::F32,
            64 => Datatype::F64,
            32 | 1792 | 2048 => {
                return Err(FormatError::Datatype(format!(
                    "complex datatype code {code}; labels must be integers"
                )));
            }
            128 | 2304 => {
                return Err(FormatError::Datatype(format!(
                    "RGB datatype code {code}; labels must be integers"
                )));
            }
            1536 => {
                return Err(FormatError::Datatype(
                    "float128 (datatype code 1536)".into(),
                ));
            }
            other => {
                return Err(FormatError::Datatype(format!(
                    "unknown datatype code {other}"
                )));
            }
        })
    }

    fn bytes(self) -> usize {
        match self {
            Datatype::U8 | Datatype::I8 => 1,
            Datatype::U16 | Datatype::I16 => 2,
            Datatype::U32 | Datatype::I32 | Datatype::F32 => 4,
            Datatype::U64 | Datatype::I64 | Datatype::F64 => 8,
        }
    }
}

fn read_plain<R: Read>(mut input: R, limits: &Limits) -> Result<LabelVolume, FormatError> {
    let header = read_header(&mut input)?;
    let datatype = Datatype::from_code(header.datatype)?;
    if header.bitpix as usize != datatype.bytes() * 8 {
        return Err(FormatError::Header(format!(
            "bitpix {} disagrees with datatype code {} ({} bits)",
            header.bitpix,
            header.datatype,
            datatype.bytes() * 8
        )));
    }
    let (shape, dims) = shape_of(&header)?;
    let voxels = shape
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64))
        .filter(|&v| v <= limits.max_voxels)
        .ok_or_else(|| {
            FormatError::TooLarge(format!(
                "declared shape {:?} exceeds the limit of {} voxels",
                &shape[..dims as usize],
                limits.max_voxels
            ))
        })?;
    let data_bytes = voxels * datatype.bytes() as u64;
    if data_bytes > limits.max_bytes {
        return Err(FormatError::TooLarge(format!(
            "declared voxel data of {data_bytes} bytes exceeds the limit of {} bytes",
            limits.max_bytes
        )));
    }
    let grid = grid_of(&header, shape, dims)?;
    skip_to_data(&mut input, &header)?;

    let mut raw = vec![0u8; data_bytes as usize];
    read_exact(&mut input, &mut raw, "the voxel data")?;
    // Reading a little past the data lets a gzip stream check its CRC.
    io::copy(&mut input.take(MAX_TRAILING_BYTES), &mut io::sink())?;

    let labels = to_labels(raw, datatype, &header)?;
    Ok(LabelVolume::new(grid, labels).expect("voxel count matches the shape"))
}

/// Fills `buf` from `input`, or says which part ended early.
pub(super) fn read_exact<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    what: &str,
) -> Result<(), FormatError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(FormatError::Truncated(format!(
                    "{what} ends after {filled} of {} bytes",
                    buf.len()
                )));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Shape as [x, y, z] and the dimensionality (2 when dim[0] is 2 or z is 1).
pub(super) fn shape_of(header: &Header) -> Result<([usize; 3], u8), FormatError> {
    let dim = header.dim;
    let ndim = dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(FormatError::Header(format!(
            "dim[0] = {ndim}, expected 1 to 7"
        )));
    }
    for (i, &n) in dim.iter().enumerate().skip(1).take(ndim as usize) {
        if n < 1 {
            return Err(FormatError::Header(format!(
                "dim[{i}] = {n}, every dimension must be at least 1"
            )));
        }
    }
    if let Some(i) = (4..=ndim as usize).find(|&i| dim[i] != 1) {
        return Err(FormatError::Header(format!(
            "dim[{i}] = {}: time series and vector images are not label maps",
            dim[i]
        )));
    }
    let n = |i: usize| if (i as i64) <= ndim { dim[i] } else { 1 };
    let to_usize = |v: i64| {
        usize::try_from(v).map_err(|_| FormatError::Header(format!("dimension {v} too large")))
    };
    let shape = [to_usize(n(1))?, to_usize(n(2))?, to_usize(n(3))?];
    let dims = if ndim <= 2 || shape[2] == 1 { 2 } else { 3 };
    Ok((shape, dims))
}

pub(super) fn grid_of(header: &Header, shape: [usize; 3], dims: u8) -> Result<Grid, FormatError> {
    let mut spacing = [1.0; 3];
    for (axis, s) in spacing.iter_mut().enumerate() {
        let p = header.pixdim[axis + 1].abs();
        if axis < dims as usize {
            if !(p.is_finite() && p > 0.0) {
                return Err(FormatError::Header(format!(
                    "pixdim[{}] = {}: voxel spacing must be positive",
                    axis + 1,
                    header.pixdim[axis + 1]
                )));
            }
            *s = p;
        } else if p.is_finite() && p > 0.0 {
            *s = p;
        }
    }
    let affine = if header.sform_code > 0 {
        header.srow
    } else if header.qform_code > 0 {
        qform_affine(header, spacing)
    } else {
        Grid::axis_aligned(shape, spacing, dims).affine
    };
    let grid = Grid {
        shape,
        spacing,
        affine,
        dims,
    };
    if let Some(why) = grid.degeneracy() {
        let source = if header.sform_code > 0 {
            "sform (srow_x, srow_y, srow_z)"
        } else if header.qform_code > 0 {
            "qform"
        } else {
            "pixdim"
        };
        return Err(FormatError::Header(format!("{source}: {why}")));
    }
    Ok(grid)
}

/// The qform rotation (quaternion b, c, d; a implied), scaled by spacing and qfac.
fn qform_affine(header: &Header, spacing: [f64; 3]) -> [[f64; 4]; 3] {
    let [b, c, d] = header.quatern;
    let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    let rotation = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let qfac = if header.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let scale = [spacing[0], spacing[1], spacing[2] * qfac];
    std::array::from_fn(|r| {
        [
            rotation[r][0] * scale[0],
            rotation[r][1] * scale[1],
            rotation[r][2] * scale[2],
            header.qoffset[r],
        ]
    })
}

pub(super) fn skip_to_data<R: Read>(input: &mut R, header: &Header) -> Result<(), FormatError> {
    let offset = header.vox_offset;
    let min = header.header_len as f64;
    if !offset.is_finite() || offset < min || offset.fract() != 0.0 {
        return Err(FormatError::Header(format!(
            "vox_offset {offset} must be a whole number of at least {min}"
        )));
    }
    let gap = offset as u64 - header.header_len;
    if gap > MAX_EXTENSION_BYTES {
        return Err(FormatError::TooLarge(format!(
            "vox_offset {offset} leaves {gap} bytes of extensions, more than {MAX_EXTENSION_BYTES}"
        )));
    }
    let skipped = io::copy(&mut input.take(gap), &mut io::sink())?;
    if skipped < gap {
        return Err(FormatError::Truncated(format!(
            "the file ends before vox_offset {offset}"
        )));
    }
    Ok(())
}

/// Scaling from scl_slope / scl_inter, or None when it is the identity or disabled.
pub(super) fn scaling(header: &Header) -> Option<(f64, f64)> {
    let slope = header.scl_slope;
    let inter = if header.scl_inter.is_finite() {
        header.scl_inter
    } else {
        0.0
    };
    if slope == 0.0 || !slope.is_finite() || (slope == 1.0 && inter == 0.0) {
        None
    } else {
        Some((slope, inter))
    }
}

/// Converts raw voxel bytes to labels, checking every value is an integer in 0..=65535.
fn to_labels(raw: Vec<u8>, datatype: Datatype, header: &Header) -> Result<Labels, FormatError> {
    let scale = scaling(header);
    let big = header.big_endian;
    match datatype {
        Datatype::U8 if scale.is_none() => Ok(Labels::U8(raw)),
        Datatype::U8 => convert::<u8>(&raw, big, scale),
        Datatype::I8 => convert::<i8>(&raw, big, scale),
        Datatype::U16 => convert::<u16>(&raw, big, scale),
        Datatype::I16 => convert::<i16>(&raw, big, scale),
        Datatype::U32 => convert::<u32>(&raw, big, scale),
        Datatype::I32 => convert::<i32>(&raw, big, scale),
        Datatype::U64 => convert::<u64>(&raw, big, scale),
        Datatype::I64 => convert::<i64>(&raw, big, scale),
        Datatype::F32 => convert::<f32>(&raw, big, scale),
        Datatype::F64 => convert::<f64>(&raw, big, scale),
    }
}

/// A stored voxel type.
trait Raw: Copy {
    const WIDTH: usize;
    fn from_bytes(bytes: &[u8], big_endian: bool) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! raw_type {
    ($($t:ty),*) => {$(
        impl Raw for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn from_bytes(bytes: &[u8], big_endian: bool) -> Self {
                let array = bytes.try_into().unwrap_or_default();
                if big_endian { <$t>::from_be_bytes(array) } else { <$t>::from_le_bytes(array) }
            }
            #[inline(always)]
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
raw_type!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

/// Validates every value (after scaling) as a label, then stores them as u8 when
/// they all fit, else u16.
fn convert<T: Raw>(
    raw: &[u8],
    big_endian: bool,
    scale: Option<(f64, f64)>,
) -> Result<Labels, FormatError> {
    let value = |chunk: &[u8]| {
        let v = T::from_bytes(chunk, big_endian).to_f64();
        match scale {
            Some((slope, inter)) => v * slope + inter,
            None => v,
        }
    };
    let mut max = 0.0f64;
    for (index, chunk) in raw.chunks_exact(T::WIDTH).enumerate() {
        let v = value(chunk);
        if !((0.0..=u16::MAX as f64).contains(&v) && v.fract() == 0.0) {
            return Err(bad_value(v, index));
        }
        max = max.max(v);
    }
    let values = raw.chunks_exact(T::WIDTH).map(value);
    Ok(if max <= u8::MAX as f64 {
        Labels::U8(values.map(|v| v as u8).collect())
    } else {
        Labels::U16(values.map(|v| v as u16).collect())
    })
}

fn bad_value(v: f64, index: usize) -> FormatError {
    let why = if !v.is_finite() {
        "is not a finite number"
    } else if v.fract() != 0.0 {
        "is not an integer label (a probability map? send its thresholded labels, with the map as probabilities)"
    } else if v < 0.0 {
        "is negative"
    } else {
        "exceeds the largest label 65535"
    };
    FormatError::Value(format!("voxel {index} holds {v}, which {why}"))
}

/// Encodes a label volume as single-file NIfTI-1 (gzip-compressed when asked),
/// with the affine as sform and spacing in pixdim.
pub fn encode(volume: &LabelVolume, gzip: bool) -> Vec<u8> {
    let (datatype, bitpix): (i16, i16) = match volume.labels {
        Labels::U8(_) => (2, 8),
        Labels::U16(_) => (512, 16),
    };
    let mut bytes = header_bytes(&volume.grid, datatype, bitpix, 1);
    match &volume.labels {
        Labels::U8(v) => bytes.extend_from_slice(v),
        Labels::U16(v) => bytes.extend(v.iter().flat_map(|l| l.to_le_bytes())),
    }
    if gzip { gzipped(&bytes) } else { bytes }
}

/// A NIfTI-1 header (352 bytes with the extension flag) for voxel data of
/// `datatype` on `grid`, with `channels` along the fourth dimension when more
/// than one.
pub(super) fn header_bytes(grid: &Grid, datatype: i16, bitpix: i16, channels: usize) -> Vec<u8> {
    let mut header = vec![0u8; 352];
    let mut put =
        |offset: usize, bytes: &[u8]| header[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0, &348i32.to_le_bytes());
    let ndim: i16 = match (channels, grid.dims) {
        (2.., _) => 4,
        (_, 2) => 2,
        _ => 3,
    };
    let dim = [
        ndim,
        grid.shape[0] as i16,
        grid.shape[1] as i16,
        grid.shape[2] as i16,
        channels as i16,
        1,
        1,
        1,
    ];
    for (i, d) in dim.iter().enumerate() {
        put(40 + 2 * i, &d.to_le_bytes());
    }
    put(70, &datatype.to_le_bytes());
    put(72, &bitpix.to_le_bytes());
    let pixdim = [
        1.0,
        grid.spacing[0],
        grid.spacing[1],
        grid.spacing[2],
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    for (i, p) in pixdim.iter().enumerate() {
        put(76 + 4 * i, &(*p as f32).to_le_bytes());
    }
    put(108, &352f32.to_le_bytes());
    put(112, &1f32.to_le_bytes());
    put(254, &1i16.to_le_bytes());
    for (r, row) in grid.affine.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(280 + 16 * r + 4 * c, &(*v as f32).to_le_bytes());
        }
    }
    put(123, &[2]); // xyzt_units: millimetres
    put(344, b"n+1\0");
    header
}

/// `bytes` compressed as one gzip member.
pub(super) fn gzipped(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;

    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(bytes)
        .and_then(|_| encoder.finish())
        .expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: Labels, dims: u8) -> LabelVolume {
        let shape = if dims == 2 { [5, 3, 1] } else { [5, 3, 2] };
        let mut grid = Grid::axis_aligned(shape, [0.5, 0.75, 2.0], dims);
        grid.affine[0][3] = -10.0;
        grid.affine[1][0] = 0.0;
        let n = grid.len();
        let labels = match labels {
            Labels::U8(_) => Labels::U8((0..n).map(|i| (i % 4) as u8).collect()),
            Labels::U16(_) => Labels::U16((0..n).map(|i| (i * 1000) as u16).collect()),
        };
        LabelVolume::new(grid, labels).unwrap()
    }

    #[test]
    fn round_trips_plain_and_gzip() {
        for dims in [2, 3] {
            for labels in [Labels::U8(vec![]), Labels::U16(vec![])] {
                let volume = sample(labels, dims);
                for gzip in [false, true] {
                    let decoded = decode(&encode(&volume, gzip), &Limits::default()).unwrap();
                    assert_eq!(decoded, volume);
                }
            }
        }
    }

    /// Rewrites one header field of an uncompressed encoding.
    fn patched(offset: usize, bytes: &[u8]) -> Vec<u8> {
        let mut file = encode(&sample(Labels::U8(vec![]), 3), false);
        file[offset..offset + bytes.len()].copy_from_slice(bytes);
        file
    }

    fn error_of(file: &[u8]) -> String {
        decode(file, &Limits::default()).unwrap_err().to_string()
    }

    #[test]
    fn rejects_malformed_headers_with_specific_errors() {
        assert!(error_of(&patched(0, &349i32.to_le_bytes())).contains("sizeof_hdr is 349"));
        assert!(error_of(&patched(344, b"ni1\0")).contains("detached .hdr/.img"));
        assert!(error_of(&patched(344, b"xyz\0")).contains("bad magic"));
        assert!(
            error_of(&patched(72, &16i16.to_le_bytes()))
                .contains("bitpix 16 disagrees with datatype code 2")
        );
        assert!(error_of(&patched(70, &32i16.to_le_bytes())).contains("complex datatype"));
        assert!(error_of(&patched(70, &128i16.to_le_bytes())).contains("RGB datatype"));
        assert!(error_of(&patched(70, &99i16.to_le_bytes())).contains("unknown datatype code 99"));
        assert!(error_of(&patched(40, &0i16.to_le_bytes())).contains("dim[0] = 0"));
        assert!(error_of(&patched(42, &(-5i16).to_le_bytes())).contains("dim[1] = -5"));
        assert!(error_of(&patched(80, &0f32.to_le_bytes())).contains("pixdim[1] = 0"));
        assert!(error_of(&patched(108, &100f32.to_le_bytes())).contains("vox_offset 100"));
        // A fourth dimension of 3 is a time series.
        let mut file = patched(40, &4i16.to_le_bytes());
        file[48..50].copy_from_slice(&3i16.to_le_bytes());
        assert!(error_of(&file).contains("dim[4] = 3"));
    }

    #[test]
    fn rejects_truncated_data() {
        let file = encode(&sample(Labels::U8(vec![]), 3), false);
        assert!(error_of(&file[..file.len() - 1]).contains("voxel data ends after 29 of 30 bytes"));
        assert!(error_of(&file[..200]).contains("the header ends after"));
        let gz = encode(&sample(Labels::U8(vec![]), 3), true);
        let err = decode(&gz[..gz.len() / 2], &Limits::default()).unwrap_err();
        assert!(
            matches!(err, FormatError::Truncated(_) | FormatError::Gzip(_)),
            "{err}"
        );
    }

    #[test]
    fn rejects_corrupt_gzip() {
        let mut gz = encode(&sample(Labels::U8(vec![]), 3), true);
        let middle = gz.len() / 2;
        for b in &mut gz[12..middle] {
            *b ^= 0x5a;
        }
        assert!(
            error_of(&gz).starts_with("corrupt gzip data"),
            "{}",
            error_of(&gz)
        );
    }

    #[test]
    fn limits_apply_to_the_declared_size() {
        let file = patched(42, &30000i16.to_le_bytes());
        let limits = Limits {
            max_voxels: 1000,
            max_bytes: 1 << 20,
        };
        let err = decode(&file, &limits).unwrap_err();
        assert!(
            err.to_string().contains("exceeds the limit of 1000 voxels"),
            "{err}"
        );
        let limits = Limits {
            max_voxels: 1 << 30,
            max_bytes: 10,
        };
        let err = decode(&encode(&sample(Labels::U8(vec![]), 3), true), &limits).unwrap_err();
        assert!(
            err.to_string().contains("exceeds the limit of 10 bytes"),
            "{err}"
        );
    }

    fn with_values<T: Copy>(
        datatype: i16,
        bitpix: i16,
        values: &[T],
        to_bytes: impl Fn(T) -> Vec<u8>,
    ) -> Vec<u8> {
        let mut file = patched(70, &datatype.to_le_bytes());
        file[72..74].copy_from_slice(&bitpix.to_le_bytes());
        file.truncate(352);
        for i in 0..30 {
            file.extend(to_bytes(values[i % values.len()]));
        }
        file
    }

    #[test]
    fn accepts_integral_floats_and_rejects_the_rest() {
        let ok = with_values(16, 32, &[0.0f32, 1.0, 2.0], |v| v.to_le_bytes().to_vec());
        let volume = decode(&ok, &Limits::default()).unwrap();
        assert_eq!(volume.labels.get(2), 2);
        let half = with_values(16, 32, &[0.0f32, 0.5], |v| v.to_le_bytes().to_vec());
        assert!(error_of(&half).contains("voxel 1 holds 0.5, which is not an integer label"));
        let nan = with_values(64, 64, &[f64::NAN], |v| v.to_le_bytes().to_vec());
        assert!(error_of(&nan).contains("is not a finite number"));
        let negative = with_values(4, 16, &[-1i16], |v| v.to_le_bytes().to_vec());
        assert!(error_of(&negative).contains("is negative"));
        let big = with_values(8, 32, &[70000i32], |v| v.to_le_bytes().to_vec());
        assert!(error_of(&big).contains("exceeds the largest label 65535"));
        let wide = with_values(8, 32, &[300i32, 0], |v| v.to_le_bytes().to_vec());
        assert!(matches!(
            decode(&wide, &Limits::default()).unwrap().labels,
            Labels::U16(_)
        ));
    }

    #[test]
    fn applies_scaling() {
        let mut file = with_values(4, 16, &[0i16, 2, 4], |v| v.to_le_bytes().to_vec());
        file[112..116].copy_from_slice(&0.5f32.to_le_bytes());
        file[116..120].copy_from_slice(&1f32.to_le_bytes());
        let volume = decode(&file, &Limits::default()).unwrap();
        assert_eq!(
            (
                volume.labels.get(0),
                volume.labels.get(1),
                volume.labels.get(2)
            ),
            (1, 2, 3)
        );
    }

    #[test]
    fn reads_big_endian() {
        let volume = sample(Labels::U16(vec![]), 3);
        let mut file = encode(&volume, false);
        // Swap every header field we use, then the voxel data.
        let swap = |file: &mut Vec<u8>, offset: usize, width: usize| {
            file[offset..offset + width].reverse()
        };
        swap(&mut file, 0, 4);
        for i in 0..8 {
            swap(&mut file, 40 + 2 * i, 2);
            swap(&mut file, 76 + 4 * i, 4);
        }
        for offset in [70, 72, 254] {
            swap(&mut file, offset, 2);
        }
        for offset in (108..120).step_by(4).chain((280..328).step_by(4)) {
            swap(&mut file, offset, 4);
        }
        for offset in (352..file.len()).step_by(2) {
            swap(&mut file, offset, 2);
        }
        assert_eq!(decode(&file, &Limits::default()).unwrap(), volume);
    }

    #[test]
    fn qform_with_negative_qfac() {
        let mut file = encode(&sample(Labels::U8(vec![]), 3), false);
        file[254..256].copy_from_slice(&0i16.to_le_bytes()); // no sform
        file[252..254].copy_from_slice(&1i16.to_le_bytes()); // qform
        file[76..80].copy_from_slice(&(-1f32).to_le_bytes()); // qfac
        // 180° about z: b = c = 0, d = 1.
        file[264..268].copy_from_slice(&1f32.to_le_bytes());
        file[268..272].copy_from_slice(&7f32.to_le_bytes());
        let grid = decode(&file, &Limits::default()).unwrap().grid;
        assert_eq!(grid.affine[0], [-0.5, 0.0, 0.0, 7.0]);
        assert_eq!(grid.affine[1], [0.0, -0.75, 0.0, 0.0]);
        assert_eq!(grid.affine[2], [0.0, 0.0, -2.0, 0.0]);
    }

    #[test]
    fn degenerate_geometry_names_the_field() {
        // An all-zero sform: every voxel at one point.
        let mut file = encode(&sample(Labels::U8(vec![]), 3), false);
        file[254..256].copy_from_slice(&2i16.to_le_bytes());
        for offset in (280..328).step_by(4) {
            file[offset..offset + 4].copy_from_slice(&0f32.to_le_bytes());
        }
        let err = decode(&file, &Limits::default()).unwrap_err().to_string();
        assert!(err.contains("sform") && err.contains("zero"), "{err}");
        // An absurd spacing, without sform or qform.
        let mut file = encode(&sample(Labels::U8(vec![]), 3), false);
        file[252..256].copy_from_slice(&[0; 4]);
        file[80..84].copy_from_slice(&3e38f32.to_le_bytes());
        let err = decode(&file, &Limits::default()).unwrap_err().to_string();
        assert!(err.contains("pixdim") && err.contains("outside"), "{err}");
    }
}
