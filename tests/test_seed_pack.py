"""Seed packing (debiaskit.train.seed_pack): G seeds of one configuration trained as
stacked networks in one process equal G separate runs, resume like them, and pack only
where they can.

Tolerances: on the 2-core CPU these tests were written on, a packed seed's numbers equal a
separate run's bit for bit (its backward pass issues the products a ``Linear`` issues, and
each seed's own Adam steps its slices). Other kernels (another CPU, a GPU's batched GEMM)
may sum in another order; Adam divides by the root of the gradients' squares, so a rounding
difference in a gradient that nearly cancels can move a weight by up to one learning rate
(1e-3) in a step. With autograd's own ``baddbmm`` backward (another summation order) the
differences after these two epochs were about 2e-7 (ERM) and 4e-6 (LfF), so the weights
must agree to 1e-5 (ERM) and 1e-4 (LfF): room for rounding, yet below one Adam step, so a
seed that saw another seed's batches, initial weights or loss tables fails. Accuracies
(counts of correct predictions) must be equal; the confidence-based ECE and the logged
training losses agree to 1e-5 relative."""

from __future__ import annotations

import math

import pytest
import torch

from debiaskit import optim, runs
from debiaskit.errors import ConfigError
from debiaskit.models import build_model
from debiaskit.models.stacked import StackedMLP, stackable
from debiaskit.train import RunConfig, resolve_seed_pack, train, train_seeds, why_not_packed
from debiaskit.train.seed_pack import cell_key

SMALL = dict(train_subset=2000, eval_subset=500, progress=False, threads=1, epochs=2)
WEIGHT_TOL = {"erm": 1e-5, "lff": 1e-4, "groupdro": 0.0}


def _cfgs(data_dir, method, seeds=(0, 1), **kw):
    # each seed draws its own colours too (data seed = seed), as the bench does
    return [RunConfig(method=method, seed=s, data_dir=data_dir,
                      data_params={"conflict_ratio": 0.02, "seed": s}, **{**SMALL, **kw})
            for s in seeds]


def _saved(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _close(a, b, rel=1e-5):
    """Nested numbers equal up to ``rel`` (lists and dicts compared element by element)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=rel) or (math.isnan(a) and math.isnan(b))
    return a == b


def assert_same_run(packed, separate, method):
    """Two finished run directories hold the same run up to float rounding."""
    a, b = runs.read_metrics(packed), runs.read_metrics(separate)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        for split, metrics in ra["eval"].items():
            exact = {k: v for k, v in metrics.items() if not k.startswith("ece")}
            assert exact == {k: v for k, v in rb["eval"][split].items()
                             if not k.startswith("ece")}, (ra["epoch"], split)
            assert _close(metrics, rb["eval"][split]), (ra["epoch"], split)
        assert _close(ra["train"], rb["train"]), ra["epoch"]
    stored = [runs.read_json(d / runs.CONFIG)["run"] for d in (packed, separate)]
    assert stored[0] == stored[1]
    ma, mb = _saved(packed / runs.MODEL), _saved(separate / runs.MODEL)
    assert ma.keys() == mb.keys() and ma["networks"].keys() == mb["networks"].keys()
    tol = WEIGHT_TOL[method]
    for k, v in ma["networks"].items():
        assert v.shape == mb["networks"][k].shape and v.dtype == mb["networks"][k].dtype
        assert torch.allclose(v, mb["networks"][k], rtol=0, atol=tol), k
    if (separate / runs.WEIGHTS).exists():
        assert torch.allclose(_saved(packed / runs.WEIGHTS)["weights"],
                              _saved(separate / runs.WEIGHTS)["weights"], rtol=0, atol=tol)


# --- stacked networks (no data) -------------------------------------------------------

def test_stacked_mlp_computes_and_steps_each_network_as_it_would_alone():
    torch.manual_seed(0)
    nets = [build_model("mlp", (3, 8, 8), 4, hidden=18, input_scale_quirk=True)
            for _ in range(3)]
    copies = [build_model("mlp", (3, 8, 8), 4, hidden=18, input_scale_quirk=True)
              for _ in range(3)]
    for c, n in zip(copies, nets):
        c.load_state_dict(n.state_dict())
    stack = StackedMLP(nets)
    views = [stack.slices(g) for g in range(3)]
    opts = [optim.build_optimizer(v, optim.OptimizerSpec(lr=1e-2)) for v in views]
    own = [optim.build_optimizer(c.parameters(), optim.OptimizerSpec(lr=1e-2)) for c in copies]
    for _ in range(4):
        x, y = torch.rand(3, 5, 3, 8, 8), torch.randint(0, 4, (3, 5))
        out = stack(x)
        for g, c in enumerate(copies):
            assert torch.allclose(out[g], c(x[g]), atol=1e-6)
        stack.zero_grad(set_to_none=True)
        sum(torch.nn.functional.cross_entropy(out[g], y[g]) for g in range(3)).backward()
        for g, opt in enumerate(opts):
            stack.pass_gradients(g, views[g])
            opt.step()
        for g, (c, o) in enumerate(zip(copies, own)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(c(x[g]), y[g]).backward()
            for p, q in zip(views[g], c.parameters()):
                assert torch.allclose(p.grad, q.grad, atol=1e-6)
            o.step()
    stack.write_to(nets)
    for n, c, v in zip(nets, copies, views):
        for p, q, w in zip(n.parameters(), c.parameters(), v):
            assert torch.allclose(p, q, atol=1e-5) and torch.equal(p, w)
    # each network's optimiser state has the format (and values) of a separate one's
    for opt, o in zip(opts, own):
        mine, theirs = opt.state_dict(), o.state_dict()
        assert mine["param_groups"] == theirs["param_groups"]
        for i in theirs["state"]:
            assert torch.allclose(mine["state"][i]["exp_avg"], theirs["state"][i]["exp_avg"],
                                  atol=1e-6)


def test_only_same_shaped_mlps_stack():
    mlp = build_model("mlp", (3, 8, 8), 4, hidden=16)
    assert stackable([mlp, build_model("mlp", (3, 8, 8), 4, hidden=16)]) is None
    assert "differ" in stackable([mlp, build_model("mlp", (3, 8, 8), 4, hidden=8)])
    assert "MLP" in stackable([mlp, build_model("resnet20", (3, 8, 8), 4)])


# --- the decision (no data) -----------------------------------------------------------

def test_auto_packs_on_a_gpu_only_and_bad_modes_are_refused():
    assert resolve_seed_pack("auto", "cpu") is False
    assert resolve_seed_pack("auto", "cuda") is True
    assert resolve_seed_pack("auto", "cuda:1") is True
    assert resolve_seed_pack("on", "cpu") is True
    assert resolve_seed_pack("off", "cuda") is False
    with pytest.raises(ConfigError, match="--pack-seeds must be one of auto, on, off"):
        resolve_seed_pack("yes", "cpu")


def test_what_cannot_pack_says_why(tmp_path):
    def cfgs(**kw):
        return [RunConfig(seed=s, data_params={"seed": s}, **kw) for s in (0, 1)]

    dirs = [tmp_path / "a", tmp_path / "b"]
    assert why_not_packed(cfgs(method="lff"), dirs) is None
    assert why_not_packed(cfgs(method="erm"), dirs) is None
    assert why_not_packed(cfgs(method="erm")[:1], dirs) == "a single seed"
    assert "method jtt" in why_not_packed(cfgs(method="jtt"), dirs)
    assert "only the MLP" in why_not_packed(cfgs(model="resnet20"), dirs)
    assert "early stopping" in why_not_packed(cfgs(selection="early_stop"), dirs)
    assert "schedules" in why_not_packed(cfgs(schedule="step"), dirs)
    other = [RunConfig(seed=0), RunConfig(seed=1, hparams={"lr": 1e-2})]
    assert "more than their seeds" in why_not_packed(other, dirs)
    assert cell_key(cfgs()[0]) == cell_key(cfgs()[1]) != cell_key(other[1])


def test_bench_groups_the_seeds_of_a_cell_into_one_job_when_packing_is_on(tmp_path):
    from debiaskit.bench import get_preset
    from debiaskit.bench.runner import jobs, plan

    planned = plan(get_preset("lff-cmnist"), tmp_path, seeds=3, methods=["Vanilla", "LfF"],
                   rows=["95.0", "99.0"], epochs=1, data_dir=tmp_path)
    on = jobs(planned, "on")
    assert sorted(len(j) for j, _ in on) == [3, 3, 3, 3] and {r for _, r in on} == {None}
    assert all(len({(p.method, p.row) for p in j}) == 1 for j, _ in on)
    assert all(len(j) == 1 for j, _ in jobs(planned, "auto"))  # the runs' device is cpu
    assert all(len(j) == 1 for j, _ in jobs(planned, "off"))
    # a cell that cannot pack is spread over the workers, its reason passed on
    dro = plan(get_preset("lff-cmnist"), tmp_path, seeds=2, methods=["GroupDRO"],
               rows=["95.0"], epochs=1, data_dir=tmp_path)
    assert [(len(j), "groupdro" in r) for j, r in jobs(dro, "on")] == [(1, True), (1, True)]


# --- packed runs equal separate runs (real data) ---------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", ["erm", "lff"])
def test_packed_seeds_equal_separate_runs(data_dir, tmp_path, method):
    cfgs = _cfgs(data_dir, method)
    packed = [tmp_path / f"packed{c.seed}" for c in cfgs]
    summaries = train_seeds(cfgs, packed, mode="on")
    for cfg, summary, out in zip(cfgs, summaries, packed):
        assert summary["seed_pack"]["packed"] and summary["seed_pack"]["seeds"] == 2
        separate = tmp_path / f"separate{cfg.seed}"
        train(cfg, separate)
        assert_same_run(out, separate, method)
    # the seeds differ from each other (each kept its own initial weights and data)
    a, b = (_saved(p / runs.MODEL)["networks"] for p in packed)
    assert not any(torch.allclose(a[k], b[k], atol=1e-3) for k in a)


class _Interrupted(Exception):
    pass


@pytest.mark.slow
def test_packed_run_interrupted_after_epoch_1_resumes_to_the_same_result(
        data_dir, tmp_path, monkeypatch):
    from debiaskit.train.trainer import Trainer

    cfgs = _cfgs(data_dir, "lff", epochs=3)
    whole = [tmp_path / f"whole{c.seed}" for c in cfgs]
    train_seeds(cfgs, whole, mode="on")

    cut = [tmp_path / f"cut{c.seed}" for c in cfgs]
    close = Trainer._close_epoch

    def close_then_stop(self, method, epoch, *args):
        best = close(self, method, epoch, *args)
        if epoch == 0 and self.out == cut[-1]:  # every seed has saved epoch 1
            raise _Interrupted
        return best

    monkeypatch.setattr(Trainer, "_close_epoch", close_then_stop)
    with pytest.raises(_Interrupted):
        train_seeds(cfgs, cut, mode="on")
    monkeypatch.undo()
    assert all(len(runs.read_metrics(d)) == 1 and not runs.is_finished(d) for d in cut)
    summaries = train_seeds(cfgs, cut, mode="on")
    assert all(s["seed_pack"]["packed"] for s in summaries)
    for w, c in zip(whole, cut):
        strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]
        assert strip(runs.read_metrics(c)) == strip(runs.read_metrics(w))
        mw, mc = _saved(w / runs.MODEL)["networks"], _saved(c / runs.MODEL)["networks"]
        assert all(torch.equal(mw[k], mc[k]) for k in mw)


@pytest.mark.slow
def test_a_method_that_cannot_pack_runs_seed_by_seed_and_says_so(data_dir, tmp_path):
    cfgs = _cfgs(data_dir, "groupdro", epochs=1)
    dirs = [tmp_path / f"s{c.seed}" for c in cfgs]
    said = []
    summaries = train_seeds(cfgs, dirs, mode="on", log=said.append)
    for s in summaries:
        assert s["seed_pack"]["packed"] is False
        assert "method groupdro has no seed-packed step" in s["seed_pack"]["reason"]
    assert len(said) == 1 and "one by one" in said[0]
    for cfg, d in zip(cfgs, dirs):
        train(cfg, tmp_path / f"alone{cfg.seed}")
        assert_same_run(d, tmp_path / f"alone{cfg.seed}", "groupdro")


@pytest.mark.slow
def test_auto_on_a_cpu_runs_seed_by_seed(data_dir, tmp_path):
    cfgs = _cfgs(data_dir, "erm", epochs=1)
    summaries = train_seeds(cfgs, [tmp_path / "a", tmp_path / "b"], mode="auto")
    assert [s["seed_pack"]["packed"] for s in summaries] == [False, False]
    assert "GPU only" in summaries[0]["seed_pack"]["reason"]


def test_a_packed_step_issues_the_products_a_linear_issues():
    # where this CPU's batched product rounds like its single one (the forward pass), the
    # packed backward pass must too: it issues per network the products Linear's does
    torch.manual_seed(1)
    nets = [build_model("mlp", (3, 28, 28), 10) for _ in range(2)]
    stack = StackedMLP(nets)
    x, y = torch.rand(2, 256, 3, 28, 28), torch.randint(0, 10, (2, 256))
    out = stack(x)
    if not all(torch.equal(out[g], nets[g](x[g])) for g in range(2)):
        pytest.skip("this CPU's batched products round differently from single ones")
    sum(torch.nn.functional.cross_entropy(out[g], y[g]) for g in range(2)).backward()
    for g, net in enumerate(nets):
        torch.nn.functional.cross_entropy(net(x[g]), y[g]).backward()
        for stacked, p in zip(stack.stacks, net.parameters()):
            assert torch.equal(stacked.grad[g], p.grad)


@pytest.mark.slow
def test_seeds_interrupted_after_different_epochs_finish_one_by_one(
        data_dir, tmp_path, monkeypatch):
    from debiaskit.train.trainer import Trainer

    cfgs = _cfgs(data_dir, "erm", epochs=2)
    cut = [tmp_path / f"cut{c.seed}" for c in cfgs]
    close = Trainer._close_epoch

    def stop_between_seeds(self, method, epoch, *args):
        if epoch == 0 and self.out == cut[1]:  # seed 0 saved epoch 1, seed 1 did not
            raise _Interrupted
        return close(self, method, epoch, *args)

    monkeypatch.setattr(Trainer, "_close_epoch", stop_between_seeds)
    with pytest.raises(_Interrupted):
        train_seeds(cfgs, cut, mode="on")
    monkeypatch.undo()
    assert [len(runs.read_metrics(d)) for d in cut] == [1, 0]
    summaries = train_seeds(cfgs, cut, mode="on")
    assert all("different epochs" in s["seed_pack"]["reason"] for s in summaries)
    for cfg, d in zip(cfgs, cut):
        train(cfg, tmp_path / f"alone{cfg.seed}")
        assert_same_run(d, tmp_path / f"alone{cfg.seed}", "erm")


@pytest.mark.slow
def test_bench_trains_a_cells_seeds_packed_and_reports_them(data_dir, tmp_path):
    from debiaskit.bench.presets import Row, TablePreset
    from debiaskit.bench.runner import execute, plan
    from debiaskit.bench.tables import write_report

    preset = TablePreset(
        name="packed", title="seed packing", source="a test", dataset="colored_mnist",
        rows=(Row("98", {"conflict_ratio": 0.02}),), methods={"Vanilla": "erm", "LfF": "lff"},
        published={}, run={"train_subset": 2000, "eval_subset": 500, "epochs": 1})
    planned = plan(preset, tmp_path, seeds=2, data_dir=data_dir)
    said = []
    assert execute(planned, workers=1, log=said.append, pack_seeds="on") == []
    assert "(4 of them seed-packed)" in said[0]
    for p in planned:
        record = runs.read_json(p.run_dir / runs.SUMMARY)["seed_pack"]
        assert record["packed"] and record["with_seeds"] == [0, 1]
    assert "Vanilla" in write_report(preset, planned, tmp_path)
