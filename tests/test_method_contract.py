"""One test over every registered method on a tiny synthetic dataset (as DomainBed's
test_models.py): it builds, trains, predicts, saves its whole training state and reloads
it into a fresh instance that then continues exactly as the original does."""

from __future__ import annotations

import io

import pytest
import torch

from debiaskit.data.dataset import BiasedDataset
from debiaskit.data.loader import InMemoryLoader
from debiaskit.methods import METHODS, DataSpec
from debiaskit.models import NetworkFactory

N, CLASSES, SHAPE = 96, 4, (3, 8, 8)
#: small settings where a default would not reach a method's later phase in 3 epochs
SMALL_HPARAMS = {"jtt": {"identification_epochs": 1}, "disent": {"swap_start": 2},
                 "lad": {"codebook_size": 4},
                 # CF/F with all three parts on: counterfactual, factual and saliency
                 "cff": {"cf": "random", "factual": "shuffle", "sal_lambda": 1.0}}


def _dataset(with_bias: bool, with_mask: bool = False) -> BiasedDataset:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(N) % CLASSES
    b = torch.where(torch.rand(N, generator=gen) < 0.75, y, torch.randint(0, CLASSES, (N,),
                                                                           generator=gen))
    x = torch.randint(0, 256, (N, *SHAPE), generator=gen, dtype=torch.uint8)
    x[:, 0] = (b * 60).to(torch.uint8)[:, None, None]  # the bias: the red channel's level
    mask = torch.zeros(N, *SHAPE[1:], dtype=torch.bool)
    mask[:, 2:6, 2:6] = True  # the foreground: the central square
    return BiasedDataset(name="synthetic", x=x, y=y, num_classes=CLASSES,
                         b=b if with_bias else None, num_bias=CLASSES if with_bias else 0,
                         mask=mask if with_mask else None)


def _build(name: str, data: BiasedDataset, seed: int):
    torch.manual_seed(seed)
    spec = DataSpec(input_shape=SHAPE, num_classes=CLASSES, num_train=N, train_targets=data.y,
                    num_bias=data.num_bias, train_bias=data.b)
    return METHODS[name](spec, NetworkFactory("mlp", SHAPE, CLASSES),
                         SMALL_HPARAMS.get(name, {}))


def _epoch(method, loader, epoch: int) -> list[dict]:
    pool = method.begin_epoch(epoch, loader)
    method.train(True)
    return [method.update(batch) for batch in loader.epoch(epoch, pool)]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_builds_trains_predicts_saves_and_resumes(name):
    data = _dataset(with_bias="bias" in METHODS[name].requires,
                    with_mask="mask" in METHODS[name].requires)
    loader = InMemoryLoader(data, 32, seed=0)
    method = _build(name, data, seed=0)
    assert isinstance(method, torch.nn.Module)
    x = loader.epoch(0).__next__().x
    before = method.predict(x).detach().clone()
    for epoch in range(2):
        for stats in _epoch(method, loader, epoch):
            assert stats and all(isinstance(v, float) and v == v for v in stats.values()), stats
    method.train(False)
    logits = method.predict(x)
    assert logits.shape == (len(x), CLASSES) and torch.isfinite(logits).all()
    assert not torch.equal(logits, before), "training changed nothing"
    assert torch.equal(method(x), logits)
    for aux in method.auxiliary_predictors().values():
        assert aux(x).shape == (len(x), CLASSES)

    # the whole training state through bytes into a method built from another seed
    buffer = io.BytesIO()
    torch.save(method.training_state(), buffer)
    buffer.seek(0)
    copy = _build(name, data, seed=1)
    copy.load_training_state(torch.load(buffer, weights_only=False))
    copy.train(False)
    assert torch.equal(copy.predict(x), logits)
    ours, theirs = method.state_dict(), copy.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # and both continue identically (optimiser moments, tables, counters, stages restored)
    for m in (method, copy):
        torch.manual_seed(7)
        _epoch(m, loader, 2)
        m.train(False)
    assert torch.equal(copy.predict(x), method.predict(x))


def test_state_is_buffers_not_hand_written_classes():
    data = _dataset(with_bias=True)
    keys = {name: set(_build(name, data, 0).state_dict()) for name in ("lff", "groupdro", "jtt",
                                                                        "disent")}
    assert {"tables.biased.values", "tables.biased.seen", "tables.debiased.values"} <= keys["lff"]
    assert "q" in keys["groupdro"] and "group_counts" not in keys["groupdro"]  # derived: not saved
    assert {"tables.error_set.errors", "tables.error_set.ready"} <= keys["jtt"]
    assert "steps" in keys["disent"]


def test_a_checkpoint_written_before_methods_were_modules_loads():
    """The old checkpoint layout ({networks, optimizers, tables of plain tensors})."""
    data = _dataset(with_bias=True)
    loader = InMemoryLoader(data, 32, seed=0)
    for name, tables in (("groupdro", lambda m: {"groups": {"q": m.q.clone()}}),
                         ("disent", lambda m: {
                             "intrinsic": {k: v.clone() for k, v in
                                           m.tables["intrinsic"].state_dict().items()},
                             "bias": {k: v.clone() for k, v in
                                      m.tables["bias"].state_dict().items()},
                             "steps": {"value": int(m.steps)}})):
        method = _build(name, data, 0)
        _epoch(method, loader, 0)
        old = {"networks": method.networks.state_dict(),
               "optimizers": {k: o.state_dict() for k, o in method.optimizers.items()},
               "tables": tables(method)}
        copy = _build(name, data, 1)
        copy.load_training_state(old)
        ours, theirs = method.state_dict(), copy.state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
