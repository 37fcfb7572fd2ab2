//! What a run looks like to people and to the tools they already use: TensorBoard event files
//! of its rounds ([`tensorboard`]).

pub mod tensorboard;
