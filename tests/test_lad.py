"""LAD: the one-pixel problem and gradient ratio, the VQ-VAE, the latent walk, the stages."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from debiaskit import runs
from debiaskit.data.augment import RandomAffine
from debiaskit.data.loader import InMemoryLoader
from debiaskit.data.protocols import build_data
from debiaskit.data.protocols.one_pixel import confounding_mask
from debiaskit.errors import ConfigError, DebiaskitError
from debiaskit.methods import DataSpec
from debiaskit.methods.lad import LAD, bias_classifier
from debiaskit.methods.lad.rule import check_rule_data, choose, parse_alphas
from debiaskit.methods.lad.walk import latent_walk, predictive_entropy, walk_step
from debiaskit.metrics import gradient_ratio
from debiaskit.models import NetworkFactory
from debiaskit.models.vqvae import VQVAE, VectorQuantizer
from debiaskit.stages import StageStore
from debiaskit.train import RunConfig, train


def test_one_pixel_encodes_exactly_the_class(data_dir, mnist):
    bundle = build_data("one_pixel_mnist", data_dir)
    tr = bundle.train
    assert tr.image_shape == (1, 28, 28) and torch.equal(tr.b, tr.y)
    first_row = tr.x[:, 0, 0, :10]
    expected = torch.nn.functional.one_hot(tr.y, 10).to(torch.uint8) * 255
    assert torch.equal(first_row, expected)  # MNIST's first row is black: exactly one pixel
    rest = tr.x.clone()
    rest[:, :, 0, :10] = 0
    assert torch.equal(rest[:, 0], torch.from_numpy(np.array(mnist.x_train)))
    ind, cond = bundle.evals["independent"], bundle.evals["conditioned"]
    assert torch.equal(ind.x[:, 0, 0, :10].argmax(1), ind.b)
    assert 0.08 < (ind.b == ind.y).float().mean().item() < 0.12  # bias independent of label
    assert torch.equal(cond.x[:, 0], torch.from_numpy(np.array(mnist.x_test))) and cond.b is None


def test_gradient_ratio_by_hand():
    grad = torch.zeros(2, 1, 2, 3)
    grad[0, 0, 0, 0], grad[1, 0, 0, 1] = 3.0, 4.0   # confounding pixels: norm 5
    grad[0, 0, 1, 2], grad[1, 0, 1, 0] = 6.0, 8.0   # causal pixels: norm 10
    mask = confounding_mask((1, 2, 3), num_classes=2)
    assert mask.sum() == 2 and mask[0, 0, :2].all()
    causal, confound, ratio = gradient_ratio(grad, mask)
    assert (causal, confound, ratio) == pytest.approx((10.0, 5.0, 2.0))


@pytest.mark.slow
def test_vanilla_takes_the_one_pixel_shortcut(data_dir):
    from debiaskit.explain.gradient_ratio import track_gradient_ratio

    trace = track_gradient_ratio("one_pixel_mnist", "mlp", iterations=400, data_dir=data_dir,
                                 eval_every=200)
    assert trace.ratio[0] > 3.0          # at initialisation the image gradient dominates
    crossing = trace.first_below_one()   # then the class pixel's (paper: after 230)
    assert crossing is not None and 100 < crossing <= 400
    assert np.mean(trace.accuracy[-20:]) > 99.0
    # a pixel of a random class pulls predictions away from the digit
    assert trace.test_accuracy["independent"] < trace.test_accuracy["conditioned"] - 20
    assert sorted(trace.test_curve) == [200, 400] and trace.test_curve[400] == trace.test_accuracy
    # evaluating in between leaves training untouched (same losses as a run without it)
    plain = track_gradient_ratio("one_pixel_mnist", "mlp", iterations=200, data_dir=data_dir)
    assert plain.loss == trace.loss[:200]


def test_requantisation_returns_codebook_vectors_only():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=7, code_dim=5)
    q = vq.quantize(torch.randn(3, 5, 4, 4) * 3)
    vectors = q.permute(0, 2, 3, 1).reshape(-1, 5)
    is_code = (vectors[:, None, :] == vq.codebook[None]).all(-1)
    assert bool(is_code.any(1).all())
    # and it is the nearest code
    z = torch.randn(2, 5, 4, 4)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 5)
    nearest = torch.cdist(flat, vq.codebook).argmin(1)
    assert torch.equal(vq.nearest(z).reshape(-1), nearest)


def test_dead_codes_restart_at_latents_of_the_batch():
    torch.manual_seed(0)
    z = torch.randn(16, 4, 3, 3)
    for restart, expect_far in ((1.0, 0), (0.0, 3)):
        vq = VectorQuantizer(codebook_size=8, code_dim=4, restart_below=restart)
        vq(z)  # first batch: codes initialised at latents of the batch
        with torch.no_grad():
            vq.codebook[:3] += 1000.0      # three codes far from every latent: never chosen
            vq.code_sum[:3] = vq.codebook[:3] * vq.cluster_size[:3, None]
        for _ in range(60):  # their usage decays (EMA 0.99) below one per batch
            vq(z)
        far = int((vq.codebook.norm(dim=1) > 100).sum())
        assert far == expect_far, restart
    assert vq.codes_in_use(threshold=1.0) < 8


@pytest.mark.slow
def test_vqvae_learns_mostly_black_images(data_dir):
    """Foreground-coloured MNIST is mostly black: the reconstruction must get past the
    all-black image (a sigmoid output layer stalled there)."""
    tr = build_data("colored_mnist", data_dir, conflict_ratio=0.0).train
    tr = tr.subset(torch.arange(2000))
    torch.manual_seed(0)
    vqvae = VQVAE((3, 28, 28), 20, restart_below=1.0)
    optimizer = torch.optim.Adam(vqvae.parameters(), 1e-3)
    for epoch in range(6):
        for batch in InMemoryLoader(tr, 128, shuffle=True, seed=0).epoch(epoch):
            optimizer.zero_grad()
            vqvae(batch.x)[1].backward()
            optimizer.step()
    x = tr.x[:500].float() / 255
    with torch.no_grad():
        mse = (vqvae.eval()(x)[0] - x).pow(2).mean().item()
    black = x.pow(2).mean().item()
    print(mse, black)
    assert mse < 0.8 * black  # the sigmoid version stayed at or above the black image


def test_random_affine_is_per_sample_and_identity_at_zero():
    x = torch.rand(64, 3, 28, 28)
    assert torch.equal(RandomAffine(0.0, (1.0, 1.0), 0.0)(x), x)
    affine = RandomAffine()
    out = affine(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert (out - x).abs().mean((1, 2, 3)).gt(0).float().mean() > 0.9
    m = affine.matrices(1000, torch.Generator().manual_seed(0))
    scale = m.det().abs().sqrt()  # rotation and shear keep the area: |det| = scale^2
    assert 0.8 <= scale.min() < 0.82 and 1.08 < scale.max() <= 1.1
    assert len(set(m[:, 0, 1].tolist())) == 1000  # parameters differ per sample


@pytest.fixture(scope="module")
def small_bg(data_dir):
    bundle = build_data("bg_colored_mnist", data_dir)  # rho = 1.0: 100 % biased
    torch.manual_seed(0)
    return bundle.train.subset(torch.randperm(len(bundle.train))[:3000].sort().values), bundle


#: f trained with Adam 1e-3: the saturated f whose walk and stopping these tests follow
ADAM_F = {"f_optimizer": "adam", "f_lr": 1e-3}


@pytest.fixture(scope="module")
def trained_lad(small_bg):
    tr, bundle = small_bg
    spec = DataSpec(input_shape=(3, 28, 28), num_classes=10, num_train=len(tr),
                    train_targets=tr.y)
    hparams = {"vq_epochs": 3, "f_epochs": 3, **ADAM_F}
    method = LAD(spec, NetworkFactory("mlp", (3, 28, 28), 10), hparams)
    vq_art, vq_stats = method.train_vqvae(tr, {}, seed=0, device="cpu")
    vqvae = method.new_vqvae()
    vqvae.load_state_dict(vq_art["vqvae"])
    vqvae.eval()
    codes = vq_art["codes"].long()
    with torch.inference_mode():  # the stage's cached codes are the model's own codes
        own = vqvae.quantizer.nearest(vqvae.encode(tr.x[:50].float() / 255))
        assert torch.equal(codes[:50], own)
    f_art, f_stats = method.train_bias_classifier(vqvae, codes, tr, seed=0, device="cpu")
    f = bias_classifier(vqvae.latent_shape, 10)
    f.load_state_dict(f_art["f"])
    return method, vqvae, f, vq_stats, f_stats


@pytest.mark.slow
def test_vqvae_reconstructs_and_f_follows_the_colour(small_bg, trained_lad):
    tr, _ = small_bg
    _, vqvae, _, vq_stats, f_stats = trained_lad
    assert vqvae.latent_shape == (64, 7, 7)
    assert VQVAE((3, 32, 32), 2048).encode(torch.rand(2, 3, 32, 32)).shape == (2, 64, 8, 8)
    x = tr.x.float() / 255
    mean_image_mse = (x - x.mean(0)).pow(2).mean().item()
    print(vq_stats, f_stats, mean_image_mse)
    assert vq_stats["train_recon_mse"] < 0.8 * mean_image_mse  # better than the mean image
    assert f_stats["f_last_epoch_train_accuracy"] > 40.0       # chance is 10 %


def test_walk_rule_chooses_the_shortest_walk_that_leaves_f_unsure_and_keeps_the_digit():
    """Hand-made curves (entropy bar 1.84, IoU bar 0.8): alpha 0.05 meets both bars at
    step 8 (length 0.4), 0.1 at step 3 (0.3), 0.3 at step 1 (0.3, a tie: the smaller step
    wins), 0.2 reaches the entropy at step 1 (length 0.2) but breaks the digit. Choosing the
    fewest steps (0.3), the smallest alpha (0.05), ignoring the IoU (0.2) or breaking the
    tie the other way (0.3) all give another answer."""
    curves = [
        {"alpha": 0.05, "entropy": [0.25 * i for i in range(1, 11)], "shape_iou": [0.9] * 10},
        {"alpha": 0.1, "entropy": [0.5, 1.2, 1.9, 2.0], "shape_iou": [0.95, 0.9, 0.85, 0.5]},
        {"alpha": 0.2, "entropy": [1.9, 2.1], "shape_iou": [0.79, 0.7]},
        {"alpha": 0.3, "entropy": [1.95, 2.2], "shape_iou": [0.85, 0.6]},
    ]
    chosen = choose(curves, entropy_bar=1.84, iou_bar=0.8)
    assert (chosen["alpha"], chosen["walk_steps"], chosen["met"]) == (0.1, 3, True)
    assert chosen["length"] == pytest.approx(0.3)
    # walk_steps given (2): only step 2 counts; none meets both bars, so the most unsure
    # walk that keeps the digit (alpha 0.05: 0.5 nats, 0.1: 1.2; 0.2 and 0.3 break it)
    chosen = choose(curves, 1.84, 0.8, fixed_steps=2)
    assert (chosen["alpha"], chosen["walk_steps"], chosen["met"]) == (0.1, 2, False)
    # no step keeps the digit: the smallest step size, one step
    broken = [{**c, "shape_iou": [0.1] * len(c["shape_iou"])} for c in curves]
    assert (choose(broken, 1.84, 0.8)["alpha"], choose(broken, 1.84, 0.8)["walk_steps"]) == (
        0.05, 1)


def test_walk_rule_refuses_what_it_cannot_read(small_bg):
    assert parse_alphas("0.2, 0.05") == [0.05, 0.2]
    for bad in ("", "0.1,x", "0,0.1"):
        with pytest.raises(ConfigError, match="positive step sizes"):
            parse_alphas(bad)
    tr, _ = small_bg
    check_rule_data(replace(tr, mask=None))  # strokes are read from images, not masks
    with pytest.raises(ConfigError, match="reads digit strokes.*not cifar.*--hp alpha"):
        check_rule_data(replace(tr, name="cifar/train"))
    spec = DataSpec(input_shape=(3, 28, 28), num_classes=10, num_train=4,
                    train_targets=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="walk_rule_alphas"):
        LAD(spec, NetworkFactory("mlp", (3, 28, 28), 10), {"walk_rule_alphas": "fast"})
    LAD(spec, NetworkFactory("mlp", (3, 28, 28), 10), {"walk_rule_alphas": "fast",
                                                       "alpha": 0.1, "walk_steps": 5})


@pytest.mark.slow
def test_f_stopping_rule_constrains_f(small_bg, trained_lad):
    """f_stop_accuracy / f_stop_entropy stop f once the mean over the last 10 batches reaches
    the level (never before 10 batches); without them f trains all its epochs. 3,000
    images at batch 256: 12 batches per epoch."""
    tr, _ = small_bg
    method, vqvae, _, _, _ = trained_lad
    codes = method.train_vqvae(tr, {}, seed=0, device="cpu")[0]["codes"].long()

    def fit(**hp):
        m = LAD(method.spec, NetworkFactory("mlp", (3, 28, 28), 10),
                {"f_epochs": 3, **ADAM_F, **hp})
        return m.train_bias_classifier(vqvae, codes, tr, seed=0, device="cpu")[1]

    full = fit()
    assert full["f_steps"] == 36 and full["f_stopped_by"] == "f_epochs"
    # the entropy of 10 classes never exceeds log 10 = 2.30: the rule fires as soon as the
    # window is full, at step 10 (a rule without the window would stop at step 1)
    by_entropy = fit(f_stop_entropy=2.5)
    assert (by_entropy["f_steps"], by_entropy["f_stopped_by"]) == (10, "f_stop_entropy")
    by_accuracy = fit(f_stop_accuracy=30.0)
    assert by_accuracy["f_stopped_by"] == "f_stop_accuracy"
    assert 10 <= by_accuracy["f_steps"] < 36
    assert fit(f_stop_accuracy=100.0)["f_stopped_by"] == "f_epochs"   # never reached
    assert fit(f_steps=5)["f_stopped_by"] == "f_steps"


@pytest.mark.slow
def test_f_l1_shrinks_the_first_layer_of_f(small_bg, trained_lad):
    """f_l1 adds l1 * sum |W| of f's first layer to its loss: trained alike otherwise, that
    layer's weights shrink (SGD 0.1, 36 steps: about 3.6e-3 per weight, against a mean
    |w| of about 9e-3 at initialisation) while the last layer is not penalised."""
    tr, _ = small_bg
    method, vqvae, _, _, _ = trained_lad
    with torch.inference_mode():
        codes = vqvae.quantizer.nearest(vqvae.encode(tr.x.float() / 255))

    def fit(**hp):
        m = LAD(method.spec, NetworkFactory("mlp", (3, 28, 28), 10),
                {"f_epochs": 3, "f_lr": 0.1, **hp})
        f = m.train_bias_classifier(vqvae, codes, tr, seed=0, device="cpu")[0]["f"]
        return f["1.weight"].abs().sum().item(), f["3.weight"].abs().sum().item()

    (first, last), (first_l1, last_l1) = fit(), fit(f_l1=1e-3)
    assert first_l1 < 0.8 * first
    assert abs(last_l1 - last) < 0.1 * last


@pytest.mark.slow
def test_walk_step_increases_the_entropy_of_f(small_bg, trained_lad):
    tr, _ = small_bg
    _, vqvae, f, _, _ = trained_lad
    batch = next(iter(InMemoryLoader(tr, 256, shuffle=True, seed=1).epoch(0)))
    with torch.no_grad():
        h = vqvae.quantizer.quantize(vqvae.encode(batch.x))
        before = predictive_entropy(f(h))
        stepped = predictive_entropy(f(h + walk_step(f, h, alpha=0.01)))
    assert (stepped > before).float().mean() > 0.95  # gradient ascent on H, per image
    walked = latent_walk(f, vqvae.quantizer.quantize, h, steps=20, alpha=0.1)
    with torch.no_grad():
        after = predictive_entropy(f(walked))
        codes_changed = (vqvae.quantizer.nearest(walked) != vqvae.quantizer.nearest(h))
    assert after.mean() > before.mean() + 0.1
    assert codes_changed.any()


def test_vqvae_downsample_sets_the_latent_grid():
    x = torch.rand(2, 3, 28, 28)
    for down, side in ((4, 7), (2, 14)):
        vq = VQVAE((3, 28, 28), codebook_size=5, code_dim=8, hidden=8, downsample=down)
        assert vq.encode(x).shape == (2, 8, side, side) and vq(x)[0].shape == x.shape
    with pytest.raises(ValueError, match="downsample"):
        VQVAE((3, 28, 28), downsample=3)


def test_accumulating_walk_reaches_a_code_that_single_steps_cannot():
    """Eq. 5 vs Algorithm 1: steps of 0.07 towards a code 0.5 away (boundary at 0.25)."""
    quantizer = VectorQuantizer(2, 2)
    quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [0.5, 0.0]]))

    def f(h):  # class 0 is sure at h0 = 0 and less sure as h0 grows: dH/dh0 > 0
        h0 = h[:, 0].flatten(1).sum(1)
        return torch.stack([3 - h0, torch.zeros_like(h0)], 1)

    start = torch.zeros(1, 2, 1, 1)
    snapped = latent_walk(f, quantizer.quantize, start, steps=5, alpha=0.1)
    accumulated = latent_walk(f, quantizer.quantize, start, steps=5, alpha=0.1,
                              accumulate=True)
    assert snapped.flatten().tolist() == [0.0, 0.0]       # every step undone
    assert accumulated.flatten().tolist() == [0.5, 0.0]   # four steps of 0.0707 cross 0.25


def test_stage_store_caches_and_recomputes_on_a_new_key(tmp_path):
    calls = []

    def compute(value):
        calls.append(value)
        return {"x": torch.full((3,), float(value))}, {"value": value}

    store = StageStore(tmp_path)
    a = store.run("stage", {"v": 1}, lambda: compute(1))
    checksum = store.checksum("stage")
    b = StageStore(tmp_path).run("stage", {"v": 1}, lambda: compute(1))
    assert calls == [1] and torch.equal(a["x"], b["x"])
    c = store.run("stage", {"v": 2}, lambda: compute(2))
    assert calls == [1, 2] and c["x"][0] == 2 and store.checksum("stage") != checksum


def test_stage_cached_before_an_option_existed_is_reused_only_at_its_default(tmp_path):
    """A record whose key lacks a newer option matches a key with that option at its
    default (here and through reuse_from), and not at another value."""
    calls = []

    def compute(value):
        calls.append(value)
        return {"x": torch.full((3,), float(value))}, {}

    StageStore(tmp_path / "old").run("stage", {"v": 1}, lambda: compute(1))  # before "mode"
    defaults = {"mode": "plain", "other_stage_option": 3}  # only the key's fields count
    same = StageStore(tmp_path / "old").run("stage", {"v": 1, "mode": "plain"},
                                            lambda: compute(1), defaults)
    assert calls == [1] and same["x"][0] == 1
    reuser = StageStore(tmp_path / "new", reuse_from=tmp_path / "old")
    reuser.run("stage", {"v": 1, "mode": "plain"}, lambda: compute(1), defaults)
    assert calls == [1] and reuser.records["stage"]["key"] == {"v": 1, "mode": "plain"}
    StageStore(tmp_path / "other", reuse_from=tmp_path / "old").run(
        "stage", {"v": 1, "mode": "fancy"}, lambda: compute(2), defaults)
    assert calls == [1, 2]
    StageStore(tmp_path / "nodefaults", reuse_from=tmp_path / "old").run(
        "stage", {"v": 1, "mode": "plain"}, lambda: compute(3))
    assert calls == [1, 2, 3]  # without defaults a missing field is a different key


def test_stage_store_reuses_another_runs_stage_only_when_its_key_matches(tmp_path):
    calls = []

    def compute(value):
        calls.append(value)
        return {"x": torch.full((3,), float(value))}, {"value": value}

    first = StageStore(tmp_path / "a")
    first.run("stage", {"v": 1}, lambda: compute(1))
    second = StageStore(tmp_path / "b", reuse_from=tmp_path / "a")
    copied = second.run("stage", {"v": 1}, lambda: compute(1))
    assert calls == [1] and copied["x"].tolist() == [1.0, 1.0, 1.0]
    assert second.records["stage"]["reused_from"] == str(tmp_path / "a")
    assert (tmp_path / "b" / "stage.pt").exists()  # the new run holds its own copy
    other = StageStore(tmp_path / "c", reuse_from=tmp_path / "a")
    assert other.run("stage", {"v": 2}, lambda: compute(2))["x"][0] == 2
    assert calls == [1, 2] and "reused_from" not in other.records["stage"]
    torch.save({"x": torch.zeros(3)}, tmp_path / "a" / "stage.pt")  # edited behind its record
    with pytest.raises(DebiaskitError, match="checksum"):
        StageStore(tmp_path / "d", reuse_from=tmp_path / "a").run("stage", {"v": 1},
                                                                   lambda: compute(1))
    assert not (tmp_path / "d" / "stage.pt").exists()


@pytest.mark.slow
def test_lad_run_trains_on_decoded_walks(data_dir, tmp_path):
    cfg = RunConfig(dataset="bg_colored_mnist", method="lad", model="mlp", epochs=1,
                    train_subset=2000, eval_subset=500, data_dir=data_dir, augment="crop",
                    hparams={"vq_epochs": 1, "alpha": 1.0, "alpha_units": "spacing",
                             "walk_accumulate": True,
                             "walk_rule_max_steps": 3, "f_lr": 0.1, "f_epochs": 3},
                    progress=False)
    summary = train(cfg, tmp_path / "run")
    stages = summary["stages"]
    # walk_steps not given: the walk-length rule chose them (alpha given), and the walk
    # ran with its choice
    assert set(stages) == {"vqvae", "bias_classifier", "walk_rule", "walk"}
    rule = stages["walk_rule"]
    assert [c["alpha"] for c in rule["curves"]] == [1.0] and rule["held_out_images"] == 1000
    assert all(len(c["entropy"]) == 3 for c in rule["curves"])
    assert stages["walk"]["walk_chosen_by"] == "rule"
    assert (stages["walk"]["alpha"], stages["walk"]["alpha_units"]) == (1.0, "spacing")
    assert 1 <= stages["walk"]["walk_steps"] == rule["walk_steps"] <= 3
    # the walk's cached stage is keyed by the walk it made, not by the zeros asking for the
    # rule (a changed rule choice must not load an old walk)
    walk_key = runs.read_json(tmp_path / "run" / "stages" / "walk.json")["key"]
    assert (walk_key["alpha"], walk_key["walk_steps"]) == (1.0, rule["walk_steps"])
    assert stages["walk"]["entropy_after"] > stages["walk"]["entropy_before"]
    assert (tmp_path / "run" / "stages" / "walk.pt").exists()
    assert "augmentation crop" in summary["protocol"]
    steps = f"{rule['walk_steps']} step" + ("" if rule["walk_steps"] == 1 else "s")
    assert (f"LAD walk: {steps} of alpha 1 code spacings chosen by the walk-length rule"
            in summary["protocol"])
    from debiaskit.explain.lad import explain_lad_run
    png, probed = explain_lad_run(tmp_path / "run", n=8, data_dir=data_dir)
    assert png.name == "lad.png" and png.stat().st_size > 5000
    # at rho = 1 the original colour is the class: the probe must see that
    assert probed["probe_split"] == "unbiased"
    assert probed["original"]["class_bias_nmi"] > 0.8
    assert (tmp_path / "run" / "lad_bias.png").stat().st_size > 5000
    # another final classifier on the same walk: every stage copied, none recomputed
    other = train(replace(cfg, model_options={"hidden": 50},
                          reuse_stages=str(tmp_path / "run")), tmp_path / "narrower")
    for name, record in stages.items():
        assert other["stages"][name]["checksum"] == record["checksum"]
        assert other["stages"][name]["reused_from"] == str(tmp_path / "run" / "stages")


@pytest.mark.slow
def test_bias_probe_tells_a_remapped_bias_from_a_removed_one(data_dir, mnist):
    """The probe (trained on the unbiased split) reads the background colour: recolouring
    every class with another fixed colour keeps NMI(class, bias) at 1 and the original
    colour nowhere; recolouring with random colours brings it near 0."""
    from debiaskit.data.protocols.bg_colored_mnist import colorize_background
    from debiaskit.explain.bias_probe import (bias_dependence, class_bias_nmi,
                                              most_independent_split, predict,
                                              probe_reads_bias, train_probe)
    bundle = build_data("bg_colored_mnist", data_dir)
    split = most_independent_split(bundle.evals)
    assert split == "unbiased"
    probe, accuracy = train_probe(bundle.evals[split], "b", epochs=2)
    assert accuracy > 95 and probe_reads_bias(accuracy, 10)
    # bias labels shuffled against the images: nothing to read, and the probe says so
    unreadable = bundle.evals[split]
    unreadable = replace(unreadable, b=unreadable.b[torch.randperm(
        len(unreadable), generator=torch.Generator().manual_seed(0))])
    _, chance_accuracy = train_probe(unreadable, "b", epochs=2)
    assert chance_accuracy < 20 and not probe_reads_bias(chance_accuracy, 10)
    assert probe_reads_bias(55.0, 10) and not probe_reads_bias(54.9, 10)  # halfway: 55 %
    gray, y = mnist.x_train[:2000], torch.tensor(mnist.y_train[:2000], dtype=torch.long)
    remapped = torch.from_numpy(colorize_background(gray, ((y + 3) % 10).numpy()))
    dep = bias_dependence(y, predict(probe, remapped), 10, 10, b=y)
    assert dep["class_bias_nmi"] > 0.9 and dep["bias_kept"] < 2
    table = torch.tensor(dep["class_by_probed_bias"])
    assert (table.argmax(1) == (torch.arange(10) + 3) % 10).all()
    random_b = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(0))
    shuffled = torch.from_numpy(colorize_background(gray, random_b.numpy()))
    dep = bias_dependence(y, predict(probe, shuffled), 10, 10, b=y)
    assert dep["class_bias_nmi"] < 0.05 and 5 < dep["bias_kept"] < 15
    # the class probe reads the digit through any background colour, and nothing without it
    signal, accuracy = train_probe(bundle.evals[split], "y")
    assert accuracy > 80
    assert (predict(signal, remapped) == y).float().mean() > 0.75
    blank = torch.from_numpy(colorize_background(np.zeros_like(gray), random_b.numpy()))
    assert (predict(signal, blank) == y).float().mean() < 0.2
    # by hand: a label that is a permutation of the class carries all of it, a constant none
    assert class_bias_nmi([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert class_bias_nmi([0, 0, 1, 1], [2, 2, 2, 2]) == pytest.approx(0.0)


@pytest.mark.slow
def test_random_class_walk_reaches_its_targets_and_stops(small_bg, trained_lad):
    """The random_class objective (ours): on a real batch f ends up predicting each
    latent's target for most latents, and a latent already at its target does not move."""
    tr, _ = small_bg
    _, vqvae, f, _, _ = trained_lad
    with torch.no_grad():
        h = vqvae.quantizer.quantize(vqvae.encode(tr.x[:300].float() / 255))
    target = (tr.y[:300] + 1 + torch.arange(300) % 9) % 10
    walked = latent_walk(f, vqvae.quantizer.quantize, h, steps=20, alpha=0.1,
                         accumulate=True, target=target)
    with torch.no_grad():
        reached = (f(walked).argmax(1) == target).float().mean().item()
        before = (f(h).argmax(1) == target).float().mean().item()
    assert before < 0.05 and reached > 0.8
    own = f(h).argmax(1).detach()  # walking towards the class f already predicts: no move
    assert torch.equal(latent_walk(f, vqvae.quantizer.quantize, h, steps=20, alpha=0.1,
                                   accumulate=True, target=own), h)
