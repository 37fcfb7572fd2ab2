//! The one bridge between burn modules and [`ParamSet`]: list names, read every tensor as
//! shape + `Vec<f32>`, and write a parameter set back into a module.
//!
//! Names follow the module's field paths (`layers.0.weight`, `conv1.bias`); enum variants are
//! left out of the path. Linear weights, which burn stores `[in, out]`, are transposed to
//! PyTorch's `[out, in]`, so a saved parameter set loads into the equivalent PyTorch module.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use entente_core::params::{ParamError, ParamSet};

/// Failure to move parameters between burn and a [`ParamSet`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The parameter set lacks a tensor the module has.
    #[error("parameter set has no tensor `{0}` that the model needs")]
    Missing(String),
    /// The parameter set's tensor has another shape than the module's.
    #[error("tensor `{name}` has shape {got:?}, the model expects {expected:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape in the parameter set.
        got: Vec<usize>,
        /// Shape the module expects (PyTorch layout).
        expected: Vec<usize>,
    },
    /// burn could not hand out a tensor's values as `f32`.
    #[error("tensor `{0}` could not be read as f32")]
    Read(String),
    /// Building the parameter set failed.
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// Tracks the dotted path of the parameter being visited and whether it is a linear weight.
#[derive(Default)]
struct PathTracker {
    stack: Vec<(String, bool)>,
}

impl PathTracker {
    fn enter(&mut self, name: &str, container: &str) {
        let is_enum = container.starts_with("Enum:");
        let is_linear_weight = container == "Struct:Linear" && name == "weight";
        self.stack.push((
            if is_enum {
                String::new()
            } else {
                name.to_string()
            },
            is_linear_weight,
        ));
    }

    fn exit(&mut self) {
        self.stack.pop();
    }

    fn name(&self) -> String {
        self.stack
            .iter()
            .filter(|(n, _)| !n.is_empty())
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }

    fn is_linear_weight(&self) -> bool {
        self.stack.last().is_some_and(|(_, w)| *w)
    }
}

/// Transposes a row-major `[rows, cols]` matrix.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

struct Exporter {
    path: PathTracker,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    error: Option<StoreError>,
}

impl ModuleVisitor for Exporter {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.path.name();
        let tensor = param.val();
        let mut shape = tensor.dims().to_vec();
        let Ok(mut values) = tensor.into_data().convert::<f32>().try_to_vec::<f32>() else {
            self.error.get_or_insert(StoreError::Read(name));
            return;
        };
        if D == 2 && self.path.is_linear_weight() {
            values = transpose(&values, shape[0], shape[1]);
            shape.swap(0, 1);
        }
        self.tensors.push((name, shape, values));
    }
}

/// Removes from `grads` the gradients of `module`'s tensors named in `frozen`, so that an
/// optimizer step leaves those tensors as they are.
pub(crate) fn drop_grads<M: Module>(module: &M, grads: &mut GradientsParams, frozen: &[String]) {
    struct Dropper<'a> {
        path: PathTracker,
        grads: &'a mut GradientsParams,
        frozen: &'a [String],
    }
    impl ModuleVisitor for Dropper<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }

        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }

        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.frozen.contains(&self.path.name()) {
                self.grads.remove::<D>(param.id);
            }
        }
    }
    if frozen.is_empty() {
        return;
    }
    module.visit(&mut Dropper {
        path: PathTracker::default(),
        grads,
        frozen,
    });
}

/// Reads every float parameter of `module` into a [`ParamSet`] (PyTorch layout).
pub fn export<M: Module>(module: &M) -> Result<ParamSet, StoreError> {
    let mut exporter = Exporter {
        path: PathTracker::default(),
        tensors: Vec::new(),
        error: None,
    };
    module.visit(&mut exporter);
    if let Some(e) = exporter.error {
        return Err(e);
    }
    Ok(ParamSet::from_tensors(exporter.tensors)?)
}

struct Importer<'a> {
    path: PathTracker,
    params: &'a ParamSet,
    error: Option<StoreError>,
}

impl Importer<'_> {
    /// Values for the current parameter in burn's layout, given burn's shape.
    fn values_for(&self, burn_shape: &[usize]) -> Result<Vec<f32>, StoreError> {
        let name = self.path.name();
        let linear = burn_shape.len() == 2 && self.path.is_linear_weight();
        let expected: Vec<usize> = if linear {
            vec![burn_shape[1], burn_shape[0]]
        } else {
            burn_shape.to_vec()
        };
        let i = self
            .params
            .layout()
            .position(&name)
            .ok_or_else(|| StoreError::Missing(name.clone()))?;
        let got = &self.params.layout().specs()[i].shape;
        if *got != expected {
            return Err(StoreError::Shape {
                name,
                got: got.clone(),
                expected,
            });
        }
        let values = &self.params.as_flat()[self.params.layout().range(i)];
        Ok(if linear {
            transpose(values, expected[0], expected[1])
        } else {
            values.to_vec()
        })
    }
}

impl ModuleMapper for Importer<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let shape = param.val().dims();
        match self.values_for(&shape) {
            Ok(values) => param.map(|tensor| {
                let device = tensor.device();
                let require_grad = tensor.is_require_grad();
                let fresh = Tensor::<D>::from_data(TensorData::new(values, shape), &device);
                if require_grad {
                    fresh.require_grad()
                } else {
                    fresh
                }
            }),
            Err(e) => {
                self.error.get_or_insert(e);
                param
            }
        }
    }
}

/// Writes `params` into `module`, checking that every tensor is present with the right shape.
pub fn import<M: Module>(module: M, params: &ParamSet) -> Result<M, StoreError> {
    let mut importer = Importer {
        path: PathTracker::default(),
        params,
        error: None,
    };
    let module = module.map(&mut importer);
    match importer.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelSpec, Net};
    use burn::tensor::Device;

    #[test]
    fn export_matches_spec_layout_and_round_trips() {
        let device = Device::flex();
        for spec in [
            ModelSpec::Mlp {
                input: 6,
                hidden: vec![4, 3],
                classes: 2,
            },
            ModelSpec::Cnn {
                channels: 1,
                height: 8,
                width: 8,
                classes: 3,
            },
        ] {
            let params = spec.init_params(7).unwrap();
            let net = import(Net::new(&spec, &device), &params).unwrap();
            let back = export(&net).unwrap();
            assert_eq!(back, params, "{spec:?}");
        }
    }

    #[test]
    fn linear_weight_is_stored_out_by_in() {
        let device = Device::flex();
        let spec = ModelSpec::Mlp {
            input: 3,
            hidden: vec![],
            classes: 2,
        };
        // PyTorch layout: weight[out][in]; with input e0, logits are the first column.
        let params = ParamSet::from_tensors([
            (
                "layers.0.weight".into(),
                vec![2, 3],
                vec![1., 2., 3., 4., 5., 6.],
            ),
            ("layers.0.bias".into(), vec![2], vec![0., 0.]),
        ])
        .unwrap();
        let net = import(Net::new(&spec, &device), &params).unwrap();
        let x = Tensor::<2>::from_data(TensorData::new(vec![1f32, 0., 0.], [1, 3]), &device);
        let y = net.forward(x).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(y, vec![1., 4.]);
    }

    #[test]
    fn import_names_missing_and_misshapen_tensors() {
        let device = Device::flex();
        let spec = ModelSpec::Mlp {
            input: 3,
            hidden: vec![],
            classes: 2,
        };
        let missing =
            ParamSet::from_tensors([("layers.0.weight".into(), vec![2, 3], vec![0.; 6])]).unwrap();
        let e = import(Net::new(&spec, &device), &missing).unwrap_err();
        assert!(
            matches!(e, StoreError::Missing(ref n) if n == "layers.0.bias"),
            "{e}"
        );
        let wrong = ParamSet::from_tensors([
            ("layers.0.weight".into(), vec![3, 2], vec![0.; 6]),
            ("layers.0.bias".into(), vec![2], vec![0.; 2]),
        ])
        .unwrap();
        let e = import(Net::new(&spec, &device), &wrong).unwrap_err();
        assert!(matches!(e, StoreError::Shape { ref name, .. } if name == "layers.0.weight"));
    }
}
