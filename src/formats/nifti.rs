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
    let file = File::open(path)?;
    read(BufReader::with_capacity(1 << 16, file), limits)
}

/// Decodes a NIfTI image held in memory.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<LabelVolume, FormatError> {
    read(bytes, limits)
}

/// Decodes from a buffered reader, inflating first if the stream is gzip.
pub fn read<R: BufRead>(mut input: R, limits: &Limits) -> Result<LabelVolume, FormatError> {
    if input.fill_buf()?.starts_with(&GZIP_MAGIC) {
        read_plain(MultiGzDecoder::new(input), limits).map_err(gzip_context)
    } else {
        read_plain(input, limits)
    }
}

/// Inflate failures surface as I/O errors of kind InvalidInput/InvalidData.
fn gzip_context(err: FormatError) -> FormatError {
    match err {
        FormatError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
            ) =>
        {
            FormatError::Gzip(e.to_string())
        }
        other => other,
    }
}

/// The header fields segwatch needs, from either NIfTI version.
#[derive(Debug, Clone)]
struct Header {
    header_len: u64,
    dim: [i64; 8],
    datatype: i16,
    bitpix: i16,
    pixdim: [f64; 8],
    vox_offset: f64,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
    big_endian: bool,
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

fn read_header<R: Read>(input: &mut R) -> Result<Header, FormatError> {
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

fn read_exact<R: Read>(input: &mut R, buf: &mut [u8], what: &str) -> Result<(), FormatError> {
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
fn shape_of(header: &Header) -> Result<([usize; 3], u8), FormatError> {
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

fn grid_of(header: &Header, shape: [usize; 3], dims: u8) -> Result<Grid, FormatError> {
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
    if affine.iter().flatten().any(|v| !v.is_finite()) {
        return Err(FormatError::Header(
            "the affine has non-finite values".into(),
        ));
    }
    Ok(Grid {
        shape,
        spacing,
        affine,
        dims,
    })
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

fn skip_to_data<R: Read>(input: &mut R, header: &Header) -> Result<(), FormatError> {
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
fn scaling(header: &Header) -> Option<(f64, f64)> {
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
        "is not an integer label (a probability map? threshold it first)"
    } else if v < 0.0 {
        "is negative"
    } else {
        "exceeds the largest label 65535"
    };
    FormatError::Value(format!("voxel {index} holds {v}, which {why}"))
}
