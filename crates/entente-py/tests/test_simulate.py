"""entente.simulate with Python clients: PyTorch, Keras, Flower and entente's own trainer at
the sites of one federation, in this process.

Every site holds its own share of the UCI digits (``helpers.write_federation``); the model is
an external MLP 64-32-10. Rounds are few and short: each simulation takes a second or two.
"""

from __future__ import annotations

import functools
import json
import math

import helpers
import numpy as np
import pytest

import entente

pytest.importorskip("torch")

#: Final accuracy on the sites' own test splits a working run clears with a wide margin (it
#: reaches about 0.9 after 4 rounds; the initial model is at chance, about 0.1).
LEARNED = 0.75


def rounds_of(result: entente.SimulationResult) -> list[dict]:
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def own_test_accuracy(folder, params) -> float:
    """Accuracy of ``params`` over the union of the sites' own test splits, in numpy."""
    parts = [helpers.site_data(folder, site) for site in helpers.SITES]
    x = np.concatenate([p[2] for p in parts])
    y = np.concatenate([p[3] for p in parts])
    return helpers.accuracy(params, x, y)


def torch_clients(folder):
    return lambda site: helpers.TorchClient(folder, site)


def test_an_out_folder_that_holds_files_is_written_over_only_with_overwrite(federation, tmp_path):
    manifest = federation(rounds=1)
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("an earlier run's notes")
    with pytest.raises(ValueError, match=r"notes\.txt.*overwrite=True"):
        entente.simulate(manifest, torch_clients(tmp_path), out=out, quiet=True)
    assert (out / "notes.txt").read_text() == "an earlier run's notes"
    assert not (out / "summary.json").exists()
    result = entente.simulate(
        manifest, torch_clients(tmp_path), out=out, overwrite=True, quiet=True
    )
    assert result.summary["rounds"] == 1


def test_same_seed_same_model_and_it_learns(federation, tmp_path):
    manifest = federation(rounds=4)
    first = entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "one", quiet=True)
    second = entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "two", quiet=True)

    one, two = first.load_model(), second.load_model()
    assert list(one) == list(helpers.LAYOUT)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    assert first.model_path.read_bytes() == second.model_path.read_bytes()

    # It learns: the initial model is at chance on the sites' own test splits, the final one
    # well above it, whether entente's federated evaluation or numpy reports it.
    initial = own_test_accuracy(tmp_path, entente.load_params(tmp_path / "init.safetensors"))
    assert initial < 0.3
    summary = first.summary
    assert summary["rounds"] == 4
    assert summary["federated_site_accuracy"] > LEARNED
    assert abs(own_test_accuracy(tmp_path, one) - summary["federated_site_accuracy"]) < 0.02
    records = rounds_of(first)
    assert [r["round"] for r in records] == [1, 2, 3, 4]
    assert all(r["accepted"] == list(helpers.SITES) and r["excluded"] == [] for r in records)
    assert records[-1]["federated"]["accuracy"] == pytest.approx(summary["federated_site_accuracy"])
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert [s["examples"] for s in summary["sites"]] == [504, 504, 504]


def test_torch_keras_and_entente_trainer_under_secure_aggregation(federation, tmp_path):
    pytest.importorskip("keras")
    manifest = federation(rounds=4, secure=True)
    made = {}

    def client_fn(site):
        kind = {"site-a": "torch", "site-b": "keras"}.get(site)
        made[site] = None if kind is None else helpers.make_client(kind, tmp_path, site)
        return made[site]

    result = entente.simulate(manifest, client_fn, out=tmp_path / "run", quiet=True)
    assert isinstance(made["site-a"], helpers.TorchClient)
    assert isinstance(made["site-b"], helpers.KerasClient)
    assert made["site-c"] is None
    assert made["site-a"].rounds == [1, 2, 3, 4]

    records = rounds_of(result)
    assert len(records) == 4
    for record in records:
        assert record["secure_aggregation"] == "secagg"
        assert record["accepted"] == list(helpers.SITES)
        assert record["excluded"] == []
    assert result.summary["federated_site_accuracy"] > LEARNED
    model = result.load_model()
    assert {n: v.shape for n, v in model.items()} == helpers.LAYOUT
    assert own_test_accuracy(tmp_path, model) > LEARNED


def test_an_exception_in_fit_fails_only_that_sites_round(federation, tmp_path):
    manifest = federation(rounds=3, min_sites=2)
    clients = {}

    def client_fn(site):
        clients[site] = (
            helpers.RaisingClient(tmp_path, site, fail_round=2)
            if site == "site-b"
            else helpers.TorchClient(tmp_path, site)
        )
        return clients[site]

    result = entente.simulate(manifest, client_fn, out=tmp_path / "run", quiet=True)
    assert result.summary["rounds"] == 3
    first, second, third = rounds_of(result)
    assert first["accepted"] == list(helpers.SITES)
    assert third["accepted"] == list(helpers.SITES)
    assert second["accepted"] == ["site-a", "site-c"]
    (excluded,) = second["excluded"]
    assert excluded["site"] == "site-b"
    # A client that raises is the site's own failure, not a refusal or a bad reply.
    assert excluded["kind"] == "internal", excluded
    assert "boom at round 2" in excluded["reason"]
    assert "ValueError" in excluded["reason"]
    # The failing client was asked every round, and tried again after its failure.
    assert clients["site-b"].rounds == [1, 2, 3]


def _wrong_shape(params):
    params["layers.0.weight"] = params["layers.0.weight"][:, :-1]
    return params


def _nan(params):
    params["layers.1.bias"][3] = np.nan
    return params


def _missing(params):
    del params["layers.1.weight"]
    return params


def _unknown(params):
    params["layers.2.weight"] = np.zeros((10, 10), dtype=np.float32)
    return params


def _integer(params):
    params["layers.0.bias"] = np.round(params["layers.0.bias"]).astype(np.int64)
    return params


@pytest.mark.parametrize(
    ("spoil", "tensor", "words"),
    [
        (_wrong_shape, "layers.0.weight", "shape"),
        (_nan, "layers.1.bias", "NaN"),
        (_missing, "layers.1.weight", "no tensor"),
        (_unknown, "layers.2.weight", "does not have"),
        (_integer, "layers.0.bias", "dtype"),
    ],
    ids=["wrong-shape", "nan", "missing", "unknown", "integer-dtype"],
)
def test_a_bad_model_from_fit_is_refused_at_the_site(federation, tmp_path, spoil, tensor, words):
    manifest = federation(rounds=1, min_sites=2)

    def client_fn(site):
        if site == "site-c":
            return helpers.BadReturnClient(tmp_path, site, spoil)
        return helpers.TorchClient(tmp_path, site)

    result = entente.simulate(manifest, client_fn, out=tmp_path / "run", quiet=True)
    (record,) = rounds_of(result)
    assert record["accepted"] == ["site-a", "site-b"]
    (excluded,) = record["excluded"]
    assert excluded["site"] == "site-c"
    assert excluded["kind"] == "malformed_reply", excluded
    assert f"`{tensor}`" in excluded["reason"]
    assert words in excluded["reason"]
    # The round went on with the other two: the model moved.
    init = entente.load_params(tmp_path / "init.safetensors")
    model = result.load_model()
    assert not np.array_equal(model["layers.0.weight"], init["layers.0.weight"])
    assert all(np.isfinite(v).all() for v in model.values())


def test_a_flower_numpy_client_works_unchanged(federation, tmp_path):
    flwr = pytest.importorskip("flwr")
    manifest = federation(rounds=3)
    clients = {}

    def client_fn(site):
        clients[site] = (
            helpers.flower_client(tmp_path, site)
            if site != "site-c"
            else helpers.TorchClient(tmp_path, site)
        )
        return clients[site]

    result = entente.simulate(manifest, client_fn, out=tmp_path / "run", quiet=True)
    assert isinstance(clients["site-a"], flwr.client.NumPyClient)
    assert not isinstance(clients["site-a"], entente.Client)
    # fit every round, evaluate (federated evaluation) after each.
    assert clients["site-a"].calls.count("fit") == 3
    assert clients["site-a"].calls.count("evaluate") >= 3
    records = rounds_of(result)
    assert all(r["accepted"] == list(helpers.SITES) for r in records)
    assert result.summary["federated_site_accuracy"] > LEARNED


class StateDictClient(helpers.TorchClient):
    """Returns the module's state dict itself: torch tensors, not numpy arrays."""

    def fit(self, params, config):
        _, examples, metrics = super().fit(params, config)
        return dict(self.model.state_dict()), examples, metrics


class EvaluateFails(helpers.TorchClient):
    def evaluate(self, params, config):
        raise RuntimeError("no test split here")


def test_fit_may_return_torch_tensors(federation, tmp_path):
    manifest = federation(rounds=2)
    plain = entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "a", quiet=True)
    tensors = entente.simulate(
        manifest, lambda site: StateDictClient(tmp_path, site), out=tmp_path / "b", quiet=True
    )
    assert all(r["accepted"] == list(helpers.SITES) for r in rounds_of(tensors))
    assert plain.model_path.read_bytes() == tensors.model_path.read_bytes()


def test_a_failing_evaluate_leaves_training_alone(federation, tmp_path):
    manifest = federation(rounds=2)

    def client_fn(site):
        cls = EvaluateFails if site == "site-c" else helpers.TorchClient
        return cls(tmp_path, site)

    result = entente.simulate(manifest, client_fn, out=tmp_path / "run", quiet=True)
    assert all(r["accepted"] == list(helpers.SITES) for r in rounds_of(result))
    per_site = {s["site"]: s["federated_own_test_accuracy"] for s in result.summary["sites"]}
    assert per_site["site-c"] is None
    assert per_site["site-a"] > LEARNED - 0.1


def test_save_and_load_params_keep_order_and_values(tmp_path):
    params = helpers.init_params()
    # Not the alphabetical order: safetensors' own writers sort the names.
    reordered = {name: params[name] for name in reversed(params)}
    entente.save_params(reordered, tmp_path / "m.safetensors")
    loaded = entente.load_params(tmp_path / "m.safetensors")
    assert list(loaded) == list(reordered)
    for name, value in reordered.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], value)


def test_missing_manifest_is_a_value_error_naming_the_file(tmp_path):
    missing = tmp_path / "no-such-federation.toml"
    with pytest.raises(ValueError, match="no-such-federation.toml"):
        entente.simulate(missing, lambda site: None, out=tmp_path / "run", quiet=True)
    with pytest.raises(ValueError, match="no-such-federation.toml"):
        entente.join(missing, coordinator="https://127.0.0.1:1", site="site-a")


def test_an_unknown_model_kind_is_a_value_error_naming_the_key(federation, tmp_path):
    manifest = federation()
    text = manifest.read_text().replace('kind = "external"', 'kind = "transformer"')
    manifest.write_text(text.replace('init = "init.safetensors"\n', ""))
    with pytest.raises(ValueError, match="model.kind"):
        entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "run", quiet=True)


def test_argument_errors(federation, tmp_path):
    manifest = federation()
    with pytest.raises(ValueError, match="rounds"):
        entente.simulate(manifest, lambda site: None, rounds=0, quiet=True)
    with pytest.raises(ValueError, match="data="):
        entente.join(
            manifest,
            coordinator="https://127.0.0.1:1",
            site="site-a",
            client=helpers.BlockingClient(),
            data=tmp_path / "site-a.csv",
        )
    with pytest.raises(ValueError, match="site="):
        entente.join(manifest, coordinator="https://127.0.0.1:1")


def test_an_error_in_client_fn_propagates(federation, tmp_path):
    manifest = federation()

    def client_fn(site):
        raise LookupError(f"no client for {site}")

    with pytest.raises(LookupError, match="no client for site-a"):
        entente.simulate(manifest, client_fn, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_a_site_without_data_for_ententes_trainer_is_an_entente_error(federation, tmp_path):
    manifest = federation()
    (tmp_path / "site-c.csv").unlink()
    with pytest.raises(entente.EntenteError, match="site-c"):
        entente.simulate(
            manifest,
            lambda site: None if site == "site-c" else helpers.TorchClient(tmp_path, site),
            out=tmp_path / "run",
            quiet=True,
        )


def test_no_nan_in_the_summary_when_there_is_no_central_test_set(federation, tmp_path):
    manifest = federation(rounds=1)
    result = entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "run", quiet=True)
    (record,) = rounds_of(result)
    assert record["test"] is None
    assert result.summary["federated_accuracy"] is None
    assert math.isfinite(result.summary["federated_site_accuracy"])


@pytest.mark.parametrize(
    "strategy",
    [
        'kind = "fedavgm"\nserver_learning_rate = 1.0\nserver_momentum = 0.5',
        'kind = "fedadam"\nserver_learning_rate = 0.01',
        'kind = "fedyogi"\nserver_learning_rate = 0.01',
        'kind = "fedadagrad"\nserver_learning_rate = 0.3',
        'kind = "median"',
        'kind = "trimmed_mean"\ntrim_fraction = 0.2',
    ],
    ids=lambda s: s.split('"')[1],
)
def test_every_strategy_aggregates_an_external_model(federation, tmp_path, strategy):
    manifest = federation(rounds=3, strategy=strategy)
    result = entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "run", quiet=True)
    records = rounds_of(result)
    assert [r["accepted"] for r in records] == [list(helpers.SITES)] * 3
    init = entente.load_params(tmp_path / "init.safetensors")
    model = result.load_model()
    assert list(model) == list(init)
    assert any(not np.array_equal(model[n], init[n]) for n in init)
    assert all(np.isfinite(v).all() for v in model.values())
    # Each rule moves the model towards the sites' (they all learn the same digits).
    assert own_test_accuracy(tmp_path, model) > own_test_accuracy(tmp_path, init) + 0.2


@pytest.mark.parametrize("mechanism", ["client", "distributed"])
def test_client_level_dp_covers_an_external_model(federation, tmp_path, mechanism):
    privacy = (
        f'\n[privacy]\nmechanism = "{mechanism}"\nclip = 1.0\nnoise_multiplier = 0.5\n'
        'epsilon_budget = 1000.0\nledger = "ledger"\n'
    )
    # Distributed DP needs secure aggregation, whose range must hold the noisy coordinates.
    secure = mechanism == "distributed"
    manifest = federation(rounds=2, secure=secure, extra=privacy)
    if secure:
        text = manifest.read_text().replace("clip = 1.0\n\n[privacy]", "clip = 4.0\n\n[privacy]")
        manifest.write_text(
            text.replace(
                "[secure_aggregation]\nthreshold = 0.67\nclip = 1.0",
                "[secure_aggregation]\nthreshold = 0.67\nclip = 4.0",
            )
        )
    result = entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "run", quiet=True)
    records = rounds_of(result)
    assert [r["accepted"] for r in records] == [list(helpers.SITES)] * 2
    # Under a privacy budget no site evaluates a model the coordinator chose.
    assert all(r["federated"] is None for r in records)
    ledgers = sorted((tmp_path / "ledger").glob("*.json"))
    assert [p.name.split("--")[0] for p in ledgers] == list(helpers.SITES), ledgers
    # Every site's ledger holds the run's charge.
    for path in ledgers:
        assert "noise_multiplier" in path.read_text(), path.read_text()


def test_dp_sgd_is_refused_for_a_sites_own_training_loop(federation, tmp_path):
    privacy = (
        '\n[privacy]\nmechanism = "dp-sgd"\nclip = 1.0\nnoise_multiplier = 1.0\n'
        'epsilon_budget = 10.0\nledger = "ledger"\n'
    )
    manifest = federation(rounds=1, extra=privacy)
    with pytest.raises(entente.EntenteError, match="dp-sgd"):
        entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "run", quiet=True)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_processes_give_the_same_model(federation, tmp_path, start_method):
    manifest = federation(rounds=2)
    inline = entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "a", quiet=True)
    # A picklable client_fn, as spawned workers need.
    client_fn = functools.partial(helpers.TorchClient, tmp_path)
    pooled = entente.simulate(
        manifest,
        client_fn,
        out=tmp_path / "b",
        quiet=True,
        processes=2,
        start_method=start_method,
    )
    assert inline.model_path.read_bytes() == pooled.model_path.read_bytes()
    with pytest.raises(ValueError, match="processes"):
        entente.simulate(manifest, client_fn, quiet=True, processes=0)


def test_a_sites_client_keeps_its_state_in_worker_processes(federation, tmp_path):
    manifest = federation(rounds=3)
    # Three sites on two workers: at least one is bound to a worker that did not build it.
    client_fn = functools.partial(helpers.CountingClient, tmp_path)
    result = entente.simulate(manifest, client_fn, out=tmp_path / "run", quiet=True, processes=2)
    records = rounds_of(result)
    assert len(records) == 3
    for number, record in enumerate(records, start=1):
        # Each site's loss is the number of fits its client has answered: one object per site.
        assert record["accepted"] == list(helpers.SITES), record
        assert record["accepted_losses"] == [float(number)] * 3, record


def test_a_closure_cannot_go_to_a_spawned_worker(federation, tmp_path):
    manifest = federation(rounds=1)
    with pytest.raises(ValueError, match="picklable"):
        entente.simulate(
            manifest, torch_clients(tmp_path), quiet=True, processes=2, start_method="spawn"
        )


class _Claims(helpers.TorchClient):
    """A hostile site: trains honestly, then claims 2**63 examples (a FedAvg weight that would
    swamp every other site and that no store can hold)."""

    def fit(self, params, config):
        trained, _, metrics = super().fit(params, config)
        return trained, 2**63, metrics


def test_an_absurd_example_count_leaves_the_site_out(federation, tmp_path):
    manifest = federation(rounds=2, min_sites=2)

    def client_fn(site):
        if site == "site-a":
            return _Claims(tmp_path, site)
        return helpers.TorchClient(tmp_path, site)

    result = entente.simulate(manifest, client_fn, out=tmp_path / "run", quiet=True)
    for record in rounds_of(result):
        assert record["accepted"] == ["site-b", "site-c"]
        (excluded,) = record["excluded"]
        assert excluded["site"] == "site-a"
        assert "num_examples" in excluded["reason"], excluded
        assert excluded["kind"] == "malformed_reply", excluded


def test_target_accuracy_names_the_first_round_that_reached_it(federation, tmp_path):
    manifest = federation(rounds=4)
    result = entente.simulate(
        manifest,
        torch_clients(tmp_path),
        out=tmp_path / "run",
        quiet=True,
        eval_data=tmp_path / "central.csv",
        target_accuracy=0.5,
    )
    first = next(r["round"] for r in rounds_of(result) if r["test"]["accuracy"] >= 0.5)
    assert result.summary["rounds_to_target"] == first
    with pytest.raises(ValueError, match="target_accuracy"):
        entente.simulate(manifest, torch_clients(tmp_path), quiet=True, target_accuracy=85)


def with_personalization(manifest, table: str):
    with manifest.open("a") as f:
        f.write(f"\n[personalization]\n{table}\n")
    return manifest


def test_python_clients_fine_tune_their_personal_models(federation, tmp_path):
    manifest = with_personalization(federation(rounds=2), 'method = "finetune"\nepochs = 2')
    result = entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "run", quiet=True)
    global_model = result.load_model()
    for s in result.summary["sites"]:
        personal = entente.load_params(result.run_dir / "personal" / f"{s['site']}.safetensors")
        assert list(personal) == list(global_model)
        assert any(not np.array_equal(personal[n], global_model[n]) for n in personal), s
        # The client's own evaluation of its personal model, checked in numpy.
        _, _, x_test, y_test = helpers.site_data(tmp_path, s["site"])
        expected = helpers.accuracy(personal, x_test, y_test)
        assert s["personalized_own_test_accuracy"] == pytest.approx(expected, abs=0.02), s


def test_ditto_with_a_python_client_is_refused_naming_the_site(federation, tmp_path):
    manifest = with_personalization(federation(rounds=1), 'method = "ditto"\nlambda = 0.5')
    with pytest.raises(entente.EntenteError, match=r"ditto.*site-a.*finetune"):
        entente.simulate(manifest, torch_clients(tmp_path), out=tmp_path / "run", quiet=True)
