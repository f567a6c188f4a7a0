"""Tests for debiaskit.data.corruptions (the 19 CIFAR-10-C corruptions + "original"), on a
few dozen real CIFAR-10 training images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import color as skcolor

from debiaskit.data.corruptions import CORRUPTIONS, HENDRYCKS_ORDER, corrupt, frost_textures
from debiaskit.data.corruptions import _common, blur, digital, noise, textures, weather
from debiaskit.errors import ConfigError, DataError
from parity import require_data

#: The original code's severity constants, as numbers (its ``about`` says whence)
SEVERITIES_JSON = Path(__file__).parent / "data" / "cifar10c_severities.json"
RANDOM = [name for name, c in CORRUPTIONS.items() if not c.deterministic]
DETERMINISTIC = [name for name, c in CORRUPTIONS.items() if c.deterministic]
NEEDS_FROST = {"frost"}


@pytest.fixture(scope="module")
def cifar() -> np.ndarray:
    """24 real CIFAR-10 training images (uint8, N x 32 x 32 x 3)."""
    from debiaskit.data.sources import load_source
    src = load_source("cifar10", require_data("cifar10.npz").parent)
    return np.array(src.x_train[:24])


@pytest.fixture(scope="module")
def have_frost() -> bool:
    try:
        frost_textures()
    except DataError:
        return False
    return True


def _skip_without_frost(name, have_frost):
    if name in NEEDS_FROST and not have_frost:
        pytest.skip("frost textures not installed (pip install --no-deps imagecorruptions)")


def mad(a, b) -> float:
    return float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean())


# --------------------------------------------------------------------------- registry


def test_registry_names_and_flags():
    assert list(CORRUPTIONS) == list(HENDRYCKS_ORDER) + ["original"]
    assert len(HENDRYCKS_ORDER) == 19
    assert set(DETERMINISTIC) == {"defocus_blur", "zoom_blur", "brightness", "contrast",
                                  "pixelate", "jpeg_compression", "gaussian_blur",
                                  "saturate", "original"}
    for name, c in CORRUPTIONS.items():
        assert c.name == name and len(c.severities) == 5 and c.description
        assert c.family in {"noise", "blur", "weather", "digital", "none"}


def test_constants_match_the_original_severities():
    spec = json.loads(SEVERITIES_JSON.read_text())["corruptions"]
    assert set(spec) == set(HENDRYCKS_ORDER)
    for name in HENDRYCKS_ORDER:
        ours = CORRUPTIONS[name].severities
        if name == "zoom_blur":
            factors = [blur.zoom_factors(c) for c in ours]
            for got, want in zip(factors, spec[name]["severities_expanded"]):
                np.testing.assert_allclose(got, want, atol=1e-12)
            continue
        np.testing.assert_allclose(np.array(ours, dtype=float),
                                   np.array(spec[name]["severities"], dtype=float),
                                   rtol=0, atol=1e-12, err_msg=name)


def test_zoom_factor_counts_and_endpoints():
    factors = [blur.zoom_factors(c) for c in blur.ZOOM_BLUR]
    assert [len(f) for f in factors] == [7, 12, 16, 21, 26]
    assert all(f[0] == 1.0 for f in factors)
    np.testing.assert_allclose([f[-1] for f in factors], [1.06, 1.11, 1.15, 1.20, 1.25])


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_contract_and_severity(name, cifar, have_frost):
    """uint8 in, uint8 out, input untouched; severity 5 changes the image more than 1 for
    the corruptions whose strength grows with severity."""
    _skip_without_frost(name, have_frost)
    before = cifar.copy()
    out = {s: corrupt(cifar, name, s, 0) for s in (1, 5)}
    np.testing.assert_array_equal(cifar, before)
    for o in out.values():
        assert o.dtype == np.uint8 and o.shape == cifar.shape and o.flags.c_contiguous
    if name == "original":
        np.testing.assert_array_equal(out[1], cifar)
        np.testing.assert_array_equal(out[5], cifar)
        assert out[1] is not cifar
    elif name not in ("saturate", "elastic_transform"):
        assert mad(out[5], cifar) > mad(out[1], cifar) > 0, name


def test_saturate_direction(cifar):
    """Severities 1-2 desaturate (2 more), 3-5 oversaturate increasingly."""
    def mean_s(x):
        return float(skcolor.rgb2hsv(x / 255.)[..., 1].mean())
    s = {k: mean_s(corrupt(cifar, "saturate", k)) for k in range(1, 6)}
    clean = mean_s(cifar)
    assert s[2] < s[1] < clean < s[3] < s[4] < s[5]


def test_elastic_severity1_is_the_affine_warp_only(cifar):
    """At severity 1 alpha = sigma = 0: the output is the random affine warp of the first
    six draws (compared with OpenCV's own warpAffine, whose arithmetic changed in OpenCV 5,
    so within a few grey levels), and the warp never moves pixels by whole images."""
    x = cifar[:6]
    out = corrupt(x, "elastic_transform", 1, np.random.RandomState(3))
    rng = np.random.RandomState(3)
    jitter = CORRUPTIONS["elastic_transform"].severities[0][2]
    expected = []
    for img in x:
        shift = rng.uniform(-jitter, jitter, size=(3, 2)).astype(np.float32)
        rng.uniform(-1, 1, size=(32, 32)), rng.uniform(-1, 1, size=(32, 32))
        pts = np.float32([[26, 26], [26, 6], [6, 6]])
        m = cv2.getAffineTransform(pts, pts + shift)
        warped = cv2.warpAffine(img.astype(np.float32) / 255., m, (32, 32),
                                borderMode=cv2.BORDER_REFLECT_101)
        expected.append(np.uint8(np.clip(warped, 0, 1) * 255))
    expected = np.array(expected)
    assert np.abs(out.astype(int) - expected).max() <= 4
    assert mad(out, expected) < 0.5


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("name", RANDOM)
def test_seeded_reproducible_and_seed_sensitive(name, cifar, have_frost):
    _skip_without_frost(name, have_frost)
    x = cifar[:8]
    a = corrupt(x, name, 3, 11)
    b = corrupt(x, name, 3, np.random.RandomState(11))
    c = corrupt(x, name, 3, 12)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize("name", RANDOM)
def test_draws_follow_the_per_image_loop(name, cifar, have_frost):
    """Corrupting the batch in two calls with one RandomState equals one call: image i's
    draws follow image i-1's, as in the original per-image loop."""
    _skip_without_frost(name, have_frost)
    x = cifar[:10]
    whole = corrupt(x, name, 4, np.random.RandomState(5))
    rng = np.random.RandomState(5)
    parts = np.concatenate([corrupt(x[:3], name, 4, rng), corrupt(x[3:], name, 4, rng)])
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.parametrize("name", ["snow", "elastic_transform", "glass_blur", "zoom_blur"])
def test_chunking_does_not_change_results(name, cifar, monkeypatch):
    import debiaskit.data.corruptions as corruptions
    whole = corrupt(cifar[:10], name, 5, 3)
    monkeypatch.setattr(corruptions, "CHUNK", 4)
    np.testing.assert_array_equal(corrupt(cifar[:10], name, 5, 3), whole)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_ignore_the_seed(name, cifar):
    x = cifar[:8]
    a = corrupt(x, name, 4, 0)
    np.testing.assert_array_equal(a, corrupt(x, name, 4, 123))
    np.testing.assert_array_equal(a, corrupt(x, name, 4))


# --------------------------------------------------------------------------- hand checks


def test_contrast_by_hand():
    """((x/255 - per-channel mean) * c + mean) clipped, times 255, truncated."""
    img = np.array([[[10, 200, 0], [250, 40, 255]],
                    [[128, 128, 30], [0, 90, 255]]], dtype=np.uint8)
    for severity, c in zip(range(1, 6), (0.75, 0.5, 0.4, 0.3, 0.15)):
        out = corrupt(img[None], "contrast", severity)[0]
        x = img / 255.
        for ch in range(3):
            mean = x[..., ch].mean()
            for i in range(2):
                for j in range(2):
                    v = min(max((x[i, j, ch] - mean) * c + mean, 0.0), 1.0) * 255
                    assert out[i, j, ch] == int(v)  # int() truncates, as np.uint8 does
    # truncation, not rounding: some value must have a fractional part >= 0.5
    x = img / 255.
    vals = ((x - x.mean(axis=(0, 1))) * 0.15 + x.mean(axis=(0, 1))) * 255
    assert np.any(vals - np.floor(vals) >= 0.5)


def test_brightness_by_hand_with_skimage_hsv():
    img = np.array([[[255, 0, 0], [10, 20, 30], [200, 200, 200], [0, 0, 0], [90, 250, 7]]],
                   dtype=np.uint8)
    for severity, c in zip(range(1, 6), (0.05, 0.1, 0.15, 0.2, 0.3)):
        out = corrupt(img[None], "brightness", severity)[0]
        for j in range(img.shape[1]):
            hsv = skcolor.rgb2hsv(img[0, j][None, None] / 255.)
            hsv[..., 2] = min(hsv[0, 0, 2] + c, 1.0)
            want = np.uint8(np.clip(skcolor.hsv2rgb(hsv), 0, 1) * 255)[0, 0]
            np.testing.assert_array_equal(out[0, j], want)
    assert np.all(corrupt(img[None], "brightness", 5)[0, 0, 3] == int(0.3 * 255))  # black


def test_impulse_noise_uses_legacy_choice_draws(cifar):
    """Per image: choice([True, False], p=[c, 1-c]) then choice(p=[.5, .5]) on the legacy
    generator (scikit-image 0.13-0.15); hits become 255 or 0."""
    x = cifar[:4]
    c = noise.IMPULSE_NOISE[4]
    out = corrupt(x, "impulse_noise", 5, np.random.RandomState(9))
    rng = np.random.RandomState(9)
    for img, got in zip(x, out):
        flipped = rng.choice([True, False], size=img.shape, p=[c, 1 - c])
        salted = rng.choice([True, False], size=img.shape, p=[0.5, 0.5])
        want = img.copy()
        want[flipped & salted] = 255
        want[flipped & ~salted] = 0
        np.testing.assert_array_equal(got, want)


def test_glass_shuffle_copies_from_up_left_only():
    """Targets get their up/left/up-left neighbour's old value; sources keep theirs (a
    copy, not a swap); rows and columns 0-1 are never targets."""
    rng = np.random.RandomState(0)
    x = np.arange(2 * 32 * 32 * 3, dtype=np.int64).reshape(2, 32, 32, 3) % 251
    x = x.astype(np.uint8)
    draws = rng.randint(-1, 1, size=(2, 30, 30, 2))
    assert set(np.unique(draws)) == {-1, 0}
    out = blur.glass_shuffle(x, draws)
    np.testing.assert_array_equal(out[:, :2], x[:, :2])
    np.testing.assert_array_equal(out[:, :, :2], x[:, :, :2])
    for n in range(2):
        for i, h in enumerate(range(31, 1, -1)):
            for j, w in enumerate(range(31, 1, -1)):
                dx, dy = draws[n, i, j]
                np.testing.assert_array_equal(out[n, h, w], x[n, h + dy, w + dx])
    # the original statement on numpy views, literally, gives the same
    lit = x.copy()
    for n in range(2):
        for i, h in enumerate(range(31, 1, -1)):
            for j, w in enumerate(range(31, 1, -1)):
                dx, dy = draws[n, i, j]
                hp, wp = h + dy, w + dx
                lit[n, h, w], lit[n, hp, wp] = lit[n, hp, wp], lit[n, h, w]
    np.testing.assert_array_equal(out, lit)


def test_glass_blur_equals_the_literal_loop(cifar):
    x = cifar[:2]
    for severity in (1, 4):
        sigma, delta, passes = blur.GLASS_BLUR[severity - 1]
        out = corrupt(x, "glass_blur", severity, np.random.RandomState(4))
        rng = np.random.RandomState(4)
        want = []
        for img in x:
            y = np.uint8(ndi.gaussian_filter(img / 255., (sigma, sigma, 0), mode="nearest") * 255)
            for _ in range(passes):
                for h in range(32 - delta, delta, -1):
                    for w in range(32 - delta, delta, -1):
                        dx, dy = rng.randint(-delta, delta, size=(2,))
                        y[h, w], y[h + dy, w + dx] = y[h + dy, w + dx], y[h, w]
            blurred = ndi.gaussian_filter(y / 255., (sigma, sigma, 0), mode="nearest")
            want.append(np.uint8(np.clip(blurred, 0, 1) * 255))
        np.testing.assert_array_equal(out, np.array(want))


@pytest.mark.parametrize("factor", [1.0, 1.06, 1.13, 1.25, 1.75, 2.25])
def test_clipped_zoom_is_scipy_zoom(factor, cifar):
    x = (cifar[:3] / 255.).astype(np.float32)
    got = _common.clipped_zoom(x, factor)
    ch = int(math.ceil(32 / factor))
    top = (32 - ch) // 2
    for img, g in zip(x, got):
        z = ndi.zoom(img[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
        t = (z.shape[0] - 32) // 2
        np.testing.assert_array_equal(g, z[t:t + 32, t:t + 32])


def test_motion_blur_kernel_and_direction():
    for (radius, sigma), taps in zip(blur.MOTION_BLUR, (13, 13, 13, 17, 19)):
        w = _common.motion_blur_weights(radius, sigma)
        assert len(w) == taps and abs(w.sum() - 1) < 1e-12 and np.all(np.diff(w) < 0)
    # one-sided: at angle 0, out(x) = sum_i w_i in(x + i), so a bright dot only spreads left
    img = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    img[0, 16, 20] = 255
    out = _common.im_motion_blur(img, 6, 2, np.array([0.0]))[0]
    ys, xs = np.nonzero(out[..., 0])
    assert set(ys) == {16} and xs.max() == 20 and xs.min() < 20
    # at 90 degrees the trail runs up the image instead
    out = _common.im_motion_blur(img, 6, 2, np.array([90.0]))[0]
    ys, xs = np.nonzero(out[..., 0])
    assert set(xs) == {20} and ys.max() == 16 and ys.min() < 16


def test_motion_blur_matches_imagemagick_on_a_ramp():
    """A horizontal ramp 0, 8, 16, ... blurred at radius 1, sigma 10, angle 0 came out of
    ImageMagick 6.9.11 Q16 (via Wand and PNG) as 7, 15, 23, ...: the weighted means
    (7.95, 15.95, ...) truncated, not rounded."""
    ramp = np.tile((np.arange(32, dtype=np.uint8) * 8)[None, :, None], (4, 1, 3))[None]
    out = _common.im_motion_blur(ramp, 1, 10, np.array([0.0]))[0]
    np.testing.assert_array_equal(out[0, :8, 0], [7, 15, 23, 31, 39, 47, 55, 63])


def test_motion_blur_batched_equals_per_pixel_sum(cifar):
    x = cifar[:3]
    angles = np.array([-44.0, 3.0, 37.5])
    got = _common.im_motion_blur(x, 9, 2.5, angles)
    w = _common.motion_blur_weights(9, 2.5)
    for img, a, g in zip(x, angles, got):
        acc = np.zeros(img.shape)
        for i, wi in enumerate(w):
            ox = math.ceil(i * math.cos(math.radians(a)) - 0.5)
            oy = math.ceil(i * math.sin(math.radians(a)) - 0.5)
            rows = np.clip(np.arange(32) + oy, 0, 31)
            cols = np.clip(np.arange(32) + ox, 0, 31)
            acc += wi * (img[rows][:, cols] * 257.0)
        np.testing.assert_array_equal(g, (np.floor(acc + 0.5) // 257).astype(np.uint8))


def test_warp_affine_cv4_identity_and_shift(cifar):
    """The OpenCV 4.x warp: the identity returns the image; a shift by one whole pixel to
    the right mirrors column 1 into column 0 (reflect-101); close to OpenCV 5's warp."""
    x = (cifar[:2] / 255.).astype(np.float32)
    eye = np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (2, 1, 1))
    np.testing.assert_array_equal(digital.warp_affine_cv4(x, eye), x)
    shift = eye.copy()
    shift[:, 0, 2] = 1.0
    out = digital.warp_affine_cv4(x, shift)
    np.testing.assert_array_equal(out[:, :, 1:], x[:, :, :-1])
    np.testing.assert_array_equal(out[:, :, 0], x[:, :, 1])
    m = cv2.getAffineTransform(np.float32([[26, 26], [26, 6], [6, 6]]),
                               np.float32([[27.3, 25.1], [25.2, 7.7], [5.1, 6.4]]))
    ours = digital.warp_affine_cv4(x[:1], m[None])[0]
    theirs = cv2.warpAffine(x[0], m, (32, 32), borderMode=cv2.BORDER_REFLECT_101)
    assert np.abs(ours - theirs).max() < 0.02


def test_scipy15_bilinear_inside_and_at_the_border(cifar):
    """Inside the image it is map_coordinates(order=1); past the edge it follows SciPy <
    1.6: -0.25 -> 0.75*v[1] + 0.25*v[0], and 31.25 -> 0.75*v[31] + 0.25*v[30]."""
    x = (cifar[:2] / 255.).astype(np.float32)
    rng = np.random.RandomState(0)
    rows = rng.uniform(0, 31, size=(2, 32, 32))
    cols = rng.uniform(0, 31, size=(2, 32, 32))
    got = digital.map_bilinear_scipy15(x, rows, cols)
    for k in range(3):
        want = ndi.map_coordinates(x[..., k], [np.broadcast_to(np.arange(2.)[:, None, None],
                                                               rows.shape), rows, cols],
                                   order=1, mode="reflect")
        np.testing.assert_allclose(got[..., k], want, rtol=0, atol=1e-6)
    rows = np.full((2, 32, 32), 5.0)
    cols = np.full((2, 32, 32), -0.25)
    cols[:, :, 1] = 31.25
    got = digital.map_bilinear_scipy15(x, rows, cols)
    np.testing.assert_allclose(got[:, 0, 0], 0.75 * x[:, 5, 1] + 0.25 * x[:, 5, 0], atol=1e-6)
    np.testing.assert_allclose(got[:, 0, 1], 0.75 * x[:, 5, 31] + 0.25 * x[:, 5, 30], atol=1e-6)


def test_jpeg_backend(cifar):
    backend = digital.jpeg_backend()
    assert backend.startswith(("libjpeg 9d", "Pillow "))
    if backend.startswith("Pillow "):  # the plain Pillow round trip
        import io
        from PIL import Image
        out = corrupt(cifar[:3], "jpeg_compression", 5)
        for img, got in zip(cifar[:3], out):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=40)
            np.testing.assert_array_equal(got, np.asarray(Image.open(buf)))


def test_plasma_maps_are_normalised():
    maps = weather.plasma_fractal(np.random.RandomState(0), 3, 2.0)
    assert maps.shape == (3, 32, 32)
    assert np.all(maps.min(axis=(1, 2)) == 0) and np.all(maps.max(axis=(1, 2)) == 1)


def test_defocus_kernels():
    sizes = [digital_kernel.shape for digital_kernel in
             (blur.defocus_kernel(*c) for c in blur.DEFOCUS_BLUR)]
    assert sizes == [(3, 3), (3, 3), (3, 3), (5, 5), (5, 5)]
    k1 = blur.defocus_kernel(0.3, 0.4)
    g = cv2.getGaussianKernel(3, 0.4)
    np.testing.assert_allclose(k1, g @ g.T, atol=1e-6)


# --------------------------------------------------------------------------- frost


def test_frost_textures(have_frost):
    if not have_frost:
        pytest.skip("frost textures not installed (pip install --no-deps imagecorruptions)")
    tex = frost_textures()
    assert [t.shape for t in tex] == [(600, 900, 3), (315, 560, 3), (315, 560, 3),
                                      (350, 527, 3), (495, 660, 3)]
    assert all(t.dtype == np.uint8 and not t.flags.writeable for t in tex)
    np.testing.assert_array_equal(tex[1], tex[2])  # frost2 and frost3: same pixels
    small = textures.resized_frost_textures()
    assert [t.shape[:2] for t in small] == [(120, 180), (63, 112), (63, 112), (70, 105),
                                            (99, 132)]


def test_frost_texture_lookup_errors(have_frost, tmp_path, monkeypatch):
    if not have_frost:
        pytest.skip("frost textures not installed")
    good = {p.name: p for p in textures._paths()}
    for name in textures.FROST_FILES:
        (tmp_path / name).write_bytes(good[name].read_bytes())
    monkeypatch.setenv(textures.FROST_ENV_VAR, str(tmp_path))
    assert all(p.parent == tmp_path for p in textures._paths())  # first place wins
    frost_textures()
    (tmp_path / "frost4.jpg").write_bytes(good["frost4.jpg"].read_bytes() + b"x")
    with pytest.raises(DataError, match="frost4.jpg.*sha256.*imagecorruptions") as err:
        frost_textures()
    assert "\n" not in str(err.value)
    monkeypatch.setattr(textures, "frost_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(DataError, match="frost1.png not found.*<data dir>/frost"):
        frost_textures()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call, match", [
    (lambda x: corrupt(x, "fgsm", 1, 0), "unknown corruption 'fgsm'"),
    (lambda x: corrupt(x, "snow", 0, 0), "severity must be a Hendrycks severity 1..5"),
    (lambda x: corrupt(x, "snow", 6, 0), "severity must be"),
    (lambda x: corrupt(x, "snow", 2.0, 0), "severity must be"),
    (lambda x: corrupt(x, "snow", True, 0), "severity must be"),
    (lambda x: corrupt(x / 255., "contrast", 1), "must be uint8"),
    (lambda x: corrupt(x[0], "contrast", 1), r"shape \(N, H, W, 3\)"),
    (lambda x: corrupt(x[..., :2], "contrast", 1), r"shape \(N, H, W, 3\)"),
    (lambda x: corrupt(x.tolist(), "contrast", 1), "numpy uint8 array"),
    (lambda x: corrupt(np.zeros((2, 28, 28, 3), np.uint8), "glass_blur", 1, 0), "32x32"),
    (lambda x: corrupt(x, "snow", 1), "rng must be an int seed or a np.random.RandomState"),
    (lambda x: corrupt(x, "snow", 1, np.random.default_rng(0)), "rng must be"),
    (lambda x: corrupt(x, "snow", 1, -1), "seed must be between"),
])
def test_errors(call, match, cifar):
    with pytest.raises(ConfigError, match=match) as err:
        call(cifar[:2])
    assert "\n" not in str(err.value)


def test_empty_batch_and_other_sizes(cifar):
    empty = np.zeros((0, 32, 32, 3), np.uint8)
    assert corrupt(empty, "snow", 5, 0).shape == (0, 32, 32, 3)
    big = np.repeat(np.repeat(cifar[:2], 2, axis=1), 2, axis=2)  # 64 x 64
    assert corrupt(big, "gaussian_noise", 2, 0).shape == big.shape
