//! How a [`Dataset`](super::Dataset)'s feature values are held: image pixels stay one byte each
//! as read (a quarter of the memory of `f32`) and become `f32` one batch at a time; table values
//! are `f32` from the start.

use std::borrow::Cow;

/// The feature values of a data set, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Features {
    /// Image pixels as read; the value of byte `b` is `b / 255`, in `[0, 1]`.
    Pixels(Vec<u8>),
    /// Values as they are used (tables, after any standardization).
    Values(Vec<f32>),
}

/// The value of pixel byte `b`: the one expression every path uses, so that a model sees the
/// same `f32` wherever its data was converted.
#[inline]
pub fn pixel_value(b: u8) -> f32 {
    f32::from(b) / 255.0
}

impl Features {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Features::Pixels(p) => p.len(),
            Features::Values(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `start..end` as `f32` (borrowed when they already are); panics out of range.
    pub fn slice(&self, start: usize, end: usize) -> Cow<'_, [f32]> {
        match self {
            Features::Pixels(p) => {
                Cow::Owned(p[start..end].iter().map(|&b| pixel_value(b)).collect())
            }
            Features::Values(v) => Cow::Borrowed(&v[start..end]),
        }
    }

    /// Appends values `start..end` to `out` as `f32`; panics out of range.
    pub fn extend_f32(&self, start: usize, end: usize, out: &mut Vec<f32>) {
        match self {
            Features::Pixels(p) => out.extend(p[start..end].iter().map(|&b| pixel_value(b))),
            Features::Values(v) => out.extend_from_slice(&v[start..end]),
        }
    }

    /// Every value as `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        self.slice(0, self.len()).into_owned()
    }

    /// The values as a mutable `f32` vector, converting pixels first (tables are always `f32`).
    pub fn values_mut(&mut self) -> &mut Vec<f32> {
        if let Features::Pixels(p) = self {
            *self = Features::Values(p.iter().map(|&b| pixel_value(b)).collect());
        }
        match self {
            Features::Values(v) => v,
            Features::Pixels(_) => unreachable!("pixels were converted just above"),
        }
    }

    /// An empty store of the same kind with room for `capacity` values.
    pub(crate) fn empty_like(&self, capacity: usize) -> Features {
        match self {
            Features::Pixels(_) => Features::Pixels(Vec::with_capacity(capacity)),
            Features::Values(_) => Features::Values(Vec::with_capacity(capacity)),
        }
    }

    /// Appends values `start..end` of `other`, keeping this store's kind when both are pixels
    /// and turning it into `f32` values otherwise.
    pub(crate) fn extend_from(&mut self, other: &Features, start: usize, end: usize) {
        match (&mut *self, other) {
            (Features::Pixels(mine), Features::Pixels(theirs)) => {
                mine.extend_from_slice(&theirs[start..end]);
            }
            _ => other.extend_f32(start, end, self.values_mut()),
        }
    }
}

impl From<Vec<f32>> for Features {
    fn from(values: Vec<f32>) -> Self {
        Features::Values(values)
    }
}

impl From<Vec<u8>> for Features {
    fn from(pixels: Vec<u8>) -> Self {
        Features::Pixels(pixels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_read_as_their_value_over_255() {
        let f = Features::Pixels(vec![0, 51, 255]);
        assert_eq!(f.to_f32(), vec![0.0, 0.2, 1.0]);
        assert_eq!(&*f.slice(1, 3), &[0.2, 1.0]);
        let mut out = vec![7.0];
        f.extend_f32(0, 2, &mut out);
        assert_eq!(out, vec![7.0, 0.0, 0.2]);
    }

    #[test]
    fn mixing_kinds_gives_values() {
        let mut f = Features::Pixels(vec![255]);
        f.extend_from(&Features::Pixels(vec![0]), 0, 1);
        assert_eq!(f, Features::Pixels(vec![255, 0]));
        f.extend_from(&Features::Values(vec![0.5]), 0, 1);
        assert_eq!(f, Features::Values(vec![1.0, 0.0, 0.5]));
    }

    #[test]
    fn values_mut_converts_pixels_once() {
        let mut f = Features::Pixels(vec![255, 0]);
        f.values_mut()[1] = 0.5;
        assert_eq!(f, Features::Values(vec![1.0, 0.5]));
    }
}
