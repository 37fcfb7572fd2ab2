//! The DP-SGD update on the flat parameter vector: SGD (optional momentum) or Adam, with the
//! semantics of the non-private trainer's burn optimizers (PyTorch's).

use entente_core::engine::LocalOptimizer;

/// PyTorch's Adam defaults, as the non-private trainer uses them.
const ADAM_BETA1: f32 = 0.9;
const ADAM_BETA2: f32 = 0.999;
const ADAM_EPSILON: f32 = 1e-8;

/// SGD (optional momentum, PyTorch semantics without dampening) or Adam on flat values.
pub(super) enum Optimizer {
    Sgd {
        momentum: f32,
        velocity: Option<Vec<f32>>,
    },
    Adam {
        m: Vec<f32>,
        v: Vec<f32>,
        t: i32,
    },
}

impl Optimizer {
    pub(super) fn new(kind: LocalOptimizer, len: usize) -> Self {
        match kind {
            LocalOptimizer::Sgd { momentum } => Optimizer::Sgd {
                momentum: momentum as f32,
                velocity: None,
            },
            LocalOptimizer::Adam => Optimizer::Adam {
                m: vec![0.0; len],
                v: vec![0.0; len],
                t: 0,
            },
        }
    }

    pub(super) fn step(&mut self, lr: f32, params: &mut [f32], grad: &[f32]) {
        match self {
            Optimizer::Sgd { momentum, velocity } if *momentum > 0.0 => {
                let buf = match velocity {
                    Some(buf) => {
                        for (b, g) in buf.iter_mut().zip(grad) {
                            *b = *momentum * *b + g;
                        }
                        buf
                    }
                    None => velocity.insert(grad.to_vec()),
                };
                for (w, b) in params.iter_mut().zip(buf.iter()) {
                    *w -= lr * b;
                }
            }
            Optimizer::Sgd { .. } => {
                for (w, g) in params.iter_mut().zip(grad) {
                    *w -= lr * g;
                }
            }
            Optimizer::Adam { m, v, t } => {
                *t += 1;
                let bc1 = 1.0 - ADAM_BETA1.powi(*t);
                let bc2 = 1.0 - ADAM_BETA2.powi(*t);
                for (((w, g), m), v) in params.iter_mut().zip(grad).zip(m).zip(v) {
                    *m = ADAM_BETA1 * *m + (1.0 - ADAM_BETA1) * g;
                    *v = ADAM_BETA2 * *v + (1.0 - ADAM_BETA2) * g * g;
                    *w -= lr * (*m / bc1) / ((*v / bc2).sqrt() + ADAM_EPSILON);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_matches_pytorch_semantics() {
        let mut w = vec![1.0f32];
        let mut sgd = Optimizer::new(LocalOptimizer::Sgd { momentum: 0.5 }, 1);
        sgd.step(0.1, &mut w, &[1.0]); // buf 1
        sgd.step(0.1, &mut w, &[1.0]); // buf 1.5
        assert!((w[0] - (1.0 - 0.1 - 0.15)).abs() < 1e-6);
        let mut w = vec![0.0f32];
        let mut adam = Optimizer::new(LocalOptimizer::Adam, 1);
        adam.step(0.01, &mut w, &[3.0]); // first step moves by lr (sign of the gradient)
        assert!((w[0] + 0.01).abs() < 1e-6, "{}", w[0]);
    }
}
