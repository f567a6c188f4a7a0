"""LAD's latent walk (methods/lad/walk.py) on hand-made latents and a hand-made f.

f is the identity on a latent of 2 (or 3) channels at one position: the latent's values are
the logits. Quantisation rounds to the integer grid. Every expected value below is worked
out by hand in the comments.
"""

import math

import pytest
import torch

from debiaskit.methods.lad.walk import (latent_walk, nearest_other_distance,
                                        predictive_entropy, spacing_scale,
                                        standardise_per_sample, walk_step)

R = 1 / math.sqrt(2)  # any 2-vector (+c, -c), c > 0, standardised (Eq. 6) is (+R, -R)


def f(h):
    return h.flatten(1)


def latent(*rows):
    return torch.tensor(rows, dtype=torch.float32)[:, :, None, None]


def test_predictive_entropy_per_sample():
    # uniform over 2 classes: ln 2; p = (3/4, 1/4): -(3/4 ln 3/4 + 1/4 ln 1/4)
    h = predictive_entropy(torch.tensor([[0.0, 0.0], [math.log(3), 0.0]]))
    assert h.shape == (2,)
    assert h.tolist() == pytest.approx([math.log(2), -(0.75 * math.log(0.75)
                                                       + 0.25 * math.log(0.25))])


def test_standardise_per_sample_by_hand():
    # sample 0: (1, 2, 3, 6), mean 3, centred (-2, -1, 0, 3), std sqrt(14 / 3);
    # sample 1: (0, 0, 0, 4), mean 1, centred (-1, -1, -1, 3), std sqrt(12 / 3) = 2
    grad = torch.tensor([[1.0, 2, 3, 6], [0, 0, 0, 4]]).view(2, 1, 2, 2)
    out = standardise_per_sample(grad, scale=2.0)
    assert out.shape == grad.shape
    std0 = math.sqrt(14 / 3)
    assert out[0].flatten().tolist() == pytest.approx([2 * v / std0 for v in (-2, -1, 0, 3)])
    assert out[1].flatten().tolist() == pytest.approx([-1.0, -1.0, -1.0, 3.0])
    # the default scale is 1: one standard deviation
    assert standardise_per_sample(grad)[1].flatten().tolist() == pytest.approx(
        [-0.5, -0.5, -0.5, 1.5])


def test_walk_step_towards_a_target_class_and_alpha_twice():
    # d log p(t) / d logits = onehot(t) - p; at logits (0, 0), p = (1/2, 1/2): (+1/2, -1/2)
    # for t = 0, standardised (mean 0, std sqrt(1/2)): (+R, -R); times alpha 0.5
    h = latent([0.0, 0.0], [0.0, 0.0])
    step = walk_step(f, h, alpha=0.5, target=torch.tensor([0, 1]))
    s = 0.5 * R
    assert step.flatten().tolist() == pytest.approx([s, -s, -s, s])
    twice = walk_step(f, h, alpha=0.5, alpha_twice=True, target=torch.tensor([0, 1]))
    assert twice.flatten().tolist() == pytest.approx([s / 2, -s / 2, -s / 2, s / 2])


def test_walk_step_up_the_entropy_points_to_the_even_split():
    # entropy is flat at p = (1/2, 1/2) (a zero step) and rises towards it from (0.4, 0)
    h = latent([0.0, 0.0], [0.4, 0.0])
    step = walk_step(f, h, alpha=1.0).flatten(1)
    assert step[0].tolist() == [0.0, 0.0]
    assert step[1].tolist() == pytest.approx([-R, R])


def test_target_walk_moves_until_f_predicts_the_target_then_stops():
    # target 1 for both. A starts at (0.2, 0) -> grid (0, 0), f says 0; one step of
    # alpha = 1 adds (-R, +R): (-0.71, 0.71) -> grid (-1, 1), f says 1: it stops there.
    # B starts at (0, 0.9) -> grid (0, 1), f already says 1: it never moves (a step from
    # there would reach (-1, 2)).
    seen = []
    out = latent_walk(f, torch.round, latent([0.2, 0.0], [0.0, 0.9]), steps=4, alpha=1.0,
                      target=torch.tensor([1, 1]),
                      on_step=lambda step, delta, walked: seen.append((step, delta, walked)))
    assert out.shape == (2, 2, 1, 1)
    assert out.flatten(1).tolist() == [[-1.0, 1.0], [0.0, 1.0]]
    # one step was taken (then every latent had its target); B's step was zero
    assert [s for s, _, _ in seen] == [0]
    assert seen[0][1].flatten().tolist() == pytest.approx([-R, R, 0.0, 0.0])
    assert torch.equal(seen[0][2], out)


def test_step_scale_multiplies_every_step():
    seen = []
    latent_walk(f, torch.round, latent([0.0, 0.0]), steps=1, alpha=0.5, step_scale=2.0,
                target=torch.tensor([1]), on_step=lambda s, d, w: seen.append(d))
    assert seen[0].flatten().tolist() == pytest.approx([-R, R])  # 2 x 0.5 x (-R, R)


def test_algorithm_1_snaps_back_and_eq_5_accumulates():
    # from (0.4, 0): Algorithm 1 (accumulate=False) differentiates at the start, where the
    # entropy rises towards the even split: (0.4 - 0.71, 0.71) -> grid (0, 1). Eq. 5
    # (accumulate=True) differentiates at the quantised start (0, 0), where the entropy is
    # flat: the step is zero and the latent stays at (0, 0).
    start = latent([0.4, 0.0])
    snapped = latent_walk(f, torch.round, start, steps=1, alpha=1.0)
    accumulated = latent_walk(f, torch.round, start, steps=1, alpha=1.0, accumulate=True)
    assert snapped.flatten().tolist() == [0.0, 1.0]
    assert accumulated.flatten().tolist() == [0.0, 0.0]
    # too short a step is undone by the grid under Algorithm 1 but adds up under Eq. 5:
    # towards class 1 from (0, 0) with alpha 0.3, each step is 0.3 * (-R, R) = (-0.21, 0.21)
    t = torch.tensor([1])
    short = latent_walk(f, torch.round, latent([0.0, 0.0]), steps=3, alpha=0.3, target=t)
    adds = latent_walk(f, torch.round, latent([0.0, 0.0]), steps=3, alpha=0.3, target=t,
                       accumulate=True)
    assert short.flatten().tolist() == [0.0, 0.0]
    assert adds.flatten().tolist() == [-1.0, 1.0]  # 3 x 0.21 = 0.64 rounds to 1


def test_alpha_twice_reaches_the_walk():
    # alpha 0.5 taken twice (Algorithm 1's reading) is a step of 0.25 * (-R, R)
    t = torch.tensor([1])
    seen = []
    latent_walk(f, torch.round, latent([0.0, 0.0]), steps=1, alpha=0.5, alpha_twice=True,
                target=t, on_step=lambda s, d, w: seen.append(d))
    assert seen[0].flatten().tolist() == pytest.approx([-0.25 * R, 0.25 * R])


def test_codebook_spacing():
    codebook = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [10.0, 10.0]])
    # nearest other: 1, sqrt(9 + 9) (to (0, 1)) = 4.24, 1, sqrt(49 + 36) = 9.22
    near = nearest_other_distance(codebook)
    assert near.tolist() == pytest.approx([1.0, math.sqrt(18), 1.0, math.sqrt(85)])
    # median of the used codes 0, 1, 3: sqrt(18), over sqrt(D = 2): 3
    assert spacing_scale(codebook, used=torch.tensor([0, 1, 3])) == pytest.approx(3.0)
