"""Naming the shortcut (debiaskit.discover.naming, .facts, .figures): the measured facts on
hand-made maps and images, the lines' thresholds, the page and discovery.json's ``naming``
section, and, on MNIST digits carrying a small class-specific mark (the stand-in of
benchmarks/naming_shortcut.py), that the class-mean attribution maps name the mark where
it is and that the same digits without the mark do not name it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from markupsafe import escape

from checks import benchmark
from debiaskit.data.dataset import BiasedDataset
from debiaskit.discover import DiscoverConfig, DiscoveryInput, run_discovery
from debiaskit.discover.clusters import feature_points
from debiaskit.discover.facts import (band_energies, band_names, colour_distance,
                                      mean_images, peak_region, region_share)
from debiaskit.discover.naming import (COLOUR_DISTANCE, POSITION_DISTANCE, class_line,
                                       cluster_line, colour_facts, separation)

#: The local-mark stand-in of benchmarks/naming_shortcut.py: its digits and marks.
STAND_IN = benchmark("naming_shortcut")
#: Top-left corner (row, column) of the 3 x 3 mark of each class in the stand-in.
MARKS = STAND_IN.MARKS


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------
# Measured facts on hand-made maps


def test_peak_region_and_its_share_on_a_hand_made_map():
    m = np.ones((10, 10))
    m[1:3, 6:9] = 10.0  # a block at rows 1-2, cols 6-8 ...
    m[2, 6] = 12.0  # ... holding the largest value
    m[3, 9] = 7.0  # touches the block diagonally: 8-connected, above half of 12
    m[7:9, 0:2] = 8.0  # above half of 12 too, but not connected to the block
    region = peak_region(m)
    assert region["rows"] == [1, 3] and region["cols"] == [6, 9]
    # box rows 1-3 x cols 6-9: 5 x 10 + 12 + 7 + 5 ones = 74; map: 190
    assert region["share"] == pytest.approx(74 / 190)
    assert region["area"] == pytest.approx(12 / 100)
    assert region["enrichment"] == pytest.approx((74 / 190) / 0.12)
    assert region_share(m, {"rows": [7, 8], "cols": [0, 1]})["share"] == pytest.approx(32 / 190)
    assert peak_region(np.zeros((4, 4))) is None
    flat = region_share(np.full((4, 4), 3.0), {"rows": [0, 1], "cols": [0, 1]})
    assert flat["share"] == pytest.approx(0.25) and flat["enrichment"] == pytest.approx(1.0)


def test_band_energies_of_gratings():
    r, c = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")

    def image(*waves):
        v = sum(np.cos(2 * np.pi * (fr * r + fc * c) / 28) for fr, fc in waves)
        v = 127.5 + 127.5 * v / len(waves)
        return torch.from_numpy(np.round(v).astype(np.uint8))[None, None]

    names = band_names()
    cases = {(0, 6): "periods of 4-8 px, vertical stripes",
             (6, 0): "periods of 4-8 px, horizontal stripes",
             (4, 4): "periods of 4-8 px, stripes rising to the right (/)",
             (4, -4): "periods of 4-8 px, stripes falling to the right (\\)",
             (0, 1): "periods over 16 px, vertical stripes",
             (0, 10): "periods under 4 px, vertical stripes"}
    for wave, name in cases.items():
        shares = band_energies(image(wave))[0]
        assert shares.sum() == pytest.approx(1.0)
        assert shares[names.index(name)] > 0.99, (wave, names[int(shares.argmax())])
    # a horizontal and a vertical grating of equal amplitude: equal energy (the real FFT's
    # half-plane counts the column frequencies once, so they are weighted twice)
    both = band_energies(image((6, 0), (0, 6)))[0]
    assert both[names.index(cases[(6, 0)])] == pytest.approx(0.5, abs=0.01)
    assert both[names.index(cases[(0, 6)])] == pytest.approx(0.5, abs=0.01)
    assert band_energies(torch.full((1, 3, 8, 8), 90, dtype=torch.uint8)).sum() == 0


def test_colour_distance_and_mean_images():
    assert colour_distance([1, 0, 0], [0, 1, 0]) == pytest.approx(np.sqrt(2 / 3))
    assert colour_distance([0.5], [0.2]) == pytest.approx(0.3)  # grey: brightness
    x = torch.tensor([0, 51, 102, 255], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    means = mean_images(x.contiguous(), np.array([1, 0, 1, 2]), 4)
    assert means[:, 0, 0, 0] == pytest.approx([0.2, 0.2, 1.0, 0.0])


def test_feature_points_have_unit_length():
    f = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, 2.0]])
    assert feature_points(f) == pytest.approx(np.array([[0.6, 0.8], [0.0, 0.0], [0.0, 1.0]]))


def test_separation_facts_on_hand_made_clusters():
    """Cluster 0's mean image is brighter by 0.4 in a 2 x 3 block; its images carry a
    horizontal grating the others do not; its colour is 0.12 from cluster 1's."""
    rest_mean = np.full((1, 8, 8), 0.2)
    mean_c = rest_mean.copy()
    mean_c[0, 5:7, 2:5] += 0.4
    mean_c[0, 0, 0] += 0.1  # a smaller difference elsewhere
    names = band_names()
    bands = np.zeros((6, len(names)))
    bands[:, 0] = 0.6
    bands[2:, 0], bands[2:, 1] = 0.7, 0.3  # the others: 70 % and 30 % in two bands
    bands[:2, names.index("periods of 4-8 px, horizontal stripes")] = 0.4
    position, band = separation(np.arange(2), np.arange(2, 6), mean_c, rest_mean, bands)
    assert position["rows"] == [5, 6] and position["cols"] == [2, 4]
    assert position["distance"] == pytest.approx(0.4) and position["brightness"] == \
        pytest.approx(0.4)
    assert position["stands_out"]
    assert band["band"] == "periods of 4-8 px, horizontal stripes" and band["stands_out"]
    assert band["cluster"] == 0.4 and band["rest"] == 0.0 and band["ratio"] is None
    faint = rest_mean + 0.24 * (mean_c > 0.5)
    assert not separation(np.arange(2), np.arange(2, 6), faint, rest_mean, bands)[0][
        "stands_out"]

    colour = np.zeros((6, 6))
    colour[:2, :3] = [0.5, 0.5, 0.5]
    colour[2:4, :3] = [0.5, 0.5, 0.5 + 0.12 * np.sqrt(3)]  # 0.12 from cluster 0
    colour[4:, :3] = [1.0, 0.0, 0.0]
    facts = colour_facts(colour, np.array([0, 0, 1, 1, 2, 2]), [0, 1, 2])
    fg = facts[0]["foreground"]
    assert fg["nearest"] == 1 and fg["distance"] == pytest.approx(0.12, abs=1e-4)
    assert fg["stands_out"] == (0.12 >= COLOUR_DISTANCE)
    assert facts[2]["foreground"]["distance"] == pytest.approx(
        float(colour_distance([1, 0, 0], [0.5, 0.5, 0.5])), abs=1e-4)
    assert not facts[0]["background"]["stands_out"]  # all backgrounds black


def test_name_clusters_compares_each_cluster_with_the_other_images():
    """Six images with a white 2 x 2 block on grey 0.2, six plain grey: the first cluster's
    mean image is brighter by 0.8 at the block, and the others have no spectral energy."""
    from torch import nn

    from debiaskit.discover.clusters import colour_statistics, summarise_clusters
    from debiaskit.discover.naming import name_clusters

    x = torch.full((12, 1, 6, 6), 51, dtype=torch.uint8)
    x[:6, :, 1:3, 3:5] = 255
    y = np.array([0, 1] * 6)
    clusters = np.repeat([0, 1], 6)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    data = BiasedDataset("blocks", x, torch.from_numpy(y), 2)
    colour = colour_statistics(x)
    summary = summarise_clusters(clusters, 2, y, y, np.arange(12), 4, 2, 0, colour,
                                 ["a", "b"], None)
    named = name_clusters(net, data, y, clusters, 2, colour, summary, 4,
                          np.random.default_rng(0), "cpu")
    first, second = (entry for entry, _ in named)
    assert first["position"]["rows"] == [1, 2] and first["position"]["cols"] == [3, 4]
    assert first["position"]["brightness"] == pytest.approx(0.8, abs=1e-4)
    assert second["position"]["brightness"] == pytest.approx(-0.8, abs=1e-4)
    assert first["band"]["rest"] == 0.0 and first["band"]["stands_out"]
    assert second["band"]["cluster"] == 0.0
    assert named[0][1]["mean_image"][0, 1, 3] == pytest.approx(1.0)
    assert first["images"] == 6 and "Cluster 0 (6 images, 50 % class a" in first["line"]


# ---------------------------------------------------------------------------------------
# The lines quote the numbers and keep to the thresholds


def _box(rows, cols, share, area):
    return {"rows": rows, "cols": cols, "share": share, "area": area,
            "enrichment": share / area}


def test_class_line_quotes_its_numbers():
    entry = {"class": "3", "images": 64, "confident": True, "min_probability": 0.93,
             "region": _box([12, 14], [24, 26], 0.41, 9 / 784),
             "top_ranked": {"images": 7, "region_share": 0.075,
                            "increase": _box([1, 3], [1, 3], 0.3, 9 / 784), "decrease": None}}
    line = class_line(entry, 100)
    assert line.startswith("Class 3: in its 64 confidently classified images (p >= 0.90), "
                           "41 % of the attribution falls in a 3 x 3 px region at rows "
                           "12-14, cols 24-26 (1.1 % of the image, 35.7 times its area "
                           "share): concentrated.")
    assert "In its 7 top-ranked images that region holds 7.5 %" in line
    assert "grows most in a 3 x 3 px region at rows 1-3, cols 1-3" in line
    wide = {**entry, "region": _box([4, 23], [4, 23], 0.9, 400 / 784), "top_ranked": None}
    line = class_line(wide, 100)
    assert "not concentrated" in line and "None of its images is among the top 100" in line
    # concentrated: at most 5 % of the image and at least 10 times its area share
    for share, area, said in ((0.5, 0.05, True), (0.49, 0.05, False), (0.6, 0.06, False)):
        line = class_line({**entry, "region": _box([0, 1], [0, 1], share, area)}, 100)
        assert (": concentrated." in line) == said, line


def test_cluster_line_states_only_facts_over_their_thresholds():
    summary = {"size": 526, "dominant_class": "3", "dominant_class_share": 99.0,
               "biased_accuracy": 98.9, "top_ranked": 9}

    def entry(position, colour, band_points):
        return {"cluster": 0, "region": _box([12, 14], [24, 26], 0.36, 9 / 784),
                "position": {"rows": [12, 14], "cols": [24, 26], "distance": position,
                             "brightness": position, "stands_out": position >= POSITION_DISTANCE},
                "colour": {side: {"cluster": [0.9, 0.1, 0.1], "nearest": 4,
                                  "nearest_colour": [0.5, 0.5, 0.5], "distance": colour,
                                  "stands_out": colour >= COLOUR_DISTANCE}
                           for side in ("foreground", "background")},
                "band": {"band": "periods of 4-8 px, vertical stripes", "cluster": 0.2,
                         "rest": 0.2 - band_points, "ratio": 0.2 / (0.2 - band_points),
                         "stands_out": band_points >= 0.05}}

    loud = cluster_line(entry(0.97, 0.3, 0.1), summary, 100)
    assert loud.startswith("Cluster 0 (526 images, 99 % class 3, biased accuracy 98.9 %, 9 "
                           "of the top 100): 36 % of the attribution falls in a 3 x 3 px "
                           "region at rows 12-14, cols 24-26")
    assert ("Its mean image differs most from the other images' in a 3 x 3 px region at "
            "rows 12-14, cols 24-26 (colour distance 0.97; brighter by 0.97)") in loud
    assert "mean foreground colour (0.90, 0.10, 0.10) is 0.30 from the nearest" in loud
    assert "2.0 times the other images' share of spectral energy" in loud
    quiet = cluster_line(entry(POSITION_DISTANCE - 0.01, COLOUR_DISTANCE - 0.01, 0.01),
                         summary, 100)
    assert "differs most" not in quiet and "mean foreground colour" not in quiet
    assert "spectral" not in quiet
    assert quiet.endswith("No position, colour or frequency band separates it from the "
                          "other images by the thresholds.")


# ---------------------------------------------------------------------------------------
# The whole discovery: page and discovery.json


def _dataset(x, y, b) -> DiscoveryInput:
    data = BiasedDataset("marks", torch.from_numpy(x), torch.from_numpy(y), int(y.max()) + 1,
                         b=torch.from_numpy(b), num_bias=int(y.max()) + 1)
    return DiscoveryInput(data, [str(i) for i in range(data.num_classes)],
                          {"dataset": "marks (test stand-in)"})


def test_page_and_json_hold_the_naming(tmp_path):
    """Two classes of noise images, each with its mark; a short discovery (no data)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    b = y.copy()
    b[[0, 1, 40, 41]] = 1 - y[[0, 1, 40, 41]]
    x = rng.integers(0, 60, (80, 1, 16, 16)).astype(np.uint8)
    x = STAND_IN.draw_marks(x, b, [(1, 1), (12, 12)])
    out = tmp_path / "found"
    record = run_discovery(_dataset(x, y, b), DiscoverConfig(epochs=5, batch_size=16), out,
                           "cpu")
    saved = json.loads((out / "discovery.json").read_text())
    assert saved["naming"] == json.loads(json.dumps(record["naming"]))
    naming = saved["naming"]
    assert saved["settings"]["cluster_on"] == "features"
    assert [c["class"] for c in naming["classes"]] == ["0", "1"]
    for c in naming["classes"]:
        assert set(c["region"]) == {"rows", "cols", "share", "area", "enrichment"}
        assert c["line"].startswith(f"Class {c['class']}: in its ")
    assert [c["cluster"] for c in naming["clusters"]] == \
        [c["cluster"] for c in saved["cluster_summary"]]
    for c in naming["clusters"]:
        assert {"region", "position", "colour", "band", "line"} <= set(c)
    page = (out / "discover.html").read_text()
    assert "What the biased model looks at" in page
    for c in naming["classes"] + naming["clusters"]:
        assert str(escape(c["line"])) in page
    assert len(re.findall(r'alt="class \d: mean attribution"', page)) == 2
    assert len(re.findall(r'alt="cluster \d: mean attribution"', page)) == 2


# ---------------------------------------------------------------------------------------
# The mark stand-in on real MNIST digits

N, CONFLICTING = 4000, 0.02


@pytest.fixture(scope="module")
def digits(mnist):
    """A seeded choice of N MNIST training digits, their classes and bias values (98 %
    their own class, the rest another class drawn uniformly)."""
    return STAND_IN.stand_in_digits(mnist, N, CONFLICTING, 0)


def _discover(inp, out):
    return run_discovery(inp, DiscoverConfig(epochs=5), out, "cpu")


@pytest.mark.slow
def test_mark_stand_in_class_maps_name_the_mark(digits, tmp_path):
    x, y, b = digits
    record = _discover(_dataset(STAND_IN.draw_marks(x, b), y, b), tmp_path / "mark")
    naming = record["naming"]
    for c in naming["classes"]:
        top, left = MARKS[int(c["class"])]
        region = c["region"]
        # the region named contains the whole mark and little else (measured: the mark)
        assert region["rows"][0] <= top and top + 2 <= region["rows"][1], c["line"]
        assert region["cols"][0] <= left and left + 2 <= region["cols"][1], c["line"]
        assert region["area"] <= 16 / 784, c["line"]
        assert c["concentrated"] and region["share"] >= 0.25, c["line"]  # measured 33-43 %
        assert f"rows {top}-{top + 2}, cols {left}-{left + 2}" in c["line"]
        # the top-ranked (mostly conflicting) images draw less attribution there
        assert c["top_ranked"]["region_share"] < region["share"], c["line"]
        less = c["top_ranked"]["decrease"]
        assert less["rows"][0] <= top + 2 and top <= less["rows"][1], c["line"]
        assert less["cols"][0] <= left + 2 and left <= less["cols"][1], c["line"]
    shares = [(c["region"]["share"], c["top_ranked"]["region_share"]) for c in naming["classes"]]
    assert np.mean([t for _, t in shares]) < 0.5 * np.mean([s for s, _ in shares])  # 0.3
    # clusters on the biased model's features, each named by its dominant class's mark
    assert record["settings"]["cluster_on"] == "features"
    summary = {s["cluster"]: s for s in record["cluster_summary"]}
    for c in naming["clusters"]:
        s = summary[c["cluster"]]
        if s["dominant_class_share"] < 90:
            continue
        top, left = MARKS[int(s["dominant_class"])]
        pos = c["position"]
        assert pos["stands_out"] and pos["brightness"] > 0.5, c["line"]
        assert pos["rows"] == [top, top + 2] and pos["cols"] == [left, left + 2], c["line"]
    assert record["evaluation"]["cluster_nmi_bias"] >= 0.8  # measured 0.96


@pytest.mark.slow
def test_digits_without_the_mark_do_not_name_it(digits, tmp_path):
    x, y, b = digits
    record = _discover(_dataset(x, y, b), tmp_path / "plain")
    for c in record["naming"]["classes"]:
        top, left = MARKS[int(c["class"])]
        region = c["region"]
        overlaps = (region["rows"][0] <= top + 2 and top <= region["rows"][1]
                    and region["cols"][0] <= left + 2 and left <= region["cols"][1])
        assert not overlaps, c["line"]
    for c in record["naming"]["clusters"]:
        pos = c["position"]
        assert pos is None or not any(
            pos["rows"][0] <= t + 2 and t <= pos["rows"][1]
            and pos["cols"][0] <= l + 2 and l <= pos["cols"][1] for t, l in MARKS), c["line"]
