//! `f32` values as the little-endian bytes that safetensors files, the wire and the Python
//! bridge carry. Byte views go through `bytemuck`, so no loop assembles a float from four bytes
//! and a byte buffer of any alignment is read without a misaligned cast.

use std::borrow::Cow;

/// The values' little-endian bytes: borrowed on little-endian machines, copied elsewhere.
pub fn as_le_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// Appends the values that `bytes` holds (four little-endian bytes each) to `out`. Trailing
/// bytes short of a whole value are ignored: callers that must refuse them check the length.
pub fn extend_from_le_bytes(out: &mut Vec<f32>, bytes: &[u8]) {
    let start = out.len();
    let whole = bytes.len() / 4 * 4;
    out.resize(start + whole / 4, 0.0);
    let added = &mut out[start..];
    // The destination is `f32`-aligned; the source may have any alignment.
    bytemuck::cast_slice_mut::<f32, u8>(added).copy_from_slice(&bytes[..whole]);
    if cfg!(target_endian = "big") {
        for v in added {
            *v = f32::from_bits(v.to_bits().swap_bytes());
        }
    }
}

/// The values that `bytes` holds, as [`extend_from_le_bytes`] reads them.
pub fn from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / 4);
    extend_from_le_bytes(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IEEE 754 single precision, written out by hand: 1.0 = 0x3f800000, -2.5 = 0xc0200000,
    /// the smallest subnormal = 0x00000001.
    const KNOWN: [(f32, [u8; 4]); 3] = [
        (1.0, [0x00, 0x00, 0x80, 0x3f]),
        (-2.5, [0x00, 0x00, 0x20, 0xc0]),
        (f32::from_bits(1), [0x01, 0x00, 0x00, 0x00]),
    ];

    #[test]
    fn values_match_their_known_bytes() {
        let values: Vec<f32> = KNOWN.iter().map(|(v, _)| *v).collect();
        let bytes: Vec<u8> = KNOWN.iter().flat_map(|(_, b)| *b).collect();
        assert_eq!(as_le_bytes(&values).as_ref(), bytes.as_slice());
        assert_eq!(from_le_bytes(&bytes), values);
    }

    #[test]
    fn misaligned_and_ragged_buffers_are_read_without_panicking() {
        let bytes: Vec<u8> = KNOWN.iter().flat_map(|(_, b)| *b).collect();
        let mut shifted = vec![0xee];
        shifted.extend_from_slice(&bytes);
        shifted.push(0xff);
        // Starts one byte into the allocation (misaligned for f32) and ends with a stray byte.
        let values = from_le_bytes(&shifted[1..]);
        assert_eq!(values, [1.0, -2.5, f32::from_bits(1)]);
        let mut out = vec![7.0];
        extend_from_le_bytes(&mut out, &shifted[1..3]);
        assert_eq!(out, [7.0]);
    }
}
