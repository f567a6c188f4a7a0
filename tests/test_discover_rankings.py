"""The ranking variants of ``debiaskit discover`` (gce, trajectory, erm, jtt, amplified,
knn, sih), the label-free rule that chooses the primary one, and the metrics every ranking
is scored with (precision at K, AUROC), on hand-computed examples, a small folder of PNGs
and real Colored MNIST subsets."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from debiaskit.cli import main
from debiaskit.data.dataset import BiasedDataset
from debiaskit.discover import (DiscoverConfig, choose_primary, discover, load_folder_input,
                                load_protocol_input, score_ranking, separation,
                                split_separation)
from debiaskit.discover.biased import (ensemble_cross_entropy, jtt_scores, knn_scores,
                                       neighbour_disagreement, top_share_per_class,
                                       train_model)
from debiaskit.discover.ranking import rank
from test_discover import _fails_cleanly, write_folder

FAST = ["--threads", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(conflicting: list[bool]) -> BiasedDataset:
    """Blank images whose only use is their bias labels: class 0 everywhere, bias 1 where
    ``conflicting`` (bias 0, aligned, elsewhere)."""
    n = len(conflicting)
    return BiasedDataset(name="tiny", x=torch.zeros(n, 1, 2, 2, dtype=torch.uint8),
                         y=torch.zeros(n, dtype=torch.long), num_classes=2,
                         b=torch.tensor(conflicting, dtype=torch.long), num_bias=2)


def test_precision_at_k_and_auroc_by_hand():
    """Seven images, three conflicting (1, 2, 5), three of them tied at 0.5.

    Order (ties: lower index first): 0, 5, 1, 2, 3, 6, 4; the top K = 3 are 0 (aligned),
    5 and 1 (conflicting): precision at K = 2 / 3. AUROC over the 3 x 4 (conflicting,
    aligned) pairs, a tie counting 1/2: images 1 and 2 (0.5) beat 4 and 6, tie with 3,
    lose to 0: 2.5 each; image 5 (0.7) beats all but 0: 3; (2.5 + 2.5 + 3) / 12 = 2 / 3.
    Breaking the ties by the order instead would give 9 / 12, and precision at 100 (all
    seven) 3 / 7.
    """
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.7, 0.2])
    conflicting = [False, True, True, False, False, True, False]
    errors = np.array([True, True, False, False, False, True, False])
    ev = score_ranking(rank(scores), errors, tiny(conflicting), scores)
    assert rank(scores).tolist() == [0, 5, 1, 2, 3, 6, 4]
    assert ev["conflicting"] == 3 and ev["images"] == 7
    assert ev["precision_at_k"] == pytest.approx(100 * 2 / 3)
    assert ev["r_precision"] == ev["precision_at_k"]
    assert ev["auroc"] == pytest.approx(8 / 12)
    assert ev["precision_at_100"] == pytest.approx(100 * 3 / 7)
    assert ev["error_set"] == {"size": 3, "precision": pytest.approx(100 * 2 / 3),
                               "recall": pytest.approx(100 * 2 / 3)}
    # without scores, the AUROC of the order itself (no ties)
    assert score_ranking(rank(scores), errors, tiny(conflicting))["auroc"] == pytest.approx(
        9 / 12)
    # nothing to tell apart: no AUROC
    assert score_ranking(rank(scores), errors, tiny([True] * 7), scores)["auroc"] is None


def test_separation_by_hand():
    """[0, 10, 10, 11]: the split 0 | 10 10 11 leaves three of four images above (more
    than half) and 0 10 | 10 11 cuts between tied values, so the only split is
    0 10 10 | 11: w 3/4 and 1/4, means 20/3 and 11, between-side variance
    3/16 (13/3)^2 = 3.52083 over the total variance 20.1875 = 0.17441 (the unconstrained
    best, 0 | 10 10 11, would give 0.99175; the tied split 0.37461)."""
    got = separation(np.array([10.0, 0.0, 11.0, 10.0]))
    assert got["eta"] == pytest.approx(3 / 16 * (13 / 3) ** 2 / 20.1875)
    assert got["threshold"] == 11.0 and got["minority"] == 1
    # a tight majority and a far minority: close to 1; unscaled by a factor and a shift
    two = np.array([0.0] * 8 + [1.0] * 2)
    assert separation(two)["eta"] == pytest.approx(1.0)
    assert separation(3 * two + 7)["eta"] == pytest.approx(1.0)
    assert separation(np.ones(5)) == {"eta": 0.0, "threshold": None, "minority": 0}
    # a given split (jtt's error set): [0, 1, 2, 3] split {3} | rest: 3/16 * (3 - 1)^2 / 1.25
    high = np.array([False, False, False, True])
    assert split_separation(np.arange(4.0), high)["eta"] == pytest.approx(0.6)
    assert split_separation(np.arange(4.0), ~high)["eta"] == pytest.approx(0.6)
    assert split_separation(np.arange(4.0), np.zeros(4, bool))["eta"] == 0.0


def test_rule_chooses_the_model_whose_loss_is_bimodal():
    """One model's loss is a smooth skewed spread (exponential), the other's a tight low
    mass and a 2 % minority far above it: auto chooses the second, whichever is listed
    first; naming a ranking overrides the rule and says what the rule preferred."""
    rng = np.random.default_rng(0)
    skewed = rng.exponential(1.0, 1000)
    bimodal = np.concatenate([np.abs(rng.normal(0.05, 0.03, 980)), rng.normal(5, 0.5, 20)])
    values = {"gce": separation(skewed), "erm": separation(bimodal)}
    assert values["erm"]["eta"] > 0.9 > values["gce"]["eta"]
    assert 15 <= values["erm"]["minority"] <= 25
    record = choose_primary(values, "auto")
    assert record["chosen"] == "erm" and record["rule_prefers"] == "erm"
    assert "erm separates its loss best" in record["reason"] and "next gce" in record["reason"]
    assert record["values"] == {"gce": pytest.approx(values["gce"]["eta"], abs=1e-6),
                                "erm": pytest.approx(values["erm"]["eta"], abs=1e-6)}
    record = choose_primary(values, "gce")
    assert record["chosen"] == "gce" and "the rule would choose erm" in record["reason"]
    # a tie goes to the first ranking in RANKINGS order (gce before erm)
    assert choose_primary({"erm": values["erm"], "gce": values["erm"]}, "auto")["chosen"] == "gce"


def test_top_share_per_class_by_hand():
    """Within each class its share of highest scores (rounded), ties to the earlier image;
    not the highest over all images (class 1's scores are all below class 0's)."""
    scores = np.array([9.0, 1.0, 5.0, 5.0, 0.4, 0.1, 0.3, 0.2, 0.5, 8.0])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    picked = top_share_per_class(scores, y, 0.4)
    # class 0: 5 images -> 2 (9.0, 8.0); class 1: 5 images -> 2 (0.5, 0.4)
    assert np.flatnonzero(picked).tolist() == [0, 4, 8, 9]
    # class 0 at 0.6: 3 images, the tie 5.0 / 5.0 goes to the earlier (index 2)
    assert np.flatnonzero(top_share_per_class(scores, y, 0.6)).tolist() == [0, 2, 4, 6, 8, 9]


def test_ensemble_cross_entropy_is_of_the_mean_probability():
    """-log of the mean p_y over the models, not the mean of their cross-entropies: one
    model sure of the class (p 0.9) and one sure against it (p 0.1) give -log 0.5 = 0.693,
    where the mean cross-entropy would be 1.204."""
    a = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
    b = torch.tensor([[0.1, 0.9], [0.2, 0.8]], dtype=torch.float64)
    ce = ensemble_cross_entropy((a + b) / 2, torch.tensor([0, 1]))
    assert ce == pytest.approx([np.log(2), -np.log(0.8)], abs=1e-12)


def test_amplified_is_a_second_ensemble_without_the_first_ones_top_share(tmp_path):
    """The amplified ranking composed by hand from train_model: two GCE models score every
    image by -log of their mean p_y, the top quarter of each class is left out, two GCE
    models trained on the rest score every image the same way."""
    from dataclasses import replace

    from debiaskit.discover.biased import biased_outputs, train_amplified

    inp = load_folder_input(tmp_path / "images", write_folder(tmp_path / "images"))
    data = inp.data
    cfg = DiscoverConfig(epochs=2, batch_size=4, ensemble=2, amplify_drop=0.25,
                         amplify_epochs=3, seed=0)
    amp = train_amplified(data, cfg)

    def mean_p_score(nets):
        p = np.mean([np.exp(-biased_outputs(n, data, False)[0].double().numpy())
                     for n in nets], axis=0)
        return -np.log(p)

    first = mean_p_score([train_model(data, replace(cfg, seed=s), "gce").net for s in (0, 1)])
    y = data.y.numpy()
    dropped = np.zeros(len(y), dtype=bool)
    for c in (0, 1):
        members = np.flatnonzero(y == c)
        top = members[np.argsort(-first[members], kind="stable")][:round(0.25 * len(members))]
        dropped[top] = True
    assert amp.dropped.tolist() == dropped.tolist() and amp.info["dropped"] == 2 * 4
    kept = data.subset(torch.from_numpy(np.flatnonzero(~dropped)))
    second = mean_p_score([train_model(kept, replace(cfg, seed=s), "gce", epochs=3).net
                           for s in (0, 1)])
    assert amp.scores == pytest.approx(second, rel=1e-5, abs=1e-6)


def test_neighbour_disagreement_by_hand():
    """Cosine neighbours, the image itself excluded: image 2 sits among class 0, image 4
    among class 1. Image 3 lies far out along image 4's direction: by Euclidean distance
    image 4's nearest would be images 2 and 1 (0.5), and with itself counted image 0 would
    score 0."""
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 10.0], [0.1, 0.9]])
    y = torch.tensor([0, 0, 1, 1, 1])
    assert neighbour_disagreement(feats, y, 2).tolist() == [0.5, 0.5, 1.0, 0.0, 0.0]
    assert neighbour_disagreement(feats, y, 2, chunk=2).tolist() == [0.5, 0.5, 1.0, 0.0, 0.0]
    # k is cut to the 4 other images
    assert neighbour_disagreement(feats, y, 9).tolist() == [0.75, 0.75, 0.5, 0.5, 0.5]
    # equal disagreement is ordered by the cross-entropy, never past a higher one
    assert knn_scores(np.array([0.5, 0.5, 0.0]), np.array([1.0, 3.0, 1e9]), 2) == \
        pytest.approx([0.625, 0.6875, 0.25])


def test_jtt_scores_put_the_error_set_first():
    ce = np.array([0.1, 3.0, 0.9, 0.7, 50.0])
    errors = np.array([False, False, True, True, False])
    assert rank(jtt_scores(ce, errors)).tolist() == [2, 3, 4, 1, 0]


def test_erm_model_keeps_the_epoch_the_rule_prefers(tmp_path):
    """The ERM model stops at the epoch whose cross-entropy separates best: the network
    kept gives that epoch's separation again, and the GCE run records the loss
    trajectory (the mean cross-entropy over its visits)."""
    inp = load_folder_input(tmp_path / "images", write_folder(tmp_path / "images"))
    cfg = DiscoverConfig(epochs=3, batch_size=4, seed=0)
    erm = train_model(inp.data, cfg, "erm", epochs=4, stop_early=True)
    assert erm.epochs == 4 and len(erm.rule_by_epoch) == 4
    assert erm.stopped_at == 1 + int(np.argmax(erm.rule_by_epoch))
    assert erm.stopped_at < 4  # measured: epoch 3 (0.985) before epoch 4 (0.954)
    from debiaskit.discover.biased import biased_outputs

    ce = biased_outputs(erm.net, inp.data, False)[0].double().numpy()
    assert separation(ce)["eta"] == pytest.approx(erm.rule_by_epoch[erm.stopped_at - 1],
                                                  abs=1e-5)
    gce = train_model(inp.data, cfg, "gce")
    assert gce.stopped_at is None and gce.trajectory.shape == (len(inp.data),)
    assert bool((gce.trajectory > 0).all())


def test_ranking_options_bad_values_one_line_exit_2(capsys, tmp_path):
    folder = tmp_path / "images"
    labels = write_folder(folder)
    out = tmp_path / "out"
    for argv, says in (
            (["--rankings", "gce,loss"], "unknown ranking 'loss'"),
            (["--rankings", ","], "names no ranking"),
            (["--rankings", "gce,sih"], "add --sih"),
            (["--ranking", "best"], "unknown ranking 'best'"),
            (["--ranking", "erm", "--rankings", "gce,trajectory"], "not among the rankings"),
            (["--ranking", "sih"], "not among the rankings"),
            (["--erm-epochs", "0"], "--erm-epochs must be >= 1"),
            (["--ensemble", "0"], "--ensemble must be >= 1"),
            (["--amplify-epochs", "0"], "--amplify-epochs must be >= 1"),
            (["--amplify-drop", "0.5"], "--amplify-drop must be in (0, 0.5)"),
            (["--knn-k", "0"], "--knn-k must be >= 1"),
            (["--ranking", "knn"], "not among the rankings"),
            (["--sih", "--score", "sih", "--ranking", "gce"], "give one of them")):
        _fails_cleanly(capsys, tmp_path, [folder, "--labels", labels, *argv], says, out)
    assert not out.exists()


def test_folder_discovery_writes_every_ranking(capsys, tmp_path):
    """Without bias labels every ranking is still computed, written and given its rule
    value; --rankings and --ranking choose which and the primary."""
    folder = tmp_path / "images"
    labels = write_folder(folder)
    out = tmp_path / "found"
    code = main([str(a) for a in ("discover", folder, "--labels", labels, "--epochs", 2,
                                  "--rankings", "erm,jtt,gce,knn", "--ranking", "jtt",
                                  "--out", out, *FAST)])
    stdout = capsys.readouterr().out
    assert code == 0
    record = json.loads((out / "discovery.json").read_text())
    assert set(record["rankings"]) == {"gce", "erm", "jtt", "knn"}
    knn = record["rankings"]["knn"]
    assert knn["model"] == "gce" and knn["k"] == 20 and knn["predictions"] == record[
        "rankings"]["gce"]["predictions"]
    assert record["ranking"] == "jtt" and record["ranking_selection"]["mode"] == "jtt"
    jtt = record["rankings"]["jtt"]
    assert jtt["primary"] and jtt["evaluation"] is None and jtt["model"] == "erm"
    assert record["scores"] == jtt["scores"] and record["predictions"] == jtt["predictions"]
    y = load_folder_input(folder, labels).data.y.tolist()
    errors = [i for i, (p, c) in enumerate(zip(jtt["predictions"], y)) if p != c]
    assert record["error_set"] == errors and record["order"][:len(errors)] == sorted(
        errors, key=lambda i: (-jtt["scores"][i], i))
    assert set(record["ranking_selection"]["values"]) == {"gce", "erm", "jtt", "knn"}
    assert 1 <= jtt["stopped_at"] <= jtt["epochs"] == 3
    header = (out / "ranking.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["index", "score", "rank"]
    assert {"gce_score", "gce_rank", "erm_score", "erm_rank"} <= set(header)
    assert "jtt_score" not in header  # the primary's are score and rank
    assert "primary ranking: jtt" in stdout
    page = (out / "discover.html").read_text()
    assert "JTT error set (jtt) (primary)" in page and "early-stopped ERM (erm)" in page


SUBSET = 3000  # Colored MNIST training images, about 60 of them conflicting at 2 %


@pytest.mark.slow
def test_every_variant_on_colored_mnist(capsys, data_dir, tmp_path):
    """All five label-free rankings on 3,000 real Colored MNIST images at 2 %
    conflicting: each is scored with precision at K and AUROC, the primary is the rule's
    choice, the networks stay reachable, and the same seed gives the same rankings; the
    amplified ranking left the given share of each class out of its second stage."""
    out = tmp_path / "found"
    code = main([str(a) for a in ("discover", "--dataset", "colored_mnist",
                                  "--conflict-ratio", 0.02, "--train-subset", SUBSET,
                                  "--data-dir", data_dir, "--out", out, *FAST)])
    stdout = capsys.readouterr().out
    assert code == 0
    record = json.loads((out / "discovery.json").read_text())
    rankings = record["rankings"]
    assert set(rankings) == {"gce", "trajectory", "erm", "jtt", "amplified"}
    y = np.array(load_protocol_input("colored_mnist", data_dir, params={
        "conflict_ratio": 0.02}, train_subset=SUBSET, seed=0).data.y)
    assert rankings["amplified"]["dropped"] == sum(
        round(0.1 * int((y == c).sum())) for c in range(10))
    assert rankings["amplified"]["ensemble"] == 3 and rankings["amplified"]["epochs"] == 10
    selection = record["ranking_selection"]
    assert selection["mode"] == "auto"
    best = max(selection["values"], key=selection["values"].get)
    assert record["ranking"] == selection["chosen"] == best
    for name, r in rankings.items():
        ev = r["evaluation"]
        k = ev["conflicting"]
        assert 40 < k < 90
        assert ev["precision_at_k"] == ev["r_precision"]
        # far better than chance (P@K 1.7 %, AUROC 0.5) after 36 steps of training:
        # measured P@K 21.6-23.5 %, AUROC 0.738 (trajectory) to 0.841 (gce)
        assert ev["precision_at_k"] >= 10.0, (name, ev)
        assert ev["auroc"] >= 0.65, (name, ev)
        assert f"ranking {name:<10}" in stdout
    assert record["evaluation"]["auroc"] == rankings[record["ranking"]]["evaluation"]["auroc"]
    rows = list(csv.DictReader(open(out / "ranking.csv")))
    others = [n for n in rankings if n != record["ranking"]]
    assert all(f"{n}_rank" in rows[0] for n in others)
    page = (out / "discover.html").read_text()
    assert "precision at K" in page and "AUROC" in page and "(primary)" in page

    # the same discovery through the API: the networks are kept, and it is deterministic
    inp = load_protocol_input("colored_mnist", data_dir, params={"conflict_ratio": 0.02},
                              train_subset=SUBSET, seed=0)
    torch.set_num_threads(1)
    res = discover(inp, DiscoverConfig(), "cpu")
    assert res.networks["gce"] is res.networks["trajectory"] is not res.networks["erm"]
    assert res.networks["erm"] is res.networks["jtt"] and res.network is res.main.net
    assert res.networks["amplified"] not in (res.networks["gce"], res.networks["erm"])
    for name, r in res.rankings.items():
        assert [round(float(v), 6) for v in r.scores] == rankings[name]["scores"], name
    x = inp.data.x[:4].float() / 255
    assert res.network(x).shape == (4, 10)
