//! Frame decoding: the set pixels of each frame, per pixel-data variant (1-bit
//! BINARY packed across bytes, 8- or 16-bit FRACTIONAL and LABELMAP samples,
//! RLE fragments), gathered into one mask per segment.

use super::*;

impl<'a> Seg<'a> {
    /// The pixel data, checked against the frame count.
    fn pixel_data(&self) -> Result<PixelData<'a>, FormatError> {
        let pixels = self.rows * self.columns;
        let frames = self.frames.len();
        let element = self
            .object
            .element_opt(tags::PIXEL_DATA)
            .ok()
            .flatten()
            .ok_or_else(|| invalid("missing PixelData"))?;
        if self.encapsulated {
            let Value::PixelSequence(sequence) = element.value() else {
                return Err(invalid(
                    "RLE transfer syntax but the pixel data is not encapsulated",
                ));
            };
            let fragments = sequence.fragments();
            if fragments.len() != frames {
                return Err(FormatError::FrameCount(format!(
                    "NumberOfFrames is {frames} but the pixel data has {} RLE fragments",
                    fragments.len()
                )));
            }
            return Ok(PixelData::Rle(fragments));
        }
        let Value::Primitive(value) = element.value() else {
            return Err(invalid(
                "encapsulated pixel data in a native transfer syntax",
            ));
        };
        let data = match value {
            PrimitiveValue::U8(bytes) => PixelData::Bytes(bytes),
            PrimitiveValue::U16(words) if self.bits_allocated == 16 => PixelData::Words(words),
            // OW pixel data of byte-sized samples is a little-endian byte stream.
            PrimitiveValue::U16(words) => {
                PixelData::OwnedBytes(words.iter().flat_map(|w| w.to_le_bytes()).collect())
            }
            _ => return Err(invalid("PixelData has an unexpected value representation")),
        };
        let have = match &data {
            PixelData::Bytes(b) => b.len(),
            PixelData::OwnedBytes(b) => b.len(),
            PixelData::Words(w) => 2 * w.len(),
            PixelData::Rle(_) => 0,
        };
        let need = match self.bits_allocated {
            1 => (frames * pixels).div_ceil(8),
            bits => frames * pixels * bits / 8,
        };
        if have < need {
            return Err(FormatError::FrameCount(format!(
                "NumberOfFrames is {frames} but the pixel data holds {have} of the {need} bytes they need"
            )));
        }
        Ok(data)
    }

    /// Writes the non-zero pixels of frame `f` as (pixel index, value) into `out`
    /// (BINARY: value 1).
    fn nonzero_pixels(
        &self,
        data: &PixelData,
        f: usize,
        out: &mut Vec<(usize, u16)>,
    ) -> Result<(), FormatError> {
        let pixels = self.rows * self.columns;
        out.clear();
        let keep = |out: &mut Vec<(usize, u16)>, values: &mut dyn Iterator<Item = u16>| {
            out.extend(values.enumerate().filter(|(_, v)| *v != 0));
        };
        match (data, self.bits_allocated) {
            (PixelData::Rle(fragments), bits) => {
                let values = crate::formats::rle::decode_frame(&fragments[f], pixels, bits)
                    .map_err(|e| invalid(format!("frame {}: {e}", f + 1)))?;
                keep(out, &mut values.into_iter());
            }
            (PixelData::Words(words), _) => keep(
                out,
                &mut words[f * pixels..(f + 1) * pixels].iter().copied(),
            ),
            (PixelData::Bytes(bytes), 1) => set_bits(bytes, f * pixels, pixels, out),
            (PixelData::OwnedBytes(bytes), 1) => set_bits(bytes, f * pixels, pixels, out),
            (PixelData::Bytes(bytes), bits) => {
                keep(out, &mut native_samples(bytes, bits, f, pixels))
            }
            (PixelData::OwnedBytes(bytes), bits) => {
                keep(out, &mut native_samples(bytes, bits, f, pixels))
            }
        }
        Ok(())
    }

    /// Segment slot of each pixel value of frame `f`, or None for background.
    fn slot_of(
        &self,
        known: &BTreeMap<u16, usize>,
        f: usize,
        value: u16,
    ) -> Result<Option<usize>, FormatError> {
        if value == 0 {
            return Ok(None);
        }
        if self.kind == SegKind::Fractional && 2 * (value as u32) < self.max_fraction as u32 {
            return Ok(None);
        }
        let number = match self.kind {
            SegKind::Labelmap => value,
            _ => self.frames[f].segment.unwrap_or_default(),
        };
        known.get(&number).map(|&slot| Some(slot)).ok_or_else(|| {
            invalid(format!(
                "frame {} references segment {number}, which SegmentSequence does not define",
                f + 1
            ))
        })
    }

    pub(super) fn decode(self) -> Result<SegImage, FormatError> {
        let (grid, slices) = self.geometry()?;
        let data = self.pixel_data()?;
        let known: BTreeMap<u16, usize> = self
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| (s.number, i))
            .collect();
        if known.len() != self.segments.len() {
            return Err(invalid("two segments share a SegmentNumber"));
        }
        let columns = self.columns;
        let at = |i: usize, z: usize| [i % columns, i / columns, z];
        // Pass 1: each segment's box (and, for FRACTIONAL PROBABILITY, the box
        // of non-zero values; OCCUPANCY values are thresholded only).
        let mut boxes: Vec<Option<BoundingBox>> = vec![None; self.segments.len()];
        let mut soft_boxes: Vec<Option<BoundingBox>> = vec![None; self.segments.len()];
        let mut values = Vec::new();
        for (f, &z) in slices.iter().enumerate() {
            self.nonzero_pixels(&data, f, &mut values)?;
            for &(i, v) in &values {
                // A fractional value is a fraction of MaximumFractionalValue
                // (PS3.3 C.8.20.2.3): a larger one is no fraction at all.
                if self.kind == SegKind::Fractional && v > self.max_fraction {
                    return Err(FormatError::Value(format!(
                        "frame {} stores the value {v}, above MaximumFractionalValue {}",
                        f + 1,
                        self.max_fraction
                    )));
                }
                let p = BoundingBox::point(at(i, z));
                if self.probability {
                    let slot = *known
                        .get(&self.frames[f].segment.unwrap_or_default())
                        .ok_or_else(|| {
                            invalid(format!("frame {} references an undefined segment", f + 1))
                        })?;
                    soft_boxes[slot] = BoundingBox::union_opt(soft_boxes[slot], Some(p));
                }
                if let Some(slot) = self.slot_of(&known, f, v)? {
                    boxes[slot] = BoundingBox::union_opt(boxes[slot], Some(p));
                }
            }
        }
        // Pass 2: the voxels.
        let mut masks: Vec<BoxMask> = boxes
            .iter()
            .map(|b| b.map(BoxMask::with_box).unwrap_or_default())
            .collect();
        let mut fractions: Vec<Option<FractionMap>> = soft_boxes
            .iter()
            .map(|b| {
                b.map(|bbox| FractionMap {
                    bbox,
                    values: vec![0; bbox.extent().iter().product()],
                    max: self.max_fraction,
                })
            })
            .collect();
        for (f, &z) in slices.iter().enumerate() {
            self.nonzero_pixels(&data, f, &mut values)?;
            for &(i, v) in &values {
                let p = at(i, z);
                if self.probability
                    && let Some(slot) = known.get(&self.frames[f].segment.unwrap_or_default())
                    && let Some(map) = &mut fractions[*slot]
                {
                    map.set(p, v.min(u8::MAX as u16) as u8);
                }
                if let Some(slot) = self.slot_of(&known, f, v)? {
                    masks[slot].insert(p);
                }
            }
        }
        let provenance = self.provenance();
        let segments = self
            .segments
            .into_iter()
            .zip(masks.into_iter().zip(fractions))
            .filter(|(info, _)| info.code != BACKGROUND_CODE)
            .map(|(info, (mask, fractions))| Segment {
                number: info.number,
                code: info.code,
                name: info.name,
                algorithm_type: info.algorithm_type,
                mask,
                probabilities: fractions,
            })
            .collect();
        Ok(SegImage {
            grid,
            kind: self.kind,
            segments,
            provenance,
            sop_class_uid: text(self.object, tags::SOP_CLASS_UID).unwrap_or_default(),
        })
    }
}

/// Pixel data as stored: native bytes or words, or one RLE fragment per frame.
enum PixelData<'a> {
    Bytes(&'a [u8]),
    OwnedBytes(Vec<u8>),
    Words(&'a [u16]),
    Rle(&'a [Vec<u8>]),
}

/// The set pixels of a 1-bit frame of `pixels` starting at bit `start`. Frames are
/// packed back to back across byte boundaries, first pixel in the lowest bit; zero
/// bytes are skipped whole.
fn set_bits(bytes: &[u8], start: usize, pixels: usize, out: &mut Vec<(usize, u16)>) {
    let end = start + pixels;
    for byte in start / 8..end.div_ceil(8) {
        let b = bytes[byte];
        if b == 0 {
            continue;
        }
        for bit in 0..8 {
            let index = byte * 8 + bit;
            if (b >> bit) & 1 == 1 && (start..end).contains(&index) {
                out.push((index - start, 1));
            }
        }
    }
}

/// 8- or 16-bit (little-endian) samples of frame `f`.
fn native_samples(
    bytes: &[u8],
    bits: usize,
    f: usize,
    pixels: usize,
) -> Box<dyn Iterator<Item = u16> + '_> {
    if bits == 8 {
        Box::new(
            bytes[f * pixels..(f + 1) * pixels]
                .iter()
                .map(|&b| b as u16),
        )
    } else {
        Box::new(
            bytes[2 * f * pixels..2 * (f + 1) * pixels]
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]])),
        )
    }
}
