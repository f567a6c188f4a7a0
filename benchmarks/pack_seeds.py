"""Does packing several seeds of one bench cell into batched arithmetic pay on this machine?

By default times, with one thread on the CPU, the training step of G Colored MNIST MLPs
(2352-100-100-100-10, batch 256, Adam) three ways, interleaved and repeated so that all
three see the same load:
  * ``separate``: G networks, each with its own batch (as G seeds draw different batches)
    and its own fused Adam step (G separate runs);
  * ``stacked``: the same G networks as stacked weights (G x out x in), their G batches as
    one batched matrix product per layer (``baddbmm``) and one fused Adam step over the
    stacks (the arithmetic of seed packing; the trainer's own seed packing steps each
    seed's Adam on its slices, which rounds as a separate run);
  * ``shared input``: G networks reading ONE batch (LfF's two models, DisEnt's two
    encoders), their first layers as one product against the concatenated weights
    (:func:`debiaskit.models.packed.forward_shared`, what ``pack`` does).
Prints milliseconds per step of all G networks and each packed variant's time over
``separate``'s.

``--trainer`` times the library's real trainer instead (:func:`measure`): G seeds of each
of ``--methods`` (ERM, LfF) on Colored MNIST, trained by
:func:`debiaskit.train.train_seeds` packed (``--pack-seeds on``) and one after another
(``off``) in this process, on ``--device`` (auto: cuda if torch sees a GPU, else cpu),
interleaved and repeated; it reports each way's training seconds (the epochs' training
loops, all seeds together) and wall seconds (data, evaluation and run directories too),
packed over separate, and each seed's test accuracy both ways (equal up to float
rounding), with the ``machine`` record every run writes.

    python benchmarks/pack_seeds.py [--groups 2,3] [--steps 60] [--repeats 5] [--out F.json]
    python benchmarks/pack_seeds.py --trainer [--device auto] [--groups 2,3] [--epochs 1]
        [--methods erm,lff] [--train-subset N] [--repeats 2] [--data-dir DIR] [--out F.json]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from debiaskit import runs
from debiaskit.models import build_model
from debiaskit.models.packed import forward_shared
from debiaskit.precision import cpu_name
from debiaskit.train import RunConfig, machine, train_seeds, versions
from debiaskit.train.seed_pack import device_type

B, SHAPE, CLASSES = 256, (3, 28, 28), 10


def _adam(params):
    return torch.optim.Adam(params, lr=1e-3, fused=True)


def variants(g: int):
    """name -> one training step of ``g`` MLPs."""
    nets = [build_model("mlp", SHAPE, CLASSES) for _ in range(g)]
    opts = [_adam(n.parameters()) for n in nets]
    xs, ys = torch.rand(g, B, *SHAPE), torch.randint(0, CLASSES, (g, B))
    linears = [[m for m in n.modules() if isinstance(m, torch.nn.Linear)] for n in nets]
    weights = [torch.stack([ls[i].weight.detach() for ls in linears]).requires_grad_()
               for i in range(len(linears[0]))]
    biases = [torch.stack([ls[i].bias.detach() for ls in linears]).requires_grad_()
              for i in range(len(linears[0]))]
    stacked_opt = _adam(weights + biases)
    shared_opt = _adam([p for n in nets for p in n.parameters()])

    def separate():
        for net, opt, x, y in zip(nets, opts, xs, ys):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()

    def stacked():
        h = xs.flatten(2)
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
            if i < len(weights) - 1:
                h = h.relu()
        loss = F.cross_entropy(h.flatten(0, 1), ys.flatten(), reduction="none").view(g, B)
        stacked_opt.zero_grad(set_to_none=True)
        loss.mean(1).sum().backward()
        stacked_opt.step()

    def shared_input():
        shared_opt.zero_grad(set_to_none=True)
        sum(F.cross_entropy(out, ys[0]) for out in forward_shared(nets, xs[0])).backward()
        shared_opt.step()

    return {"separate": separate, "stacked": stacked, "shared input": shared_input}


def _seed_configs(method: str, g: int, device: str, epochs: int, train_subset, eval_subset,
                  data_dir, threads: int) -> list[RunConfig]:
    """G seeds of one Colored MNIST cell as the bench plans them (data seed = seed)."""
    return [RunConfig(method=method, seed=s, data_params={"conflict_ratio": 0.01, "seed": s},
                      epochs=epochs, train_subset=train_subset, eval_subset=eval_subset,
                      device=device, threads=threads, progress=False, data_dir=data_dir)
            for s in range(g)]


def measure(device: str = "auto", groups=(2, 3), epochs: int = 1, methods=("erm", "lff"),
            train_subset: int | None = None, eval_subset: int | None = 2000,
            repeats: int = 2, data_dir=None, threads: int = 1, log=print) -> dict:
    """Time seed packing in the real trainer on ``device``: for each method and each G in
    ``groups``, G seeds trained packed and one after another (``repeats`` times, the two
    ways alternating; the best of each kept), in temporary run directories. Returns
    ``{"machine", "versions", "settings", "results": {method: {"G=g": {...}}}}``, where each
    entry holds ``train_seconds`` and ``wall_seconds`` per way (all G seeds together),
    ``packed_over_separate`` for both, and ``test_unbiased`` per way and seed."""
    device = device_type(device)
    torch.set_num_threads(threads)
    settings = {"device": device, "groups": list(groups), "epochs": epochs,
                "methods": list(methods), "train_subset": train_subset,
                "eval_subset": eval_subset, "repeats": repeats, "threads": threads,
                "data": "colored_mnist, conflict_ratio 0.01, batch 256, model mlp"}
    out = {"machine": machine(device), "versions": versions(), "settings": settings,
           "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up: data cache, kernels, allocator
        train_seeds(_seed_configs("erm", 2, device, 1, 2000, 500, data_dir, threads),
                    [tmp / "warm0", tmp / "warm1"], mode="on")
        for method in methods:
            out["results"][method] = {}
            for g in groups:
                cfgs = _seed_configs(method, g, device, epochs, train_subset, eval_subset,
                                     data_dir, threads)
                best = {way: {"train_seconds": math.inf, "wall_seconds": math.inf}
                        for way in ("packed", "separate")}
                accuracy = {}
                for r in range(repeats):
                    for way, mode in (("packed", "on"), ("separate", "off")):
                        dirs = [tmp / f"{method}-{g}-{r}-{way}-{c.seed}" for c in cfgs]
                        t0 = time.perf_counter()
                        summaries = train_seeds(cfgs, dirs, mode=mode)
                        if device == "cuda":
                            torch.cuda.synchronize()
                        wall = time.perf_counter() - t0
                        trained = sum(s["train_seconds"] for s in summaries)
                        best[way]["train_seconds"] = min(best[way]["train_seconds"], trained)
                        best[way]["wall_seconds"] = min(best[way]["wall_seconds"], wall)
                        accuracy[way] = [s["metrics"]["test"]["unbiased"] for s in summaries]
                entry = {**best, "packed_over_separate": {
                    k: best["packed"][k] / best["separate"][k]
                    for k in ("train_seconds", "wall_seconds")}, "test_unbiased": accuracy}
                out["results"][method][f"G={g}"] = entry
                log(f"{method} G={g} on {device}: training {best['packed']['train_seconds']:.2f} s "
                    f"packed, {best['separate']['train_seconds']:.2f} s separate "
                    f"({entry['packed_over_separate']['train_seconds']:.2f}x); wall "
                    f"{entry['packed_over_separate']['wall_seconds']:.2f}x")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", default="2,3")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--trainer", action="store_true",
                    help="time the real trainer (train_seeds) packed and separate")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--methods", default="erm,lff")
    ap.add_argument("--train-subset", type=int)
    ap.add_argument("--data-dir")
    ap.add_argument("--out")
    args = ap.parse_args()
    groups = tuple(int(v) for v in args.groups.split(","))
    if args.trainer:
        res = measure(args.device, groups, args.epochs, tuple(args.methods.split(",")),
                      args.train_subset, repeats=args.repeats or 2, data_dir=args.data_dir)
        if args.out:
            runs.write_json(args.out, res)
        return
    args.repeats = args.repeats or 5
    torch.set_num_threads(1)
    torch.manual_seed(0)
    res = {"machine": cpu_name(), "torch": torch.__version__, "threads": 1, "batch": B}
    for g in groups:
        steps = variants(g)
        best = {name: float("inf") for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                step()  # warm-up
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                best[name] = min(best[name], (time.perf_counter() - t0) / args.steps * 1e3)
        res[f"G={g}"] = {"ms_per_step": best,
                         "over_separate": {k: v / best["separate"] for k, v in best.items()}}
        print(f"G={g}: " + ", ".join(f"{k} {v:.2f} ms ({v / best['separate']:.2f}x)"
                                     for k, v in best.items()) + f"; {cpu_name()}")
    if args.out:
        runs.write_json(args.out, res)


if __name__ == "__main__":
    main()
