//! DICOM RLE Lossless (PS3.5 annex G) frame decoding. Written here because the
//! DICOM crates decode RLE only inside their image pipeline, which needs the whole
//! object and converts to images; a frame is a 64-byte header and PackBits segments.

/// Decodes one RLE fragment of `pixels` samples of `bits` (8 or 16) bits.
pub fn decode_frame(fragment: &[u8], pixels: usize, bits: usize) -> Result<Vec<u16>, String> {
    let planes = match bits {
        8 => 1,
        16 => 2,
        other => return Err(format!("RLE with {other} bits allocated is not supported")),
    };
    let header = fragment
        .get(..64)
        .ok_or("RLE header shorter than 64 bytes")?;
    let word = |i: usize| {
        u32::from_le_bytes([
            header[4 * i],
            header[4 * i + 1],
            header[4 * i + 2],
            header[4 * i + 3],
        ]) as usize
    };
    if word(0) != planes {
        return Err(format!("{} RLE segments for {bits}-bit samples", word(0)));
    }
    let mut out = vec![0u16; pixels];
    for plane in 0..planes {
        let start = word(1 + plane);
        let end = if plane + 1 < planes {
            word(2 + plane)
        } else {
            fragment.len()
        };
        let segment = fragment
            .get(start..end.min(fragment.len()))
            .filter(|_| start <= end)
            .ok_or("RLE segment offset out of range")?;
        let bytes = unpack_bits(segment, pixels)?;
        // Segments run from the most significant byte to the least.
        let shift = 8 * (planes - 1 - plane);
        for (o, b) in out.iter_mut().zip(bytes) {
            *o |= (b as u16) << shift;
        }
    }
    Ok(out)
}

/// PackBits: a header byte n, then n + 1 literal bytes (n ≥ 0) or one byte
/// repeated 1 − n times (n < 0, except −128, which is a no-op).
fn unpack_bits(segment: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len && i < segment.len() {
        let n = segment[i] as i8;
        i += 1;
        match n {
            0..=127 => {
                let count = n as usize + 1;
                let literal = segment
                    .get(i..i + count)
                    .ok_or("RLE literal run past the end of the segment")?;
                out.extend_from_slice(literal);
                i += count;
            }
            -127..=-1 => {
                let value = *segment
                    .get(i)
                    .ok_or("RLE repeat run past the end of the segment")?;
                out.extend(std::iter::repeat_n(value, (1 - n as isize) as usize));
                i += 1;
            }
            _ => {}
        }
    }
    if out.len() < len {
        return Err(format!(
            "RLE segment decodes to {} of {len} samples",
            out.len()
        ));
    }
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(segments: &[&[u8]]) -> Vec<u8> {
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(&(segments.len() as u32).to_le_bytes());
        let mut offset = 64u32;
        for (i, s) in segments.iter().enumerate() {
            header[4 + 4 * i..8 + 4 * i].copy_from_slice(&offset.to_le_bytes());
            offset += s.len() as u32;
        }
        header
            .into_iter()
            .chain(segments.iter().flat_map(|s| s.iter().copied()))
            .collect()
    }

    #[test]
    fn decodes_literal_and_repeat_runs() {
        // 2 literal bytes, 3 × 7, a no-op, 1 literal.
        let f = frame(&[&[1, 4, 5, (-2i8) as u8, 7, 0x80, 0, 9]]);
        assert_eq!(decode_frame(&f, 6, 8).unwrap(), vec![4, 5, 7, 7, 7, 9]);
    }

    #[test]
    fn sixteen_bit_samples_combine_high_and_low_planes() {
        let f = frame(&[&[1, 1, 0], &[1, 2, 3]]);
        assert_eq!(decode_frame(&f, 2, 16).unwrap(), vec![0x0102, 0x0003]);
    }

    #[test]
    fn rejects_short_and_malformed_data() {
        assert!(
            decode_frame(&[0; 10], 4, 8)
                .unwrap_err()
                .contains("shorter than 64")
        );
        let f = frame(&[&[3, 1, 2]]);
        assert!(decode_frame(&f, 4, 8).unwrap_err().contains("past the end"));
        let f = frame(&[&[0, 1]]);
        assert!(
            decode_frame(&f, 4, 8)
                .unwrap_err()
                .contains("decodes to 1 of 4")
        );
        assert!(
            decode_frame(&frame(&[&[0, 1]]), 1, 16)
                .unwrap_err()
                .contains("1 RLE segments")
        );
        assert!(
            decode_frame(&frame(&[&[0, 1]]), 1, 1)
                .unwrap_err()
                .contains("not supported")
        );
    }
}
