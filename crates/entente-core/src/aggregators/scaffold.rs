//! SCAFFOLD (Karimireddy et al., ICML 2020): FedAvg with control variates that correct each
//! site's drift toward its own optimum.
//!
//! The server keeps a control variate `c` in the model's layout. Every task carries the model
//! `x` followed by `c` (each model tensor `NAME` again as `scaffold.control.NAME`, see
//! [`with_control`]). A site trains with its gradient corrected by `c - c_i` (its own control
//! variate `c_i`, kept at the site), reaches `y_i` after `K` steps of learning rate `eta`, sets
//! `c_i+ = c_i - c + (x - y_i) / (K * eta)` and answers, in the task's layout, `y_i` and
//! `c + (c_i+ - c_i) = (x - y_i) / (K * eta)`: the server control variate as this site would
//! move it. The server then takes
//!
//! - `x <- x + eta_g * (mean(y_i) - x)`, the mean weighted by example counts as in FedAvg
//!   (with `eta_g = 1`, and `c = c_i = 0`, this is FedAvg);
//! - `c <- c + (1 / N) * sum_i (answer_i - c)`, over the `|S|` sites that answered, `N` the
//!   number of sites in the federation: the paper's `c + |S| / N * mean(delta c_i)`.
//!
//! An update's L2 distance from the task (the manifest's `max_update_norm`) therefore measures
//! both the model's step and the control variate's.

use std::sync::Arc;

use crate::params::{Layout, ParamSet, TensorSpec};
use crate::update::ValidUpdate;

use super::fedavg::accumulate;
use super::{AggregateError, Aggregator, ensure, pack_state, unpack_state};

/// Prefix of the control-variate tensors in a SCAFFOLD task or reply.
pub const CONTROL_PREFIX: &str = "scaffold.control.";

/// The layout of a SCAFFOLD task or reply: the model's tensors, then a control tensor of the
/// same shape for each.
pub fn task_layout(model: &Layout) -> Result<Layout, crate::params::ParamError> {
    let mut specs = model.specs().to_vec();
    specs.extend(model.specs().iter().map(|s| TensorSpec {
        name: format!("{CONTROL_PREFIX}{}", s.name),
        shape: s.shape.clone(),
    }));
    Layout::new(specs)
}

/// `model` followed by `control` (in the model's layout), as a SCAFFOLD task carries them.
pub fn with_control(model: &ParamSet, control: &[f32]) -> Result<ParamSet, AggregateError> {
    let invalid = |reason: String| AggregateError::InvalidConfig {
        rule: "scaffold",
        reason,
    };
    if control.len() != model.num_values() {
        return Err(invalid(format!(
            "the control variate has {} values and the model {}",
            control.len(),
            model.num_values()
        )));
    }
    let layout = task_layout(model.layout()).map_err(|e| invalid(e.to_string()))?;
    let mut values = Vec::with_capacity(2 * model.num_values());
    values.extend_from_slice(model.as_flat());
    values.extend_from_slice(control);
    ParamSet::from_flat(Arc::new(layout), values).map_err(|e| invalid(e.to_string()))
}

/// Splits a SCAFFOLD task or reply into the model and the control variate, each in the
/// model's layout; what is wrong when `combined` is not laid out as [`task_layout`] says.
pub fn split_control(combined: &ParamSet) -> Result<(ParamSet, ParamSet), String> {
    let specs = combined.layout().specs();
    let half = specs.len() / 2;
    let (model, control) = specs.split_at(half);
    let paired = specs.len().is_multiple_of(2)
        && model.iter().zip(control).all(|(m, c)| {
            c.shape == m.shape
                && c.name.strip_prefix(CONTROL_PREFIX) == Some(m.name.as_str())
                && !m.name.starts_with(CONTROL_PREFIX)
        });
    if !paired || half == 0 {
        return Err(format!(
            "SCAFFOLD expects the model's tensors followed by one `{CONTROL_PREFIX}NAME` tensor \
             of the same shape for each; got {} tensors that are not laid out so",
            specs.len()
        ));
    }
    let layout = Layout::new(model.to_vec()).map_err(|e| e.to_string())?;
    let d = layout.total();
    let layout = Arc::new(layout);
    let flat = combined.as_flat();
    let part = |values: &[f32]| {
        ParamSet::from_flat(Arc::clone(&layout), values.to_vec()).map_err(|e| e.to_string())
    };
    Ok((part(&flat[..d])?, part(&flat[d..])?))
}

/// The SCAFFOLD server: FedAvg of the models with a server step, and the control variate.
#[derive(Debug)]
pub struct Scaffold {
    server_learning_rate: f64,
    population: usize,
    /// Server control variate `c`, in the model's layout; zero until the first round ends.
    control: Option<ParamSet>,
    round: Option<Round>,
}

/// State of the round in progress.
#[derive(Debug)]
struct Round {
    /// The global model the round started from.
    global: ParamSet,
    /// What the sites were sent: the model and the control variate (or why that could not be
    /// built: a model with a tensor already named `scaffold.control.*`).
    task: Result<Arc<ParamSet>, AggregateError>,
    /// Sum of `examples * y_i`.
    model_sum: Vec<f64>,
    /// Sum of the example counts.
    weight: f64,
    /// Sum of `answer_i - c`.
    control_sum: Vec<f64>,
}

impl Scaffold {
    /// A SCAFFOLD server over a federation of `population` sites; needs a finite learning
    /// rate > 0 and at least one site.
    pub fn new(server_learning_rate: f64, population: usize) -> Result<Self, AggregateError> {
        ensure(
            server_learning_rate.is_finite() && server_learning_rate > 0.0,
            "scaffold",
            || format!("server_learning_rate must be finite and > 0, got {server_learning_rate}"),
        )?;
        ensure(population > 0, "scaffold", || {
            "the federation must have at least one site".into()
        })?;
        Ok(Self {
            server_learning_rate,
            population,
            control: None,
            round: None,
        })
    }
}

impl Aggregator for Scaffold {
    fn name(&self) -> &'static str {
        "scaffold"
    }

    fn begin(&mut self, global: &ParamSet) {
        let control = match &self.control {
            Some(c) if c.same_layout(global) => c.clone(),
            _ => global.zeros_like(),
        };
        let task = with_control(global, control.as_flat()).map(Arc::new);
        self.control = Some(control);
        self.round = Some(Round {
            global: global.clone(),
            task,
            model_sum: vec![0.0; global.num_values()],
            weight: 0.0,
            control_sum: vec![0.0; global.num_values()],
        });
    }

    fn task_model(&self, global: &Arc<ParamSet>) -> Arc<ParamSet> {
        match &self.round {
            Some(Round { task: Ok(task), .. }) => Arc::clone(task),
            _ => Arc::clone(global),
        }
    }

    /// Adds one site's answer, in the task's layout (model, then control variate).
    fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError> {
        let round = self.round.as_mut().ok_or(AggregateError::NotStarted)?;
        let control = self.control.as_ref().ok_or(AggregateError::NotStarted)?;
        let task = round.task.as_ref().map_err(Clone::clone)?;
        if !update.params.same_layout(task) {
            return Err(AggregateError::LayoutMismatch(update.site));
        }
        if update.num_examples == 0 {
            return Ok(());
        }
        let (model, answer) = update.params.as_flat().split_at(round.model_sum.len());
        let weight = update.num_examples as f64;
        accumulate(&mut round.model_sum, model, weight);
        round.weight += weight;
        for ((sum, &a), &c) in round
            .control_sum
            .iter_mut()
            .zip(answer)
            .zip(control.as_flat())
        {
            *sum += f64::from(a) - f64::from(c);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<ParamSet, AggregateError> {
        let round = self.round.take().ok_or(AggregateError::NotStarted)?;
        let control = self.control.as_mut().ok_or(AggregateError::NotStarted)?;
        round.task?;
        if round.weight <= 0.0 {
            return Err(AggregateError::NoUpdates);
        }
        let mut next = round.global;
        let lr = self.server_learning_rate;
        for (x, sum) in next.as_flat_mut().iter_mut().zip(&round.model_sum) {
            let x64 = f64::from(*x);
            *x = (x64 + lr * (sum / round.weight - x64)) as f32;
        }
        let share = 1.0 / self.population as f64;
        for (c, sum) in control.as_flat_mut().iter_mut().zip(&round.control_sum) {
            *c = (f64::from(*c) + share * sum) as f32;
        }
        Ok(next)
    }

    fn state(&self) -> Option<ParamSet> {
        pack_state(&[("control", self.control.as_ref()?)])
    }

    fn restore(&mut self, state: &ParamSet) -> Result<(), AggregateError> {
        self.control = Some(unpack_state(self.name(), state, "control")?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::global;
    use super::*;

    /// An answer in `task`'s layout: the model `y`, then the control proposal `p`.
    fn answer(task: &ParamSet, site: &str, examples: u64, y: &[f32], p: &[f32]) -> ValidUpdate {
        let values = [y, p].concat();
        ValidUpdate {
            site: site.into(),
            num_examples: examples,
            params: ParamSet::from_flat(Arc::clone(task.layout()), values).unwrap(),
            update_norm: 0.0,
            train_loss: 0.0,
        }
    }

    fn round(agg: &mut Scaffold, g: &ParamSet, answers: &[(u64, [f32; 2], [f32; 2])]) -> ParamSet {
        agg.begin(g);
        let task = agg.task_model(&Arc::new(g.clone()));
        for (i, (n, y, p)) in answers.iter().enumerate() {
            agg.add(answer(&task, &format!("s{i}"), *n, y, p)).unwrap();
        }
        agg.finish().unwrap()
    }

    /// x = (1, 2), c = 0, four sites in the federation, two answer: site A (1 example)
    /// y = (3, 2), proposal (1, 1); site B (3 examples) y = (1, 6), proposal (3, -1).
    /// Models: (1*3 + 3*1, 1*2 + 3*6) / 4 = (1.5, 5). Control: 0 + 1/4 * ((1 + 3), (1 - 1))
    /// = (1, 0). With eta_g = 0.5 the model moves half way: (1.25, 3.5).
    #[test]
    fn one_round_equals_the_hand_computed_update() {
        let g = global(&[1.0, 2.0]);
        let answers = [(1, [3.0, 2.0], [1.0, 1.0]), (3, [1.0, 6.0], [3.0, -1.0])];
        let mut full = Scaffold::new(1.0, 4).unwrap();
        assert_eq!(round(&mut full, &g, &answers).as_flat(), &[1.5, 5.0]);
        let state = full.state().unwrap();
        assert_eq!(state.as_flat(), &[1.0, 0.0]);
        let mut half = Scaffold::new(0.5, 4).unwrap();
        assert_eq!(round(&mut half, &g, &answers).as_flat(), &[1.25, 3.5]);

        // The next task carries the new control variate after the model; an answer equal to
        // the control variate leaves it where it is.
        let next = global(&[1.5, 5.0]);
        full.begin(&next);
        let task = full.task_model(&Arc::new(next.clone()));
        assert_eq!(task.as_flat(), &[1.5, 5.0, 1.0, 0.0]);
        assert_eq!(task.layout().specs()[1].name, "scaffold.control.w");
        full.add(answer(&task, "a", 2, &[1.5, 5.0], &[1.0, 0.0]))
            .unwrap();
        assert_eq!(full.finish().unwrap().as_flat(), &[1.5, 5.0]);
        assert_eq!(full.state().unwrap().as_flat(), &[1.0, 0.0]);
    }

    #[test]
    fn with_zero_answers_it_is_fedavg() {
        let g = global(&[0.0, 0.0]);
        let mut agg = Scaffold::new(1.0, 2).unwrap();
        let out = round(
            &mut agg,
            &g,
            &[(1, [1.0, 2.0], [0.0; 2]), (3, [3.0, 4.0], [0.0; 2])],
        );
        assert_eq!(out.as_flat(), &[2.5, 3.5]);
        assert_eq!(agg.state().unwrap().as_flat(), &[0.0, 0.0]);
    }

    #[test]
    fn saved_control_variate_resumes_exactly() {
        let g = global(&[1.0, 2.0]);
        let first = [(1, [3.0, 2.0], [1.0, 1.0]), (3, [1.0, 6.0], [3.0, -1.0])];
        let second = [(2, [0.5, 1.0], [2.0, 2.0])];
        let mut running = Scaffold::new(1.0, 4).unwrap();
        let next = round(&mut running, &g, &first);
        let mut fresh = Scaffold::new(1.0, 4).unwrap();
        fresh.restore(&running.state().unwrap()).unwrap();
        assert_eq!(
            round(&mut fresh, &next, &second),
            round(&mut running, &next, &second)
        );
        assert_eq!(fresh.state(), running.state());
    }

    #[test]
    fn an_answer_in_the_model_layout_is_refused() {
        let g = global(&[1.0, 2.0]);
        let mut agg = Scaffold::new(1.0, 2).unwrap();
        agg.begin(&g);
        let plain = ValidUpdate {
            site: "a".into(),
            num_examples: 1,
            params: g.clone(),
            update_norm: 0.0,
            train_loss: 0.0,
        };
        assert_eq!(
            agg.add(plain),
            Err(AggregateError::LayoutMismatch("a".into()))
        );
    }

    #[test]
    fn split_undoes_with_control_and_refuses_other_layouts() {
        let g = global(&[1.0, 2.0, 3.0]);
        let task = with_control(&g, &[4.0, 5.0, 6.0]).unwrap();
        let (model, control) = split_control(&task).unwrap();
        assert_eq!(model, g);
        assert_eq!(control.as_flat(), &[4.0, 5.0, 6.0]);
        let err = split_control(&g).unwrap_err();
        assert!(err.contains("scaffold.control.NAME"), "{err}");
        assert!(with_control(&g, &[1.0]).is_err());
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Scaffold::new(0.0, 3).is_err());
        assert!(Scaffold::new(f64::NAN, 3).is_err());
        assert!(Scaffold::new(1.0, 0).is_err());
    }
}
