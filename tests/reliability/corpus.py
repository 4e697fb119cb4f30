"""A deterministic hostile corpus of segmentation uploads, each with the status
segwatch must answer.

    from corpus import corpus, LIMITS
    for entry in corpus():
        entry.name, entry.data, entry.expected_status, entry.roles, ...

Every entry is built here from the committed fixtures (tests/fixtures/dicom,
tests/fixtures/fuzz, tests/fixtures/nifti) or synthesised, with the Python
standard library only, and always to the same bytes. The expected statuses
follow the documented behaviour (README "Input formats" and "API", and the code
of src/http/uploads.rs, src/http/problem.rs and src/formats/):

- 400: the request cannot be read as an upload (empty body, a Content-Encoding
  whose data does not decode);
- 413: over a limit, checked on the body or on the sizes a header declares
  before anything is allocated (max_upload_bytes, max_voxels,
  max_decompressed_bytes, the 64 MiB NIfTI extension gap);
- 415: a media type that cannot be a segmentation (text, JSON, XML,
  multipart, except multipart/form-data for a prediction: its form of labels
  and probabilities, 400 when malformed) or a Content-Encoding the service
  does not decode;
- 422: everything else that is not a readable NIfTI or DICOM SEG of a usable
  grid: corrupt, truncated, unsupported, degenerate geometry, invalid labels,
  too many structures, a grid that differs from the case's other segmentation;
- 202: files that look hostile but are valid and documented as accepted (they
  must be stored, de-identified, and scoreable).

The statuses assume the service runs with LIMITS (check_corpus.py configures
it so); a few entries depend on them, and say so.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import math
import os
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

MiB = 1 << 20
# The service limits the expected statuses are derived for. max_decompressed_bytes
# is set below max_upload_bytes - 1 MiB on purpose: the stored (de-identified)
# form of an upload is then read back by workers under max_upload_bytes, which
# the "near the upload limit" entries exercise.
LIMITS = {
    "max_upload_bytes": 4 * MiB,
    "max_voxels": 4_000_000,
    "max_decompressed_bytes": 2 * MiB,
    "max_structures": 16,
}

BOTH = ("prediction", "reference")


@dataclass
class Entry:
    """One upload: its bytes, how it is sent, and the status it must get."""

    name: str
    data: bytes
    expected_status: int
    content_type: str = "application/octet-stream"
    headers: dict = field(default_factory=dict)
    # The roles it is sent as, each time to a fresh case key.
    roles: tuple = BOTH
    # Why this status: the documented rule it follows.
    why: str = ""
    # Uploaded first as the other role of the same case (must get 202): for
    # grid mismatches, and so that accepted entries are also scored.
    partner: bytes | None = None
    # A DICOM entry also sent over STOW-RS (where a refused instance gives 409).
    stow: bool = False


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


def fixture(*parts: str) -> bytes:
    with open(os.path.join(FIXTURES, *parts), "rb") as f:
        return f.read()


def gz(data: bytes) -> bytes:
    """gzip with a fixed mtime, so the corpus is the same bytes every time."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def raw_deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def gzip_member(data: bytes, flags: int = 0, extra: bytes = b"", name: bytes = b"", comment: bytes = b"",
                method: int = 8, crc: int | None = None, isize: int | None = None, header_crc: int | None = None):
    """A gzip member written field by field (RFC 1952), to damage any one field."""
    header = struct.pack("<BBBBIBB", 0x1F, 0x8B, method, flags, 0, 0, 255)
    if flags & 4:
        header += struct.pack("<H", len(extra)) + extra
    if flags & 8:
        header += name + b"\0"
    if flags & 16:
        header += comment + b"\0"
    if flags & 2:
        header += struct.pack("<H", zlib.crc32(header) & 0xFFFF if header_crc is None else header_crc)
    crc = zlib.crc32(data) if crc is None else crc
    isize = len(data) & 0xFFFFFFFF if isize is None else isize
    return header + raw_deflate(data) + struct.pack("<II", crc & 0xFFFFFFFF, isize)


# ---------------------------------------------------------------------------
# NIfTI-1 and NIfTI-2 headers, synthesised field by field
# ---------------------------------------------------------------------------

# name: (offset, struct format) in the NIfTI-1 header (348 bytes).
NIFTI1 = {
    "sizeof_hdr": (0, "i"), "dim": (40, "8h"), "datatype": (70, "h"), "bitpix": (72, "h"),
    "pixdim": (76, "8f"), "vox_offset": (108, "f"), "scl_slope": (112, "f"), "scl_inter": (116, "f"),
    "xyzt_units": (123, "B"), "cal_min": (128, "f"), "descrip": (148, "80s"), "aux_file": (228, "24s"),
    "qform_code": (252, "h"), "sform_code": (254, "h"), "quatern": (256, "3f"), "qoffset": (268, "3f"),
    "srow_x": (280, "4f"), "srow_y": (296, "4f"), "srow_z": (312, "4f"), "intent_name": (328, "16s"),
    "magic": (344, "4s"),
}
# The same in the NIfTI-2 header (540 bytes).
NIFTI2 = {
    "sizeof_hdr": (0, "i"), "magic": (4, "8s"), "datatype": (12, "h"), "bitpix": (14, "h"),
    "dim": (16, "8q"), "pixdim": (104, "8d"), "vox_offset": (168, "q"), "scl_slope": (176, "d"),
    "scl_inter": (184, "d"), "descrip": (240, "80s"), "aux_file": (320, "24s"), "qform_code": (344, "i"),
    "sform_code": (348, "i"), "quatern": (352, "3d"), "qoffset": (376, "3d"), "srow_x": (400, "4d"),
    "srow_y": (432, "4d"), "srow_z": (464, "4d"), "xyzt_units": (500, "i"), "intent_name": (508, "16s"),
}

SHAPE = (8, 8, 4)
SPACING = (0.8, 0.8, 2.5)


def base_labels(shape=SHAPE) -> bytes:
    """A small label map (x fastest): three blocks labelled 1, 2 and 3."""
    nx, ny, nz = shape
    out = bytearray(nx * ny * nz)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                label = 0
                if 1 <= x <= 3 and 1 <= y <= 3 and z <= 2:
                    label = 1
                elif 5 <= x <= 6 and 2 <= y <= 6 and 1 <= z:
                    label = 2
                elif x == 2 and 5 <= y <= 6 and z == 3:
                    label = 3
                out[x + nx * (y + ny * z)] = label
    return bytes(out)


def nifti(version: int = 1, big_endian: bool = False, data: bytes | None = None, ext: bytes = b"\0\0\0\0",
          shape=SHAPE, **fields) -> bytes:
    """A single-file NIfTI: header, extension block, voxel data. Defaults give a
    valid uint8 label map with an axis-aligned sform; `fields` override them."""
    layout, size, magic = (NIFTI1, 348, b"n+1\0") if version == 1 else (NIFTI2, 540, b"n+2\0\r\n\x1a\n")
    dx, dy, dz = SPACING
    values = {
        "sizeof_hdr": size, "magic": magic, "dim": (3, *shape, 1, 1, 1, 1), "datatype": 2, "bitpix": 8,
        "pixdim": (1.0, dx, dy, dz, 1.0, 1.0, 1.0, 1.0), "vox_offset": size + len(ext), "scl_slope": 1.0,
        "scl_inter": 0.0, "xyzt_units": 2, "qform_code": 0, "sform_code": 1,
        "srow_x": (dx, 0.0, 0.0, -10.0), "srow_y": (0.0, dy, 0.0, 20.0), "srow_z": (0.0, 0.0, dz, -30.0),
    }
    values.update(fields)
    header = bytearray(size)
    order = ">" if big_endian else "<"
    for name, value in values.items():
        offset, fmt = layout[name]
        value = value if isinstance(value, (tuple, list)) else (value,)
        struct.pack_into(order + fmt, header, offset, *value)
    if data is None:
        data = base_labels(shape)
    return bytes(header) + ext + data


def patched(data: bytes, offset: int, fmt: str, *values) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def typed(fmt: str, values, count: int = 256) -> bytes:
    """`count` voxels of struct format `fmt`, cycling through `values`."""
    return b"".join(struct.pack("<" + fmt, values[i % len(values)]) for i in range(count))


def extension(code: int, content: bytes, esize: int | None = None) -> bytes:
    """A NIfTI extension (esize, ecode, content padded to a multiple of 16)."""
    padded = content + b"\0" * (-(len(content) + 8) % 16)
    return struct.pack("<ii", len(padded) + 8 if esize is None else esize, code) + padded


NAN, INF = float("nan"), float("inf")


def nifti_entries() -> list[Entry]:
    E = []
    ok = nifti()
    n = len(ok)

    def bad(name, data, why, status=422, **kw):
        E.append(Entry(name, data, status, why=why, **kw))

    # sizeof_hdr and magic
    bad("n1_sizeof_hdr_0", nifti(sizeof_hdr=0), "sizeof_hdr must be 348 or 540")
    bad("n1_sizeof_hdr_349", nifti(sizeof_hdr=349), "sizeof_hdr must be 348 or 540")
    bad("n1_sizeof_hdr_negative", nifti(sizeof_hdr=-348), "sizeof_hdr must be 348 or 540")
    bad("n1_sizeof_hdr_540_on_nifti1_layout", nifti(sizeof_hdr=540), "read as NIfTI-2: no n+2 magic at byte 4")
    bad("n1_big_endian_sizeof_little_endian_rest", patched(ok, 0, ">i", 348),
        "byte order is taken from sizeof_hdr: dim[0] then reads 768")
    bad("n1_magic_ni1_detached_header", nifti(magic=b"ni1\0"), "a detached .hdr/.img pair is refused")
    bad("n1_magic_garbage", nifti(magic=b"XYZ\0"), "bad magic")
    bad("n1_magic_n2_in_nifti1", nifti(magic=b"n+2\0"), "NIfTI-2 magic in a NIfTI-1 header")
    bad("n1_magic_space_not_nul", nifti(magic=b"n+1 "), "magic must be n+1 NUL")
    # dim
    for name, dim in [("dim0_zero", (0, 8, 8, 4)), ("dim0_eight", (8, 8, 8, 4)), ("dim0_negative", (-1, 8, 8, 4)),
                      ("dim0_32767", (32767, 8, 8, 4)), ("dim1_zero", (3, 0, 8, 4)), ("dim2_negative", (3, 8, -1, 4)),
                      ("dim3_min_int16", (3, 8, 8, -32768))]:
        bad(f"n1_{name}", nifti(dim=(*dim, 1, 1, 1, 1)), "dim[0] must be 1..7 and every used dim >= 1")
    bad("n1_time_series", nifti(dim=(4, 8, 8, 4, 2, 1, 1, 1), data=base_labels() * 2),
        "a 4th dimension other than 1 is a time series, not a label map")
    bad("n1_dim5_zero", nifti(dim=(5, 8, 8, 4, 1, 0, 1, 1)), "every used dim must be >= 1")
    bad("n1_dims_32767_cubed", nifti(dim=(3, 32767, 32767, 32767, 1, 1, 1, 1)),
        "declared 3.5e13 voxels: over max_voxels, checked before allocating", status=413)
    bad("n1_dims_over_max_voxels", nifti(dim=(3, 2048, 2048, 2, 1, 1, 1, 1)),
        "8.4e6 voxels > max_voxels 4e6, checked before reading the data", status=413)
    E.append(Entry("n1_dim0_7_singleton_dims", nifti(dim=(7, 8, 8, 4, 1, 1, 1, 1)), 202,
                   why="dimensions beyond the third are accepted when they are 1", partner=ok))
    # datatype and bitpix
    for code, bits in [(0, 8), (1, 1), (32, 64), (1792, 128), (2048, 256), (128, 24), (2304, 32), (1536, 128),
                       (255, 8), (-1, 8)]:
        bad(f"n1_datatype_{code}", nifti(datatype=code, bitpix=bits),
            "unknown, complex, RGB or float128 datatypes are not label maps")
    bad("n1_bitpix_16_for_uint8", nifti(bitpix=16), "bitpix disagrees with the datatype")
    bad("n1_bitpix_0", nifti(bitpix=0), "bitpix disagrees with the datatype")
    bad("n1_bitpix_negative", nifti(bitpix=-8), "bitpix disagrees with the datatype")
    bad("n1_uint16_bitpix_8", nifti(datatype=512, bitpix=8, data=base_labels() * 2), "bitpix disagrees")
    # voxel values
    for name, code, bits, fmt, values in [
        ("float32_nan", 16, 32, "f", [0.0, NAN]), ("float32_half", 16, 32, "f", [0.0, 0.5]),
        ("float32_inf", 16, 32, "f", [INF, 1.0]), ("float32_negative", 16, 32, "f", [0.0, -1.0]),
        ("float32_70000", 16, 32, "f", [70000.0]), ("float64_1e300", 64, 64, "d", [0.0, 1e300]),
        ("float64_nan_payload", 64, 64, "Q", [0x7FF8DEADBEEF0001]),
        ("int16_negative", 4, 16, "h", [0, -1]), ("int32_65536", 8, 32, "i", [65536]),
        ("uint64_max", 1280, 64, "Q", [2**64 - 1]), ("int64_min", 1024, 64, "q", [-2**63]),
    ]:
        bad(f"n1_{name}_labels", nifti(datatype=code, bitpix=bits, data=typed(fmt, values)),
            "labels must be integers from 0 to 65535")
    # vox_offset
    for name, value in [("zero", 0.0), ("inside_header", 347.0), ("negative", -352.0), ("nan", NAN),
                        ("inf", INF), ("fractional", 352.5)]:
        bad(f"n1_vox_offset_{name}", nifti(vox_offset=value), "vox_offset must be a whole number >= 348")
    bad("n1_vox_offset_beyond_file", nifti(vox_offset=100000.0), "the file ends before vox_offset")
    bad("n1_vox_offset_3e9", nifti(vox_offset=3e9),
        "a 3 GB extension gap is over the 64 MiB the reader skips (a declared size over a limit)", status=413)
    bad("n1_vox_offset_1e38", nifti(vox_offset=1e38), "declared extension gap over 64 MiB", status=413)
    # pixdim
    for name, i, value in [("x_zero", 1, 0.0), ("y_nan", 2, NAN), ("z_inf", 3, INF), ("x_3e38", 1, 3e38),
                           ("x_1e-6", 1, 1e-6), ("z_1e4", 3, 1e4), ("x_minus_inf", 1, -INF)]:
        pixdim = [1.0, *SPACING, 1.0, 1.0, 1.0, 1.0]
        pixdim[i] = value
        bad(f"n1_pixdim_{name}", nifti(pixdim=tuple(pixdim)), "spacing must be finite and within 0.001-1000 mm")
    E.append(Entry("n1_pixdim_negative", nifti(pixdim=(1.0, -0.8, 0.8, 2.5, 1, 1, 1, 1)), 202,
                   why="negative pixdim is documented as accepted (its magnitude is the spacing)", partner=ok))
    # sform and qform
    zero_rows = {"srow_x": (0.0,) * 4, "srow_y": (0.0,) * 4, "srow_z": (0.0,) * 4}
    bad("n1_sform_all_zero", nifti(**zero_rows), "an all-zero sform has zero axes")
    bad("n1_sform_singular_parallel_axes",
        nifti(srow_x=(0.8, 0.8, 0, 0), srow_y=(0.8, 0.8, 0, 0), srow_z=(0, 0, 2.5, 0)), "parallel sform axes")
    bad("n1_sform_zero_column", nifti(srow_x=(0.8, 0, 0, 0), srow_y=(0, 0.8, 0, 0), srow_z=(0, 0, 0, 0)),
        "a zero sform axis")
    bad("n1_sform_nan", nifti(srow_x=(NAN, 0, 0, 0)), "a non-finite affine")
    bad("n1_sform_inf_offset", nifti(srow_z=(0, 0, 2.5, INF)), "a non-finite affine")
    bad("n1_qform_all_zero", nifti(sform_code=0, qform_code=1, pixdim=(1.0, 0, 0, 0, 1, 1, 1, 1), **zero_rows),
        "qform with zero quaternion, offsets and pixdim: zero spacing")
    bad("n1_qform_quaternion_nan", nifti(sform_code=0, qform_code=1, quatern=(NAN, 0.0, 0.0)),
        "a non-finite quaternion gives a non-finite affine")
    bad("n1_qform_quaternion_inf", nifti(sform_code=0, qform_code=1, quatern=(0.0, INF, 0.0)),
        "a non-finite quaternion gives a non-finite affine")
    bad("n1_qform_offset_nan", nifti(sform_code=0, qform_code=1, qoffset=(0.0, NAN, 0.0)), "non-finite affine")
    # scl_slope / scl_inter
    bad("n1_scl_slope_half", nifti(scl_slope=0.5), "scaled labels 0.5, 1.5 are not integers")
    bad("n1_scl_slope_negative", nifti(scl_slope=-1.0), "scaled labels are negative")
    bad("n1_scl_slope_1e38", nifti(scl_slope=1e38), "scaled labels exceed 65535")
    bad("n1_scl_inter_negative", nifti(scl_inter=-1.0), "background scales to -1")
    # truncation
    bad("n1_truncated_last_voxel", ok[:-1], "the voxel data ends early")
    bad("n1_header_and_extension_only", ok[:352], "no voxel data")
    bad("n1_header_only", ok[:348], "the file ends before vox_offset")
    bad("n1_truncated_header_200", ok[:200], "the header ends early")
    bad("n1_truncated_4_bytes", ok[:4], "the header ends after sizeof_hdr")
    bad("n1_truncated_3_bytes", ok[:3], "the header ends inside sizeof_hdr")
    # extensions: never parsed, the data is where vox_offset says; they are
    # dropped from what is stored
    for name, ext in [("esize_zero", b"\1\0\0\0" + struct.pack("<ii", 0, 0) + b"\0" * 8),
                      ("esize_negative", b"\1\0\0\0" + struct.pack("<ii", -16, 6) + b"\0" * 8),
                      ("esize_huge", b"\1\0\0\0" + struct.pack("<ii", 0x7FFFFFF0, 2) + b"\0" * 8),
                      ("esize_past_vox_offset", b"\1\0\0\0" + struct.pack("<ii", 4096, 4) + b"\0" * 8)]:
        E.append(Entry(f"n1_extension_{name}", nifti(ext=ext), 202, partner=ok,
                       why="extensions are not read (vox_offset locates the data) and are dropped when stored"))
    bad("n1_extension_then_vox_offset_beyond_file",
        nifti(ext=b"\1\0\0\0" + extension(2, b"x" * 40), vox_offset=5000.0), "the file ends before vox_offset")
    # too many structures
    bad("n1_300_labels_uint16", nifti(datatype=512, bitpix=16, data=typed("H", list(range(300)), 256)),
        "256 structures > max_structures 16")
    bad("n1_40_labels", nifti(data=bytes(i % 41 for i in range(256))), "40 structures > max_structures 16")
    # polyglots: "DICM" where a DICOM preamble would end
    E.append(Entry("n1_polyglot_cal_min_spells_DICM", nifti(cal_min=struct.unpack("<f", b"DICM")[0]), 202,
                   partner=ok, why="a valid NIfTI-1 (sizeof_hdr 348, n+1): cal_min is free; only the "
                                    "bytes 128..132 read DICM"))

    # NIfTI-2
    ok2 = nifti(2)
    bad("n2_magic_wrong", nifti(2, magic=b"n+3\0\r\n\x1a\n"), "bad NIfTI-2 magic")
    bad("n2_magic_nifti1", nifti(2, magic=b"n+1\0\0\0\0\0"), "NIfTI-1 magic in a NIfTI-2 header")
    bad("n2_magic_detached", nifti(2, magic=b"ni2\0\r\n\x1a\n"), "detached NIfTI-2 header")
    bad("n2_dim_negative_i64", nifti(2, dim=(3, 8, -(2**40), 4, 1, 1, 1, 1)), "negative dimension")
    bad("n2_dims_overflow_product", nifti(2, dim=(3, 2**40, 2**40, 2**40, 1, 1, 1, 1)),
        "the voxel count overflows 64 bits: over max_voxels", status=413)
    bad("n2_dim_i64_max", nifti(2, dim=(3, 2**63 - 1, 1, 1, 1, 1, 1, 1)), "9.2e18 voxels > max_voxels", status=413)
    bad("n2_dim0_huge", nifti(2, dim=(2**40, 8, 8, 4, 1, 1, 1, 1)), "dim[0] must be 1..7")
    bad("n2_datatype_complex", nifti(2, datatype=32, bitpix=64), "complex datatype")
    bad("n2_datatype_rgb", nifti(2, datatype=128, bitpix=24), "RGB datatype")
    bad("n2_bitpix_mismatch", nifti(2, bitpix=64), "bitpix disagrees with the datatype")
    bad("n2_vox_offset_negative", nifti(2, vox_offset=-1), "vox_offset must be >= 540")
    bad("n2_vox_offset_inside_header", nifti(2, vox_offset=100), "vox_offset must be >= 540")
    bad("n2_vox_offset_2e62", nifti(2, vox_offset=2**62), "extension gap over 64 MiB", status=413)
    bad("n2_vox_offset_beyond_file", nifti(2, vox_offset=65536), "the file ends before vox_offset")
    for name, i, value in [("x_nan", 1, NAN), ("y_1e300", 2, 1e300), ("z_denormal", 3, 5e-324), ("x_zero", 1, 0.0)]:
        pixdim = [1.0, *SPACING, 1.0, 1.0, 1.0, 1.0]
        pixdim[i] = value
        bad(f"n2_pixdim_{name}", nifti(2, pixdim=tuple(pixdim)), "spacing must be finite and within 0.001-1000 mm")
    bad("n2_sform_all_zero", nifti(2, srow_x=(0.0,) * 4, srow_y=(0.0,) * 4, srow_z=(0.0,) * 4), "zero axes")
    bad("n2_sform_singular", nifti(2, srow_x=(0.8, 0, 0, 0), srow_y=(0.8, 0, 0, 0), srow_z=(0.8, 0, 0, 0)),
        "rank-1 sform: parallel axes")
    bad("n2_sform_nan", nifti(2, srow_y=(0, NAN, 0, 0)), "non-finite affine")
    bad("n2_qform_quaternion_nan", nifti(2, sform_code=0, qform_code=1, quatern=(0.0, 0.0, NAN)), "non-finite")
    bad("n2_scl_slope_third", nifti(2, scl_slope=1 / 3), "scaled labels are not integers")
    bad("n2_float64_nan_labels", nifti(2, datatype=64, bitpix=64, data=typed("d", [0.0, NAN])), "NaN label")
    bad("n2_truncated_header", ok2[:300], "the header ends early")
    bad("n2_truncated_data", ok2[:-10], "the voxel data ends early")
    bad("n2_time_series", nifti(2, dim=(4, 8, 8, 4, 3, 1, 1, 1), data=base_labels() * 3), "time series")
    E.append(Entry("n2_polyglot_pixdim_low_bytes_DICM",
                   patched(ok2, 128, "<4s", b"DICM"), 202, partner=ok2,
                   why="a valid NIfTI-2: pixdim[3] is 2.5 plus 1e-15, whose low bytes read DICM at offset 128"))
    E.append(Entry("n2_big_endian_extension_huge_esize",
                   nifti(2, big_endian=True, ext=b"\1\0\0\0" + struct.pack(">ii", 0x7FFFFFF0, 2) + b"\0" * 8),
                   202, partner=nifti(2, big_endian=True),
                   why="big-endian NIfTI-2 is documented; extensions are not read"))
    # Fixtures of tests/fixtures/nifti, damaged
    labels = gzip.decompress(fixture("nifti", "labels.nii.gz"))
    bad("fixture_labels_4d_series", fixture("nifti", "labels_4d_series.nii.gz"), "a time series")
    bad("fixture_labels_big_endian_truncated", fixture("nifti", "labels_big_endian.nii")[:1000], "truncated data")
    bad("fixture_labels_dim_huge_gz", gz(patched(labels, 42, "<hhh", 32000, 32000, 32000)),
        "declared 3.3e13 voxels", status=413)
    bad("fixture_labels_bitpix_wrong_gz", gz(patched(labels, 72, "<h", 32)), "bitpix disagrees")
    return E


# ---------------------------------------------------------------------------
# gzip containers
# ---------------------------------------------------------------------------


def gzip_entries() -> list[Entry]:
    E = []
    ok = nifti()
    ok_gz = gz(ok)

    def bad(name, data, why, status=422, **kw):
        E.append(Entry(name, data, status, why=why, **kw))

    bad("gz_truncated_half", ok_gz[: len(ok_gz) // 2], "the gzip stream ends early")
    bad("gz_truncated_trailer", ok_gz[:-8], "the CRC and size trailer is missing")
    bad("gz_magic_only", b"\x1f\x8b", "a gzip header of two bytes")
    bad("gz_header_only", ok_gz[:10], "a gzip header and no deflate data")
    bad("gz_trailing_garbage", ok_gz + b"this is not another gzip member", "garbage after the member")
    bad("gz_wrong_crc", gzip_member(ok, crc=0xDEADBEEF), "the CRC does not match")
    bad("gz_wrong_isize", gzip_member(ok, isize=12345), "ISIZE does not match")
    bad("gz_wrong_header_crc", gzip_member(ok, flags=2, header_crc=0x1234), "FHCRC does not match the header")
    bad("gz_method_not_deflate", gzip_member(ok, method=7), "compression method 7 does not exist")
    bad("gz_fextra_runs_past_end", ok_gz[:3] + b"\x04" + ok_gz[4:10] + b"\xff\xff" + b"abc",
        "FEXTRA declares 65535 bytes that are not there")
    corrupt = bytearray(ok_gz)
    for i in range(12, len(corrupt) - 8):
        corrupt[i] ^= 0x5A
    bad("gz_corrupt_deflate", bytes(corrupt), "corrupt deflate data")
    bad("gz_of_empty", gz(b""), "a gzip stream of nothing: the header ends at once")
    bad("gz_double_compressed", gz(ok_gz), "a .nii.gz.gz inflates to gzip, not NIfTI")
    bad("zlib_not_gzip", zlib.compress(ok), "a zlib stream is neither gzip nor NIfTI")
    bad("gz_of_dicom_seg", gz(fixture("dicom", "ai_binary.dcm")), "a gzip-compressed DICOM is not supported")
    # valid but unusual gzip
    E.append(Entry("gz_concatenated_members", gz(ok[:100]) + gz(ok[100:]), 202, partner=ok,
                   why="a multi-member gzip stream is valid gzip (RFC 1952 2.2)"))
    E.append(Entry("gz_all_header_fields", gzip_member(ok, flags=2 | 4 | 8 | 16, extra=b"AB\x02\x00hi",
                                                       name=b"labels.nii", comment=b"comment"), 202, partner=ok,
                   why="FEXTRA, FNAME, FCOMMENT and a correct FHCRC are valid gzip"))
    # gzip bombs
    zeros_ok = nifti(dim=(3, 128, 128, 120, 1, 1, 1, 1), shape=(128, 128, 120),
                     data=b"\1" + bytes(128 * 128 * 120 - 1))
    E.append(Entry("gz_bomb_within_limits", gz(zeros_ok), 202, partner=gz(zeros_ok),
                   why="1.97 MB of voxels (within max_voxels and max_decompressed_bytes) from 2 KB of gzip"))
    bad("gz_bomb_over_max_voxels", gz(nifti(dim=(3, 1024, 1024, 64, 1, 1, 1, 1), data=bytes(8 * MiB))),
        "declares 67e6 voxels > max_voxels: refused on the header, never inflated", status=413)
    bad("gz_bomb_over_max_decompressed_bytes",
        gz(nifti(dim=(3, 128, 128, 100, 1, 1, 1, 1), datatype=512, bitpix=16, data=bytes(4 * MiB))),
        "declares 3.3 MB of int16 voxels > max_decompressed_bytes 2 MiB", status=413)
    E.append(Entry("gz_bomb_trailing_zeros_64mib", gz(ok + bytes(64 * MiB)), 202, partner=ok,
                   why="bytes after the voxel data are not inflated past 64 KiB (the bomb stops there); the "
                       "image itself is valid"))
    return E


# ---------------------------------------------------------------------------
# Request-level hostility: media types, encodings, sizes, other formats
# ---------------------------------------------------------------------------


def png() -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = b"".join(b"\0" + bytes(8) for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def zip_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 6))
        z.writestr(info, data)
    return buf.getvalue()


def tar_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), 0
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def deterministic_bytes(n: int, seed: str) -> bytes:
    out, counter = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def request_entries() -> list[Entry]:
    E = []
    ok = nifti()
    ok_gz = gz(ok)
    limit = LIMITS["max_upload_bytes"]

    def add(name, data, status, why, **kw):
        E.append(Entry(name, data, status, why=why, **kw))

    add("empty_body", b"", 400, "the body must be the segmentation file")
    # media types that cannot be a segmentation (checked before the body is decoded)
    for name, media in [("text_plain", "text/plain"), ("text_plain_upper", "TEXT/PLAIN; charset=utf-8"),
                        ("json", "application/json"), ("problem_json", "application/problem+json"),
                        ("vendor_json", "application/vnd.api+json"), ("xml", "application/xml"),
                        ("svg_xml", "image/svg+xml"), ("html", "text/html"),
                        ("multipart_related", 'multipart/related; type="application/dicom"; boundary=x')]:
        add(f"media_{name}_valid_nifti", ok_gz, 415, "text, JSON, XML and multipart media types are refused",
            content_type=media)
    # multipart/form-data is a reference's wrong media type, but a prediction's
    # form of labels and probabilities: a file that is not such a form is 400.
    form = "multipart/form-data; boundary=x"
    add("media_form_data_valid_nifti", ok_gz, 415, "a reference is never a form", content_type=form,
        roles=("reference",))
    add("form_data_not_a_form", ok_gz, 400, "a prediction form must be a well-formed multipart body",
        content_type=form, roles=("prediction",))
    # media types that are sniffed: a valid file under any of them is accepted
    for name, media in [("image_png", "image/png"), ("application_dicom", "application/dicom"),
                        ("octet_stream_with_params", "application/octet-stream; charset=utf-8")]:
        add(f"media_{name}_valid_nifti", ok_gz, 202, "any other media type is sniffed from the bytes",
            content_type=media, partner=ok)
    # transfer encodings
    add("content_encoding_gzip_not_gzip", b"this is not gzip data at all", 400,
        "a Content-Encoding whose data does not decode", headers={"Content-Encoding": "gzip"})
    add("content_encoding_gzip_truncated", ok_gz[:40], 400, "the gzip transfer encoding ends early",
        headers={"Content-Encoding": "gzip"})
    add("content_encoding_gzip_over_upload_limit", gz(bytes(limit + MiB)), 413,
        "max_upload_bytes applies after transfer decompression", headers={"Content-Encoding": "gzip"})
    add("content_encoding_gzip_of_nii_gz", gz(ok_gz), 202, "a gzip-encoded .nii.gz is a valid upload",
        headers={"Content-Encoding": "gzip"}, partner=ok)
    add("content_encoding_br", ok_gz, 415, "an unsupported Content-Encoding (RFC 9110 15.5.16)",
        headers={"Content-Encoding": "br"})
    add("content_encoding_unknown", ok_gz, 415, "an unsupported Content-Encoding",
        headers={"Content-Encoding": "x-segwatch-unknown"})
    # sizes
    add("body_over_upload_limit", deterministic_bytes(limit + 1, "big"), 413, "over max_upload_bytes")
    # other formats
    add("single_zero_byte", b"\0", 422, "not NIfTI nor DICOM")
    add("random_1k", deterministic_bytes(1024, "random"), 422, "not NIfTI nor DICOM")
    add("random_348_starting_like_nifti", struct.pack("<i", 348) + deterministic_bytes(344, "n1"), 422,
        "sizeof_hdr 348 and garbage: bad magic")
    add("zeros_348", bytes(348), 422, "sizeof_hdr 0")
    add("text_as_octet_stream", b"patient: nobody\nlabels: 1,2,3\n", 422, "text is not a segmentation")
    add("json_as_octet_stream", b'{"structures": [1, 2]}', 422, "JSON is not a segmentation")
    add("png", png(), 422, "PNG is not a segmentation")
    add("jpeg", b"\xff\xd8\xff\xe0\0\x10JFIF\0\1\1\0\0\1\0\1\0\0\xff\xd9", 422, "JPEG is not a segmentation")
    add("pdf", b"%PDF-1.7\n1 0 obj\n<< >>\nendobj\ntrailer\n<< >>\n%%EOF\n", 422, "PDF is not a segmentation")
    add("elf", b"\x7fELF\2\1\1" + bytes(57), 422, "an executable is not a segmentation")
    add("zip_of_nifti", zip_of("labels.nii", ok), 422, "a zip archive is not supported")
    add("tar_of_nifti", tar_of("labels.nii", ok), 422, "a tar archive is not supported")
    add("xz_of_nifti", lzma.compress(ok, preset=1), 422, "xz is not a supported compression")
    add("bzip2_magic", b"BZh91AY&SY" + deterministic_bytes(100, "bz"), 422, "bzip2 is not supported")
    add("zstd_magic", b"\x28\xb5\x2f\xfd" + deterministic_bytes(100, "zstd"), 422, "zstd is not supported")
    add("nrrd_header", b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 8 8 4\nencoding: raw\n\n" + base_labels(),
        422, "NRRD is not supported")
    add("metaimage_header", b"ObjectType = Image\nNDims = 3\nDimSize = 8 8 4\nElementType = MET_UCHAR\n"
                            b"ElementDataFile = LOCAL\n" + base_labels(), 422, "MetaImage is not supported")
    add("hdf5_magic", b"\x89HDF\r\n\x1a\n" + bytes(100), 422, "HDF5 is not supported")
    add("dicm_only", b"DICM", 422, "a DICM prefix and nothing else")
    add("preamble_and_dicm_only", bytes(128) + b"DICM", 422, "a preamble, DICM and nothing else")
    return E


# ---------------------------------------------------------------------------
# A minimal DICOM Part 10 reader and writer (explicit VR, either byte order,
# deflated), to damage the fixtures one attribute at a time
# ---------------------------------------------------------------------------

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
# VRs with a 2-byte length in explicit VR (PS3.5 7.1.2); all others have 4 bytes.
SHORT_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
             b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
STANDARD_ROOT = "1.2.840.10008."


class Elem:
    """A data element: a value, sequence items (lists of Elem), encapsulated
    fragments (the offset table first), or `raw` bytes written as they are."""

    def __init__(self, tag, vr, value=b"", items=None, fragments=None, undefined=False, raw=None):
        self.tag, self.vr, self.value = tag, vr, value
        self.items, self.fragments, self.undefined, self.raw = items, fragments, undefined, raw


class _Reader:
    def __init__(self, data, big_endian=False):
        self.data, self.order = data, ">" if big_endian else "<"

    def u16(self, at):
        return struct.unpack_from(self.order + "H", self.data, at)[0]

    def u32(self, at):
        return struct.unpack_from(self.order + "I", self.data, at)[0]

    def elements(self, at, end, delimited=False):
        out = []
        while at < end:
            tag = (self.u16(at), self.u16(at + 2))
            if tag == ITEM_END and delimited:
                return out, at + 8
            vr = self.data[at + 4:at + 6]
            if vr in SHORT_VRS:
                length, at = self.u16(at + 6), at + 8
            else:
                length, at = self.u32(at + 8), at + 12
            if vr == b"SQ":
                items, at = self.items(at, length)
                out.append(Elem(tag, vr, items=items, undefined=length == UNDEFINED))
            elif length == UNDEFINED:
                fragments = []
                while True:
                    item, n = (self.u16(at), self.u16(at + 2)), self.u32(at + 4)
                    at += 8
                    if item == SEQ_END:
                        break
                    fragments.append(self.data[at:at + n])
                    at += n
                out.append(Elem(tag, vr, fragments=fragments))
            else:
                out.append(Elem(tag, vr, self.data[at:at + length]))
                at += length
        return out, at

    def items(self, at, length):
        items = []
        end = len(self.data) if length == UNDEFINED else at + length
        while at < end:
            tag, n = (self.u16(at), self.u16(at + 2)), self.u32(at + 4)
            at += 8
            if tag == SEQ_END:
                break
            if n == UNDEFINED:
                item, at = self.elements(at, len(self.data), delimited=True)
            else:
                item, _ = self.elements(at, at + n)
                at += n
            items.append(item)
        return items, at


class _Writer:
    def __init__(self, big_endian=False):
        self.order = ">" if big_endian else "<"

    def tag(self, tag):
        return struct.pack(self.order + "HH", *tag)

    def u32(self, n):
        return struct.pack(self.order + "I", n)

    def elements(self, elems):
        return b"".join(self.element(x) for x in elems)

    def element(self, x):
        if x.raw is not None:
            return x.raw
        if x.items is not None:
            body = b"".join(self.item(i, x.undefined) for i in x.items)
            if x.undefined:
                body += self.tag(SEQ_END) + self.u32(0)
            return self.header(x.tag, x.vr, UNDEFINED if x.undefined else len(body)) + body
        if x.fragments is not None:
            body = b"".join(self.tag(ITEM) + self.u32(len(f)) + f for f in x.fragments)
            return self.header(x.tag, x.vr, UNDEFINED) + body + self.tag(SEQ_END) + self.u32(0)
        return self.header(x.tag, x.vr, len(x.value)) + x.value

    def item(self, elems, undefined):
        body = self.elements(elems)
        if undefined:
            return self.tag(ITEM) + self.u32(UNDEFINED) + body + self.tag(ITEM_END) + self.u32(0)
        return self.tag(ITEM) + self.u32(len(body)) + body

    def header(self, tag, vr, length):
        if vr in SHORT_VRS:
            return self.tag(tag) + vr + struct.pack(self.order + "H", length)
        return self.tag(tag) + vr + b"\0\0" + self.u32(length)


class Dicom:
    """A DICOM Part 10 file as a tree: preamble, file meta elements, data set."""

    def __init__(self, data: bytes):
        if data[128:132] != b"DICM":
            raise ValueError("not a Part 10 file")
        self.preamble = data[:128]
        body = data[132:]
        group_length = struct.unpack_from("<I", body, 8)[0]
        self.meta, _ = _Reader(body).elements(12, 12 + group_length)
        rest = body[12 + group_length:]
        self.syntax = text_of(find(self.meta, (0x0002, 0x0010)))
        if self.syntax == DEFLATED:
            rest = zlib.decompress(rest, -15)
        self.big_endian = self.syntax == EXPLICIT_BE
        self.ds, _ = _Reader(rest, self.big_endian).elements(0, len(rest))

    def meta_bytes(self) -> bytes:
        body = _Writer().elements([x for x in self.meta if x.tag != (0x0002, 0x0000)])
        return _Writer().element(Elem((0x0002, 0x0000), b"UL", struct.pack("<I", len(body)))) + body

    def dataset_bytes(self) -> bytes:
        data = _Writer(self.big_endian).elements(self.ds)
        return raw_deflate(data) if self.syntax == DEFLATED else data

    def to_bytes(self) -> bytes:
        return self.preamble + b"DICM" + self.meta_bytes() + self.dataset_bytes()

    def set_syntax(self, uid: str):
        """Declares another transfer syntax without re-encoding the data set."""
        put(self.meta, (0x0002, 0x0010), b"UI", uid)


def seg(name: str = "ai_binary.dcm", folder: str = "dicom") -> Dicom:
    return Dicom(fixture(folder, name))


def find(elems, tag):
    return next((x for x in elems if x.tag == tag), None)


def at(elems, *path):
    """The element at a path of tags and item indices: at(ds, SHARED, 0, MEASURES, 0, PIXEL_SPACING)."""
    node, elem = elems, None
    for step in path:
        if isinstance(step, int):
            node = elem.items[step]
        else:
            elem = find(node, step)
            if elem is None:
                raise KeyError(step)
    return elem


def text_of(elem) -> str | None:
    return None if elem is None else elem.value.rstrip(b"\0 ").decode("latin-1")


def encode_value(vr: bytes, value) -> bytes:
    if isinstance(value, bytes):
        data = value
    elif vr == b"US":
        data = struct.pack("<H", value)
    elif vr == b"UL":
        data = struct.pack("<I", value)
    else:
        data = str(value).encode("latin-1")
    if len(data) % 2:
        data += b"\0" if vr in (b"UI", b"OB", b"UN") else b" "
    return data


def put(elems, tag, vr, value):
    """Sets an element (replacing it, or inserting it in tag order)."""
    new = Elem(tag, vr, encode_value(vr, value))
    for i, x in enumerate(elems):
        if x.tag == tag:
            elems[i] = new
            return
        if x.tag > tag:
            elems.insert(i, new)
            return
    elems.append(new)


def drop(elems, tag):
    elems[:] = [x for x in elems if x.tag != tag]


def walk(elems):
    """Every element at every depth."""
    for x in elems:
        yield x
        for item in x.items or []:
            yield from walk(item)


# Tags used below.
SOP_CLASS, SOP_INSTANCE = (0x0008, 0x0016), (0x0008, 0x0018)
NUMBER_OF_FRAMES, ROWS, COLUMNS, BITS_ALLOCATED = (0x0028, 0x0008), (0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100)
SEGMENTATION_TYPE, SEGMENT_SEQUENCE = (0x0062, 0x0001), (0x0062, 0x0002)
SEGMENT_NUMBER, PROPERTY_TYPE, CODE_VALUE = (0x0062, 0x0004), (0x0062, 0x000F), (0x0008, 0x0100)
MAX_FRACTIONAL = (0x0062, 0x000E)
SHARED, PER_FRAME = (0x5200, 0x9229), (0x5200, 0x9230)
PLANE_ORIENTATION, ORIENTATION = (0x0020, 0x9116), (0x0020, 0x0037)
PLANE_POSITION, POSITION = (0x0020, 0x9113), (0x0020, 0x0032)
MEASURES, PIXEL_SPACING = (0x0028, 0x9110), (0x0028, 0x0030)
SPACING_BETWEEN_SLICES = (0x0018, 0x0088)
SEGMENT_IDENTIFICATION, REFERENCED_SEGMENT = (0x0062, 0x000A), (0x0062, 0x000B)
PIXEL_DATA = (0x7FE0, 0x0010)
CONTENT_SEQUENCE = (0x0040, 0xA730)
MANUFACTURER = (0x0008, 0x0070)


def mutated(change, name="ai_binary.dcm", folder="dicom") -> bytes:
    """A fixture with `change(dicom)` applied, written back."""
    d = seg(name, folder)
    change(d)
    return d.to_bytes()


def set_at(path, vr, value):
    def change(d):
        *parent, tag = path
        elems = d.ds if not parent else at(d.ds, *parent[:-1]).items[parent[-1]]
        put(elems, tag, vr, value)
    return change


def raw_element(tag, vr, length_field: bytes, value: bytes = b"") -> Elem:
    """An element written byte for byte (any VR, any length field)."""
    return Elem(tag, vr, raw=struct.pack("<HH", *tag) + vr + length_field + value)


def nested(depth: int, undefined: bool = False):
    """ContentSequence nested `depth` deep, with a code value at the bottom."""
    leaf = [Elem(CODE_VALUE, b"SH", encode_value(b"SH", "LEAF"))]
    for _ in range(depth):
        leaf = [Elem(CONTENT_SEQUENCE, b"SQ", items=[leaf], undefined=undefined)]
    return leaf[0]


def rle_fragment(frame: bytes) -> bytes:
    """One RLE Lossless frame of one segment, as literal runs."""
    runs = b"".join(bytes([len(frame[i:i + 128]) - 1]) + frame[i:i + 128] for i in range(0, len(frame), 128))
    return struct.pack("<16I", 1, 64, *([0] * 14)) + runs


def dicom_entries() -> list[Entry]:
    E = []
    ai = fixture("dicom", "ai_binary.dcm")
    corrected = fixture("dicom", "corrected_binary.dcm")

    def bad(name, data, why, status=422, stow=True, **kw):
        E.append(Entry(name, data, status, why=why, stow=stow, **kw))

    def change(name, fn, why, status=422, fixture_name="ai_binary.dcm", stow=True, **kw):
        bad(name, mutated(fn, fixture_name), why, status=status, stow=stow, **kw)

    def meta_offset(data):
        return 132 + 12 + struct.unpack_from("<I", data, 140)[0]

    # Part 10 framing
    # Accepted SEGs are variants of the corrected SEG, paired with it: their
    # scoring then depends only on what the entry varies.
    E.append(Entry("dcm_no_preamble_dicm_first", corrected[128:], 202, partner=corrected,
                   why="streams may omit the preamble and start with DICM (README, part10_body)"))
    bad("dcm_raw_dataset_no_part10_header", ai[meta_offset(ai):], "no DICM: read as NIfTI, which it is not")
    bad("dcm_truncated_in_preamble", ai[:100], "100 bytes: neither DICOM nor NIfTI")
    bad("dcm_truncated_in_meta", ai[:200], "the file meta group ends early")
    bad("dcm_truncated_after_meta", ai[:meta_offset(ai)], "an empty data set: no SOP class")
    bad("dcm_truncated_mid_dataset", ai[:5000], "the data set ends inside a sequence")
    bad("dcm_truncated_last_byte", ai[:-1], "the pixel data ends a byte early")
    bad("fixture_bad_truncated", fixture("dicom", "bad_truncated.dcm"), "truncated pixel data")
    bad("dcm_trailing_garbage", ai + b"GARBAGE!", "bytes after the data set that are not an element")
    # file meta group
    bad("dcm_meta_group_length_huge", patched(ai, 140, "<I", 0xFFFFFF00), "the group length runs past the file")
    bad("dcm_meta_group_length_short", patched(ai, 140, "<I", 10), "the group length ends inside an element")
    bad("dcm_meta_without_group_length", ai[:132] + ai[144:], "the meta group must start with its length")
    change("dcm_meta_without_transfer_syntax", lambda d: drop(d.meta, (0x0002, 0x0010)), "no transfer syntax")
    for name in sorted(os.listdir(os.path.join(FIXTURES, "fuzz"))):
        bad(f"fuzz_{name.removesuffix('.dcm')}", fixture("fuzz", name),
            "an input that once made the DICOM parser loop or reserve gigabytes")
    # transfer syntaxes
    for name, uid in [("jpeg_baseline", "1.2.840.10008.1.2.4.50"), ("jpeg_ls", "1.2.840.10008.1.2.4.80"),
                      ("implicit_vr_on_explicit_body", "1.2.840.10008.1.2"),
                      ("big_endian_on_little_endian_body", EXPLICIT_BE),
                      ("deflate_on_plain_body", DEFLATED), ("rle_on_native_pixels", "1.2.840.10008.1.2.5"),
                      ("empty", ""), ("not_a_uid", "hello world")]:
        change(f"dcm_ts_{name}", lambda d, uid=uid: d.set_syntax(uid),
               "a transfer syntax the data set is not in, or one segwatch does not read")
    bad("fixture_bad_transfer_syntax_jpeg2000", fixture("dicom", "bad_transfer_syntax.dcm"), "JPEG 2000")
    bad("fixture_bad_unknown_transfer_syntax", fixture("dicom", "bad_unknown_transfer_syntax.dcm"), "unknown TS")

    def binary_rle(d):
        d.set_syntax("1.2.840.10008.1.2.5")
        pixels = at(d.ds, PIXEL_DATA)
        frames = 20
        size = (13 * 11 + 7) // 8
        pixels.fragments = [b""] + [rle_fragment(pixels.value[i * 17:i * 17 + size]) for i in range(frames)]
        pixels.vr = b"OB"
    change("dcm_rle_of_1bit_binary", binary_rle, "1-bit RLE is refused as an unsupported transfer syntax")
    # deflate
    deflated = fixture("dicom", "ai_binary_deflate.dcm")
    start = meta_offset(deflated)
    flipped = bytearray(deflated)
    for i in range(start + 10, start + 60):
        flipped[i] ^= 0xA5
    bad("dcm_deflate_corrupt", bytes(flipped), "the deflated data set is corrupt")
    bad("dcm_deflate_truncated", deflated[: (start + len(deflated)) // 2], "the deflated data set ends early")

    def deflate_bomb(d):
        d.ds.insert(0, Elem((0x0009, 0x0010), b"LO", encode_value(b"LO", "SEGWATCH BOMB")))
        d.ds.insert(1, Elem((0x0009, 0x1001), b"OB", bytes(32 * MiB)))
        d.ds.sort(key=lambda x: x.tag)
    change("dcm_deflate_bomb_32mib", deflate_bomb,
           "a ~100 KB upload whose deflated data set inflates to 32 MiB, 8 times max_upload_bytes and "
           "max_decompressed_bytes: a declared-size limit, like a NIfTI gzip bomb", status=413,
           fixture_name="ai_binary_deflate.dcm")
    # not a SEG
    bad("fixture_bad_not_seg", fixture("dicom", "bad_not_seg.dcm"), "a CT image, not a segmentation")
    change("dcm_sop_class_ct", set_at([SOP_CLASS], b"UI", "1.2.840.10008.5.1.4.1.1.2"), "SOP class CT Image")
    change("dcm_sop_class_removed", lambda d: drop(d.ds, SOP_CLASS), "no SOP class")
    change("dcm_segmentation_type_unknown", set_at([SEGMENTATION_TYPE], b"CS", "PROBABILITY"),
           "SegmentationType must be BINARY, FRACTIONAL or LABELMAP")
    change("dcm_segmentation_type_removed", lambda d: drop(d.ds, SEGMENTATION_TYPE), "no SegmentationType")
    # image pixel module and frame counts
    change("dcm_rows_zero", set_at([ROWS], b"US", 0), "zero Rows")
    change("dcm_columns_zero", set_at([COLUMNS], b"US", 0), "zero Columns")
    change("dcm_rows_removed", lambda d: drop(d.ds, ROWS), "no Rows")
    change("dcm_rows_one_more", set_at([ROWS], b"US", 14), "the pixel data is short of the frames declared")

    def huge_frames(d):
        put(d.ds, ROWS, b"US", 65535)
        put(d.ds, COLUMNS, b"US", 65535)
    change("dcm_rows_columns_65535", huge_frames, "20 frames of 65535 x 65535 > max_voxels", status=413)
    change("dcm_frames_999999999", set_at([NUMBER_OF_FRAMES], b"IS", "999999999"),
           "NumberOfFrames declares 1.4e11 voxels > max_voxels", status=413)
    for name, value in [("zero", "0"), ("negative", "-1"), ("not_a_number", "abc"), ("fraction", "20.5")]:
        change(f"dcm_frames_{name}", set_at([NUMBER_OF_FRAMES], b"IS", value),
               "NumberOfFrames disagrees with the per-frame items")
    change("dcm_frames_removed", lambda d: drop(d.ds, NUMBER_OF_FRAMES), "one frame assumed, 20 items")
    bad("fixture_bad_frame_count", fixture("dicom", "bad_frame_count.dcm"), "NumberOfFrames 27, 20 frames")
    for bits in (0, 8, 16):
        change(f"dcm_binary_bits_allocated_{bits}", set_at([BITS_ALLOCATED], b"US", bits),
               "a BINARY SEG has 1 bit allocated")
    change("dcm_pixel_data_removed", lambda d: drop(d.ds, PIXEL_DATA), "no pixel data")
    change("dcm_pixel_data_short", lambda d: setattr(at(d.ds, PIXEL_DATA), "value", at(d.ds, PIXEL_DATA).value[:100]),
           "100 of the 358 bytes the frames need")
    change("dcm_pixel_data_empty", lambda d: setattr(at(d.ds, PIXEL_DATA), "value", b""), "no pixel bytes")

    def per_frame_items(count):
        def fn(d):
            seq = at(d.ds, PER_FRAME)
            seq.items = (seq.items * 2)[:count]
        return fn
    change("dcm_per_frame_no_items", per_frame_items(0), "NumberOfFrames 20, no per-frame items")
    change("dcm_per_frame_21_items", per_frame_items(21), "NumberOfFrames 20, 21 per-frame items")
    bad("fixture_bad_no_per_frame_groups", fixture("dicom", "bad_no_per_frame_groups.dcm"), "no per-frame groups")
    change("dcm_shared_groups_removed", lambda d: drop(d.ds, SHARED), "no orientation nor pixel measures")
    # orientation
    iop = [SHARED, 0, PLANE_ORIENTATION, 0, ORIENTATION]
    for name, value in [("all_zero", "0\\0\\0\\0\\0\\0"), ("nan", "NaN\\0\\0\\0\\1\\0"),
                        ("not_orthogonal", "1\\0\\0\\0.6\\0.8\\0"), ("not_unit", "2\\0\\0\\0\\2\\0"),
                        ("five_values", "1\\0\\0\\0\\1"), ("inf", "inf\\0\\0\\0\\1\\0"),
                        ("parallel", "1\\0\\0\\1\\0\\0"), ("text", "a\\b\\c\\d\\e\\f")]:
        change(f"dcm_orientation_{name}", set_at(iop, b"DS", value),
               "ImageOrientationPatient must be two orthogonal unit vectors")
    bad("fixture_bad_mixed_orientation", fixture("dicom", "bad_mixed_orientation.dcm"), "mixed orientations")
    # spacing
    ps = [SHARED, 0, MEASURES, 0, PIXEL_SPACING]
    for name, value in [("zero", "0\\0"), ("nan", "NaN\\NaN"), ("negative", "-0.7\\0.9"), ("1e-9", "1e-9\\1e-9"),
                        ("1e9", "1e9\\1e9"), ("inf", "inf\\inf"), ("one_value", "0.7"), ("text", "abc\\def")]:
        change(f"dcm_pixel_spacing_{name}", set_at(ps, b"DS", value),
               "PixelSpacing must be two finite spacings within 0.001-1000 mm")
    change("dcm_pixel_spacing_removed", lambda d: drop(at(d.ds, SHARED, 0, MEASURES).items[0], PIXEL_SPACING),
           "no PixelSpacing")
    sbs = [SHARED, 0, MEASURES, 0, SPACING_BETWEEN_SLICES]
    for name, value in [("zero", "0"), ("nan", "NaN"), ("1e-9", "1e-9")]:
        change(f"dcm_spacing_between_slices_{name}", set_at(sbs, b"DS", value),
               "a slice spacing that is not finite or outside 0.001-1000 mm is refused (README, degenerate "
               "geometry)")
    # positions
    ipp = [PER_FRAME, 0, PLANE_POSITION, 0, POSITION]
    change("dcm_position_nan", set_at(ipp, b"DS", "NaN\\0\\0"), "a frame without a finite position")
    change("dcm_position_removed", lambda d: drop(at(d.ds, PER_FRAME).items[0], PLANE_POSITION),
           "a frame without ImagePositionPatient")

    def shift_frame(along, mm):
        """Moves frame 1 by `mm` along the row direction or the slice normal."""
        def fn(d):
            cosines = [float(v) for v in text_of(at(d.ds, *iop)).split("\\")]
            row, column = cosines[:3], cosines[3:]
            normal = [row[1] * column[2] - row[2] * column[1], row[2] * column[0] - row[0] * column[2],
                      row[0] * column[1] - row[1] * column[0]]
            direction = row if along == "row" else normal
            elem = at(d.ds, *ipp)
            moved = [float(v) + mm * c for v, c in zip(text_of(elem).split("\\"), direction)]
            elem.value = encode_value(b"DS", "\\".join(f"{v:.6f}" for v in moved))
        return fn
    change("dcm_position_shifted_in_plane", shift_frame("row", 5.0), "a frame shifted 5 mm in its plane")
    change("dcm_position_off_slice_lattice", shift_frame("normal", 1.0), "a frame 1 mm off the 2.5 mm lattice")
    change("dcm_position_1e6_mm_away", shift_frame("normal", 1e6),
           "frames spanning 400000 slices: over max_voxels", status=413)
    # segments
    bad("fixture_bad_unknown_segment_ref", fixture("dicom", "bad_unknown_segment_ref.dcm"), "segment 9 undefined")
    change("dcm_referenced_segment_zero",
           set_at([PER_FRAME, 0, SEGMENT_IDENTIFICATION, 0, REFERENCED_SEGMENT], b"US", 0), "segment 0 undefined")
    change("dcm_duplicate_segment_number", set_at([SEGMENT_SEQUENCE, 1, SEGMENT_NUMBER], b"US", 1),
           "two segments share a SegmentNumber")
    change("dcm_segment_sequence_empty", lambda d: setattr(at(d.ds, SEGMENT_SEQUENCE), "items", []),
           "no segment defined")
    bad("fixture_bad_no_segment_sequence", fixture("dicom", "bad_no_segment_sequence.dcm"), "no SegmentSequence")
    change("dcm_segment_number_removed", lambda d: drop(at(d.ds, SEGMENT_SEQUENCE).items[0], SEGMENT_NUMBER),
           "a segment without SegmentNumber")
    change("dcm_property_type_removed", lambda d: drop(at(d.ds, SEGMENT_SEQUENCE).items[0], PROPERTY_TYPE),
           "a segment without a property type")
    change("dcm_property_code_value_removed",
           lambda d: drop(at(d.ds, SEGMENT_SEQUENCE, 0, PROPERTY_TYPE).items[0], CODE_VALUE),
           "an incomplete property type code")
    change("dcm_frame_segment_identification_removed",
           lambda d: drop(at(d.ds, PER_FRAME).items[0], SEGMENT_IDENTIFICATION), "a frame names no segment")

    def many_segments(d):
        seq = at(d.ds, SEGMENT_SEQUENCE)
        template = seq.items[0]
        for number in range(5, 21):
            data = _Writer().elements(template)  # a deep copy through the writer and reader
            item, _ = _Reader(data).elements(0, len(data))
            put(item, SEGMENT_NUMBER, b"US", number)
            put(at(item, PROPERTY_TYPE).items[0], CODE_VALUE, b"SH", f"9{number:07d}")
            seq.items.append(item)
    change("dcm_20_segments", many_segments, "20 segments > max_structures 16")
    change("dcm_fractional_max_value_zero", set_at([MAX_FRACTIONAL], b"US", 0), "MaximumFractionalValue 0",
           fixture_name="ai_fractional.dcm")
    change("dcm_fractional_bits_allocated_1", set_at([BITS_ALLOCATED], b"US", 1),
           "a FRACTIONAL SEG has 8 bits allocated", fixture_name="ai_fractional.dcm")
    change("dcm_labelmap_bits_allocated_1", set_at([BITS_ALLOCATED], b"US", 1),
           "a LABELMAP SEG has 8 or 16 bits allocated", fixture_name="ai_labelmap.dcm")

    def labelmap_value(value):
        def fn(d):
            pixels = at(d.ds, PIXEL_DATA)
            pixels.value = bytes([value]) + pixels.value[1:]
        return fn
    change("dcm_labelmap_undefined_segment_value", labelmap_value(9), "pixel value 9 names no segment",
           fixture_name="ai_labelmap.dcm")
    # RLE
    def fragments(fn):
        def change_fragments(d):
            pixels = at(d.ds, PIXEL_DATA)
            pixels.fragments = fn(pixels.fragments)
        return change_fragments
    change("dcm_rle_fragment_missing", fragments(lambda f: f[:1] + f[2:]), "35 RLE fragments for 36 frames",
           fixture_name="ai_fractional_rle.dcm")
    change("dcm_rle_segment_count_99", fragments(lambda f: f[:1] + [struct.pack("<I", 99) + f[1][4:]] + f[2:]),
           "an RLE header with 99 segments", fixture_name="ai_fractional_rle.dcm")
    change("dcm_rle_fragment_truncated", fragments(lambda f: f[:1] + [f[1][:10]] + f[2:]),
           "an RLE fragment shorter than its header", fixture_name="ai_fractional_rle.dcm")
    change("dcm_rle_segment_offset_past_end",
           fragments(lambda f: f[:1] + [struct.pack("<II", 1, 0x7FFFFFFF) + f[1][8:]] + f[2:]),
           "an RLE segment offset past the fragment", fixture_name="ai_labelmap_rle.dcm")
    # structure: lengths, nesting, VRs
    def before_pixels(elem):
        def fn(d):
            d.ds.insert(len(d.ds) - 1, elem)
        return fn
    change("dcm_undefined_length_text_element",
           before_pixels(raw_element((0x0070, 0x0082), b"UT", b"\0\0" + struct.pack("<I", UNDEFINED), b"ab")),
           "a non-sequence element of undefined length")
    change("dcm_nesting_40_deep", before_pixels(nested(40)), "sequences nested more than 32 deep")
    change("dcm_nesting_40_deep_undefined_lengths", before_pixels(nested(40, undefined=True)),
           "sequences nested more than 32 deep")
    E.append(Entry("dcm_nesting_30_deep", mutated(before_pixels(nested(30)), "corrected_binary.dcm"), 202,
                   partner=corrected,
                   why="30 nested sequences are within the 32 allowed (and ContentSequence is removed when "
                       "stored)"))
    unclosed = fixture("dicom", "ai_binary.dcm") + struct.pack("<HH", 0x7FE1, 0x0010) + b"SQ\0\0" + \
        struct.pack("<I", UNDEFINED) + struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
    bad("dcm_sequence_never_closed", unclosed, "an undefined-length sequence with no delimiter")
    change("dcm_item_tag_where_element_expected",
           before_pixels(Elem(ITEM, b"", raw=struct.pack("<HHI", 0xFFFE, 0xE000, 0))), "an item tag at top level")
    change("dcm_pixel_data_length_2gib", lambda d: setattr(at(d.ds, PIXEL_DATA), "raw",
                                                           struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" +
                                                           struct.pack("<I", 0x7FFFFFFF) + bytes(358)),
           "PixelData declares 2 GiB")
    change("dcm_text_length_4gib",
           before_pixels(raw_element((0x0070, 0x0082), b"UT", b"\0\0" + struct.pack("<I", 0xFFFFFFF0), b"ab")),
           "an element declaring 4 GiB")
    change("dcm_sequence_length_4gib",
           before_pixels(raw_element(CONTENT_SEQUENCE, b"SQ", b"\0\0" + struct.pack("<I", 0xFFFFFFF0))),
           "a sequence declaring 4 GiB")

    def item_longer_than_sequence(d):
        seq = at(d.ds, SEGMENT_SEQUENCE)
        body = _Writer().elements(seq.items[0])
        seq.raw = (struct.pack("<HH", *SEGMENT_SEQUENCE) + b"SQ\0\0" + struct.pack("<I", len(body) + 8) +
                   struct.pack("<HHI", 0xFFFE, 0xE000, len(body) + 100) + body)
    change("dcm_item_longer_than_its_sequence", item_longer_than_sequence, "an item runs past its sequence")

    def short_length(d):
        x = at(d.ds, MANUFACTURER)
        x.raw = struct.pack("<HH", *MANUFACTURER) + b"LO" + struct.pack("<H", 0xFFFF) + x.value
    change("dcm_short_length_65535", short_length, "Manufacturer declares 65535 bytes")

    def bogus_vr(vr):
        def fn(d):
            x = at(d.ds, MANUFACTURER)
            x.raw = struct.pack("<HH", *MANUFACTURER) + vr + struct.pack("<H", len(x.value)) + x.value
        return fn
    change("dcm_bogus_vr_zz_short_form", bogus_vr(b"ZZ"), "an unknown VR read with a 4-byte length misframes")
    change("dcm_bogus_vr_nul_short_form", bogus_vr(b"\0\0"), "a NUL VR misframes the data set")
    change("dcm_vr_sq_on_text", bogus_vr(b"SQ"), "SQ framing over a text value")
    private = [Elem((0x0009, 0x0010), b"LO", encode_value(b"LO", "SEGWATCH TEST")),
               raw_element((0x0009, 0x1001), b"ZZ", b"\0\0" + struct.pack("<I", 8), b"PRIVATE!")]

    def add_private(d):
        d.ds[:] = sorted(d.ds + private, key=lambda x: x.tag)
    E.append(Entry("dcm_unknown_vr_private_well_formed", mutated(add_private, "corrected_binary.dcm"), 202,
                   partner=corrected,
        why="an unknown VR with a 4-byte length is read as UN (PS3.5 6.2); private elements are removed"))
    # near the upload limit: the de-identified form is larger than the upload
    def near_limit(d):
        # Short instance UIDs (hashing makes each ~40 bytes longer) and pixel data
        # padded so the file is just under max_upload_bytes.
        mapping = {}
        for x in walk(d.ds + d.meta):
            if x.vr == b"UI" and x.tag not in ((0x0002, 0x0002), (0x0002, 0x0010), (0x0002, 0x0012)):
                uid = text_of(x)
                if uid and not uid.startswith(STANDARD_ROOT):
                    x.value = encode_value(b"UI", mapping.setdefault(uid, f"1.2.{len(mapping) + 1}"))
        pixels = at(d.ds, PIXEL_DATA)
        size = len(d.to_bytes())
        pixels.value += bytes(LIMITS["max_upload_bytes"] - size - 2)
    E.append(Entry("dcm_near_upload_limit_uids_grow_when_hashed", mutated(near_limit, "corrected_binary.dcm"), 202,
                   partner=corrected,
                   why="a SEG 2 bytes under max_upload_bytes (pixel data padded, extra bytes are ignored) with "
                       "short UIDs: accepted, and it must be scoreable"))
    E.append(Entry("dcm_two_segments_labelled_alike", ai, 202, partner=corrected,
                   why="the AI fixture labels both kidneys \"Kidney\" (told apart by their laterality "
                       "modifier, README of the fixtures): valid, so scoreable whichever role it is"))
    E.append(Entry("dcm_two_segments_labelled_alike_with_nifti", ai, 202,
                   partner=fixture("dicom", "ref_labels.nii.gz"),
                   why="the same SEG paired with the NIfTI of its grid (segment n pairs with label n)"))
    # grid mismatches (the partner is uploaded first as the other role)
    E.append(Entry("fixture_mismatch_grid_vs_corrected", fixture("dicom", "mismatch_grid.dcm"), 422,
                   partner=corrected, why="PixelSpacing 0.8 vs 0.7: grids differ"))
    E.append(Entry("dcm_vs_nifti_other_grid", ai, 422, partner=nifti(),
                   why="a SEG and a NIfTI of different grids"))
    return E


def grid_entries() -> list[Entry]:
    ok = nifti()
    E = []
    for name, data, why in [
        ("other_spacing", nifti(pixdim=(1.0, 0.8, 0.8, 3.0, 1, 1, 1, 1), srow_z=(0, 0, 3.0, -30.0)), "spacing"),
        ("other_shape", nifti(dim=(3, 8, 8, 5, 1, 1, 1, 1), data=base_labels((8, 8, 5)), shape=(8, 8, 5)), "shape"),
        ("half_voxel_shift", nifti(srow_x=(0.8, 0, 0, -9.6)), "an offset that is not a whole voxel"),
        ("rotated_30_degrees", nifti(srow_x=(0.8 * math.cos(0.5236), -0.8 * math.sin(0.5236), 0, -10.0),
                                     srow_y=(0.8 * math.sin(0.5236), 0.8 * math.cos(0.5236), 0, 20.0)),
         "a rotation that is not a permutation"),
    ]:
        E.append(Entry(f"grid_mismatch_{name}", gz(data), 422, partner=ok,
                       why=f"grids differ ({why}): refused, never resampled"))
    return E


def corpus() -> list[Entry]:
    """Every entry, in a fixed order, with unique names."""
    entries = nifti_entries() + gzip_entries() + request_entries() + dicom_entries() + grid_entries()
    names = [e.name for e in entries]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"duplicate corpus names: {duplicates}"
    return entries


if __name__ == "__main__":
    entries = corpus()
    by_status = {}
    for e in entries:
        by_status[e.expected_status] = by_status.get(e.expected_status, 0) + 1
    digest = hashlib.sha256(b"".join(e.name.encode() + e.data for e in entries)).hexdigest()[:16]
    print(f"{len(entries)} entries, expected {dict(sorted(by_status.items()))}, sha256 {digest}")
