"""LAD's training images next to their reconstructions (paper 000, Figure 4).

``debiaskit explain lad RUN_DIR`` reads the run's cached stages (the VQ-VAE and the decoded
walked images) and draws, for training images picked at random: the original ``x``, the
plain VQ-VAE reconstruction ``dec(quantise(enc(x)))`` and the LAD reconstruction
``x_delta = dec(h_delta)`` that ``f_strong`` trains on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import runs
from ..data.loader import as_float_images
from ..errors import DebiaskitError
from .images import save_image_grid


def explain_lad_run(run_dir, n: int = 24, seed: int = 0, out=None, data_dir=None) -> Path:
    """Write ``RUN_DIR/lad.png`` (or ``out``): rows original / reconstruction / LAD."""
    from ..train import RunConfig, prepare

    run_dir = Path(run_dir)
    stages = run_dir / "stages"
    if not (run_dir / runs.CONFIG).exists() or not (stages / "walk.json").exists():
        raise DebiaskitError(f"{run_dir} holds no LAD run whose walk stage has finished; "
                             "train one with --method lad first")
    stored = runs.read_json(run_dir / runs.CONFIG)
    cfg = RunConfig(**stored["run"], data_dir=data_dir or stored["runtime"].get("data_dir"))
    prep = prepare(cfg)
    train = prep.train
    walked = runs.load_torch(stages / "walk.pt")["images"]
    if len(walked) != len(train):
        raise DebiaskitError(f"{run_dir}: the walk stage holds {len(walked)} images but the "
                             f"run's training set has {len(train)}; the data changed")
    vqvae = prep.method.new_vqvae()
    vqvae.load_state_dict(runs.load_torch(stages / "vqvae.pt")["vqvae"])
    vqvae.eval()
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    x = as_float_images(train.x[pick])
    with torch.inference_mode():
        recon = vqvae.decode(vqvae.quantizer.quantize(vqvae.encode(x)))
    rows = (("original", x), ("VQ-VAE\nreconstruction", recon),
            ("LAD\n(walked)", as_float_images(walked[pick])))
    walk = runs.read_json(stages / "walk.json")["stats"]
    png = Path(out) if out else run_dir / "lad.png"
    return save_image_grid(
        rows, [f"y={train.y[i].item()}" for i in pick], png, cell_width=0.8, height=3.2,
        title=f"LAD on {cfg.dataset}: entropy of f {walk['entropy_before']:.2f} -> "
              f"{walk['entropy_after']:.2f} nats (max {walk['max_entropy']:.2f}); "
              f"{100 * walk['codes_changed_fraction']:.0f} % of codes changed")
