//! What the coordinator's integration tests share.

/// A three-site federation on the embedded UCI digits, three rounds, claims bounded at 100,000.
pub const MANIFEST: &str = r#"
[federation]
name = "library-run"
seed = 7

[data]
format = "csv"
path = "embedded:uci-digits"

[[sites]]
name = "site-a"

[[sites]]
name = "site-b"

[[sites]]
name = "site-c"

[model]
kind = "mlp"
hidden = [8]

[training]
rounds = 3
local_epochs = 1
batch_size = 16
learning_rate = 0.05
optimizer = "sgd"

[strategy]
kind = "fedavg"
max_examples = 100000

[selection]
fraction = 1.0
min_sites = 2
"#;
