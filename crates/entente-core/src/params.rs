//! Named parameter sets: an ordered list of named tensors stored in one flat `f32` buffer.
//!
//! Everything that combines models (aggregators, update validation, later secure aggregation
//! and differential privacy) works on [`ParamSet::as_flat`] and never sees an ML framework type.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use safetensors::tensor::{Dtype, SafeTensors, View};

/// Safetensors metadata key under which entente records the tensor order.
const ORDER_KEY: &str = "entente.order";

/// Largest safetensors file read (16 GiB): four times the largest built-in model.
pub const MAX_FILE_BYTES: u64 = 16 << 30;
/// What [`MAX_FILE_BYTES`] bounds, for the error that refuses a larger file.
pub(crate) const MODEL_FILE: &str =
    "a model file (fixed: four times the largest built-in model, 2^30 parameters)";

/// Errors raised while building, reading or writing parameter sets.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// Two tensors in one set share a name.
    #[error("tensor name `{0}` appears twice; every tensor in a parameter set needs a unique name")]
    DuplicateName(String),
    /// A tensor's data length does not match the product of its shape.
    #[error(
        "tensor `{name}` has shape {shape:?} ({expected} values) but {actual} values were given"
    )]
    LengthMismatch {
        /// Tensor name.
        name: String,
        /// Declared shape.
        shape: Vec<usize>,
        /// Number of values the shape implies.
        expected: usize,
        /// Number of values supplied.
        actual: usize,
    },
    /// A flat buffer does not fit the layout it is paired with.
    #[error("flat buffer has {actual} values but the layout holds {expected}")]
    FlatLength {
        /// Values the layout expects.
        expected: usize,
        /// Values supplied.
        actual: usize,
    },
    /// A safetensors file holds a tensor that is not `f32`.
    #[error("tensor `{name}` is stored as {dtype:?}; entente reads only F32 tensors")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// The stored dtype.
        dtype: Dtype,
    },
    /// The bytes are not a valid safetensors file.
    #[error("not a valid safetensors file: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// A file to read is not a regular file, or is larger than any model file.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Name and shape of one tensor in a [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Unique name, for example `layers.0.weight`.
    pub name: String,
    /// Shape in row-major order.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Number of scalar values in the tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The ordered names and shapes of a parameter set, with each tensor's offset in the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    specs: Vec<TensorSpec>,
    offsets: Vec<usize>,
    total: usize,
    index: HashMap<String, usize>,
}

impl Layout {
    /// Builds a layout from tensor specs, rejecting duplicate names.
    pub fn new(specs: Vec<TensorSpec>) -> Result<Self, ParamError> {
        let mut offsets = Vec::with_capacity(specs.len());
        let mut index = HashMap::with_capacity(specs.len());
        let mut total = 0;
        for (i, spec) in specs.iter().enumerate() {
            if index.insert(spec.name.clone(), i).is_some() {
                return Err(ParamError::DuplicateName(spec.name.clone()));
            }
            offsets.push(total);
            total += spec.numel();
        }
        Ok(Self {
            specs,
            offsets,
            total,
            index,
        })
    }

    /// The tensor specs in order.
    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    /// Total number of scalar parameters.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Position of the tensor called `name`, if present.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Range of tensor `i` within the flat buffer.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = self.offsets[i];
        start..start + self.specs[i].numel()
    }
}

/// An ordered set of named `f32` tensors held in one contiguous buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSet {
    layout: Arc<Layout>,
    data: Vec<f32>,
}

impl ParamSet {
    /// Builds a parameter set from `(name, shape, values)` triples, in order.
    pub fn from_tensors<I>(tensors: I) -> Result<Self, ParamError>
    where
        I: IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    {
        let mut specs = Vec::new();
        let mut data = Vec::new();
        let tensors: Vec<_> = tensors.into_iter().collect();
        data.reserve_exact(tensors.iter().map(|(_, _, v)| v.len()).sum());
        for (name, shape, values) in tensors {
            let expected: usize = shape.iter().product();
            if expected != values.len() {
                return Err(ParamError::LengthMismatch {
                    name,
                    shape,
                    expected,
                    actual: values.len(),
                });
            }
            data.extend_from_slice(&values);
            specs.push(TensorSpec { name, shape });
        }
        Ok(Self {
            layout: Arc::new(Layout::new(specs)?),
            data,
        })
    }

    /// Pairs a layout with a flat buffer of matching length.
    pub fn from_flat(layout: Arc<Layout>, data: Vec<f32>) -> Result<Self, ParamError> {
        if data.len() != layout.total() {
            return Err(ParamError::FlatLength {
                expected: layout.total(),
                actual: data.len(),
            });
        }
        Ok(Self { layout, data })
    }

    /// Pairs a layout with a buffer the caller has already checked to have `layout.total()` values.
    pub(crate) fn from_checked_parts(layout: Arc<Layout>, data: Vec<f32>) -> Self {
        debug_assert_eq!(layout.total(), data.len());
        Self { layout, data }
    }

    /// A set with the same layout as `self` and every value zero.
    pub fn zeros_like(&self) -> Self {
        Self {
            layout: Arc::clone(&self.layout),
            data: vec![0.0; self.data.len()],
        }
    }

    /// The shared layout (names, shapes, offsets).
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// True when `other` has the same names and shapes in the same order.
    pub fn same_layout(&self, other: &ParamSet) -> bool {
        self.has_layout(&other.layout)
    }

    /// True when this set's names and shapes are `layout`'s, in the same order.
    pub fn has_layout(&self, layout: &Arc<Layout>) -> bool {
        Arc::ptr_eq(&self.layout, layout) || self.layout.specs == layout.specs
    }

    /// All values, tensor after tensor.
    pub fn as_flat(&self) -> &[f32] {
        &self.data
    }

    /// All values, mutable.
    pub fn as_flat_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the set and returns its flat buffer.
    pub fn into_flat(self) -> Vec<f32> {
        self.data
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.layout.specs.len()
    }

    /// True when the set holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.layout.specs.is_empty()
    }

    /// Total number of scalar values.
    pub fn num_values(&self) -> usize {
        self.data.len()
    }

    /// The values of the tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.layout
            .position(name)
            .map(|i| &self.data[self.layout.range(i)])
    }

    /// Iterates over `(spec, values)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&TensorSpec, &[f32])> {
        self.layout
            .specs
            .iter()
            .enumerate()
            .map(|(i, spec)| (spec, &self.data[self.layout.range(i)]))
    }

    /// Euclidean norm of `self - other` over all values (f64 accumulation).
    ///
    /// Both sets must share a layout; this is checked by the caller ([`crate::update`]).
    pub fn l2_distance(&self, other: &ParamSet) -> f64 {
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| {
                let d = f64::from(*a) - f64::from(*b);
                d * d
            })
            .sum::<f64>()
            .sqrt()
    }

    /// Serializes to the safetensors format (little-endian F32, names and shapes as given).
    /// The output is the only model-sized allocation: tensors are written from their values.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, ParamError> {
        let views = self.layout.specs.iter().enumerate().map(|(i, spec)| {
            let view = F32View {
                shape: &spec.shape,
                values: &self.data[self.layout.range(i)],
            };
            (spec.name.clone(), view)
        });
        let order: Vec<&str> = self.layout.specs.iter().map(|s| s.name.as_str()).collect();
        let metadata = HashMap::from([(
            ORDER_KEY.to_string(),
            serde_json::to_string(&order).unwrap_or_default(),
        )]);
        Ok(safetensors::serialize(views, Some(metadata))?)
    }

    /// Parses safetensors bytes. Tensors keep the order entente wrote them in, or else the order
    /// of their data in the file.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, ParamError> {
        let st = SafeTensors::deserialize(bytes)?;
        let (_, header) = SafeTensors::read_metadata(bytes)?;
        let order: Vec<String> = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(ORDER_KEY))
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default();
        let mut tensors: Vec<(usize, String, Vec<usize>, Vec<f32>)> = Vec::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(ParamError::UnsupportedDtype {
                    name,
                    dtype: view.dtype(),
                });
            }
            let offset = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
            let values = crate::f32_bytes::from_le_bytes(view.data());
            tensors.push((offset, name, view.shape().to_vec(), values));
        }
        tensors.sort_by_key(|t| {
            let rank = order.iter().position(|n| *n == t.1).unwrap_or(usize::MAX);
            (rank, t.0)
        });
        Self::from_tensors(tensors.into_iter().map(|(_, n, s, v)| (n, s, v)))
    }

    /// Writes the set to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), ParamError> {
        let bytes = self.to_safetensors()?;
        std::fs::write(path, bytes).map_err(|source| ParamError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a safetensors file of at most [`MAX_FILE_BYTES`].
    pub fn load(path: &Path) -> Result<Self, ParamError> {
        let bytes = crate::files::read_bounded(path, MAX_FILE_BYTES, MODEL_FILE)?;
        Self::from_safetensors(&bytes)
    }
}

/// One tensor's values as a safetensors view, without copying them on little-endian machines.
struct F32View<'a> {
    shape: &'a [usize],
    values: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        crate::f32_bytes::as_le_bytes(self.values)
    }

    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ParamSet {
        ParamSet::from_tensors([
            (
                "fc.weight".to_string(),
                vec![2, 3],
                vec![1., 2., 3., 4., 5., 6.],
            ),
            ("fc.bias".to_string(), vec![3], vec![-1., 0., 1.]),
        ])
        .unwrap()
    }

    #[test]
    fn flat_view_concatenates_in_order() {
        let p = sample();
        assert_eq!(p.as_flat(), &[1., 2., 3., 4., 5., 6., -1., 0., 1.]);
        assert_eq!(p.get("fc.bias"), Some(&[-1., 0., 1.][..]));
        assert_eq!(p.len(), 2);
        assert_eq!(p.num_values(), 9);
    }

    #[test]
    fn rejects_duplicates_and_bad_lengths() {
        let dup = ParamSet::from_tensors([
            ("a".to_string(), vec![1], vec![0.]),
            ("a".to_string(), vec![1], vec![0.]),
        ]);
        assert!(matches!(dup, Err(ParamError::DuplicateName(n)) if n == "a"));
        let bad = ParamSet::from_tensors([("a".to_string(), vec![2, 2], vec![0.; 3])]);
        assert!(matches!(
            bad,
            Err(ParamError::LengthMismatch {
                expected: 4,
                actual: 3,
                ..
            })
        ));
    }

    #[test]
    fn safetensors_round_trip_keeps_order_and_values() {
        let p = sample();
        let bytes = p.to_safetensors().unwrap();
        let q = ParamSet::from_safetensors(&bytes).unwrap();
        assert_eq!(p, q);
    }

    #[test]
    fn safetensors_rejects_garbage() {
        assert!(ParamSet::from_safetensors(b"not a file").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_model_file_must_be_a_regular_file_of_bounded_size() {
        let err = ParamSet::load(Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("a character device"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge.safetensors");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let err = ParamSet::load(&huge).unwrap_err();
        assert!(
            err.to_string().contains("more than 17179869184 bytes"),
            "{err}"
        );
    }
}
