"""Does packing several seeds of one bench cell into batched arithmetic pay on this CPU?

Times, with one thread, the training step of G Colored MNIST MLPs (2352-100-100-100-10,
batch 256, Adam) three ways, interleaved and repeated so that all three see the same load:
  * ``separate``: G networks, each with its own batch (as G seeds draw different batches)
    and its own fused Adam step (what the bench does today, G runs);
  * ``stacked``: the same G networks as stacked weights (G x out x in), their G batches as
    one batched matrix product per layer (``baddbmm``) and one fused Adam step over the
    stacks (seed packing);
  * ``shared input``: G networks reading ONE batch (LfF's two models, DisEnt's two
    encoders), their first layers as one product against the concatenated weights
    (:func:`debiaskit.models.packed.forward_shared`, what ``pack`` does).
Prints milliseconds per step of all G networks and each packed variant's time over
``separate``'s.

    python benchmarks/pack_seeds.py [--groups 2,3] [--steps 60] [--repeats 5] [--out F.json]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from debiaskit import runs
from debiaskit.models import build_model
from debiaskit.models.packed import forward_shared
from debiaskit.precision import cpu_name

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", default="2,3")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    res = {"machine": cpu_name(), "torch": torch.__version__, "threads": 1, "batch": B}
    for g in (int(v) for v in args.groups.split(",")):
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
