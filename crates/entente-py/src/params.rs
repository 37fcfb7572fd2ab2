//! Model files: safetensors in PyTorch's layout, written and read by entente's own code, so
//! that the tensor order (which Flower-style clients rely on) is kept.

use std::path::PathBuf;

use entente_core::f32_bytes;
use entente_core::params::ParamSet;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Writes tensors (names, shapes and little-endian f32 bytes, in order) as a safetensors file.
#[pyfunction]
pub fn save_params(
    path: PathBuf,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    blobs: Vec<Vec<u8>>,
) -> PyResult<()> {
    if names.len() != shapes.len() || names.len() != blobs.len() {
        return Err(PyValueError::new_err(
            "names, shapes and values must have one entry per tensor",
        ));
    }
    let tensors = names
        .into_iter()
        .zip(shapes)
        .zip(blobs)
        .map(|((name, shape), bytes)| (name, shape, f32_bytes::from_le_bytes(&bytes)));
    let params =
        ParamSet::from_tensors(tensors).map_err(|e| PyValueError::new_err(e.to_string()))?;
    params
        .save(&path)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// One tensor as Python receives it: name, shape and little-endian f32 bytes.
type PyTensor = (String, Vec<usize>, Py<PyBytes>);

/// Reads a safetensors file of f32 tensors: `(name, shape, bytes)` for each, in the file's
/// order (entente's recorded order, else the order of the data in the file).
#[pyfunction]
pub fn load_params(py: Python<'_>, path: PathBuf) -> PyResult<Vec<PyTensor>> {
    let params = ParamSet::load(&path).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(params
        .iter()
        .map(|(spec, values)| {
            (
                spec.name.clone(),
                spec.shape.clone(),
                PyBytes::new(py, &f32_bytes::as_le_bytes(values)).unbind(),
            )
        })
        .collect())
}
