"""G copies of one MLP architecture as stacked weights (seed packing).

:class:`StackedMLP` holds, for every parameter of G same-shaped MLPs (one per seed), one
tensor ``G x ...`` whose slice ``g`` is network ``g``'s parameter, and computes the G
networks on G batches (``G x B x ...``) with one batched matrix product per layer
(``baddbmm``). It is what lets several seeds of a small network train in one process
(:mod:`debiaskit.train.seed_pack`): each seed keeps its own weights (slice ``g``); an
elementwise optimiser (Adam, SGD) over the stacks updates every slice exactly as a
separate optimiser over network ``g`` would. The outputs equal those of each network on its
own batch up to float rounding.

The stacks are copies: :meth:`StackedMLP.write_to` copies them back into the G networks
(before evaluating or saving them); :meth:`StackedMLP.optimizer_state_for` and
:meth:`StackedMLP.load_optimizer_state` convert an optimiser's state over the stacks to and
from the G networks' own optimisers, so checkpoints keep the format of separate runs.
"""

from __future__ import annotations

import torch
from torch import nn

from .packed import _scale, mlp_layers


def stackable(modules) -> str | None:
    """None if ``modules`` can be stacked (one or more plain MLPs of identical parameter
    shapes, dtypes and input scaling), else why not."""
    layers = [mlp_layers(m) for m in modules]
    if not layers or any(ls is None for ls in layers):
        return "only plain MLPs (model mlp) can be stacked"
    shapes = {tuple((tuple(p.shape), p.dtype) for p in m.parameters()) for m in modules}
    scales = {_scale(ls[0]) for ls in layers}
    if len(shapes) > 1 or len(scales) > 1:
        return "the networks differ in shape, dtype or input scaling"
    return None


class StackedMLP(nn.Module):
    """The parameters of G same-shaped MLPs ``modules`` as G-stacked copies (in the order
    of ``modules[0].parameters()``), with their forward pass on G batches at once."""

    def __init__(self, modules) -> None:
        super().__init__()
        reason = stackable(modules)
        if reason is not None:
            raise ValueError(reason)
        self.size = len(modules)
        per_net = [list(m.parameters()) for m in modules]
        self.stacks = nn.ParameterList(
            nn.Parameter(torch.stack([ps[i].detach() for ps in per_net]).clone())
            for i in range(len(per_net[0])))
        index = {id(p): i for i, p in enumerate(per_net[0])}
        layers = mlp_layers(modules[0])
        # the layer plan: ("linear", weight index, bias index, input scale) or ("relu",)
        self.plan = [("linear", index[id(m.weight)], index[id(m.bias)], _scale(m))
                     if isinstance(m, nn.Linear) else ("relu",) for m in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``G x B x classes`` of the G networks on their batches ``x`` (``G x B x
        ...``, network ``g`` reads ``x[g]``)."""
        h = x.flatten(2)
        for step in self.plan:
            if step[0] == "relu":
                h = torch.relu(h)
            else:
                _, w, b, scale = step
                weight, bias = self.stacks[w], self.stacks[b]
                h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2), alpha=scale)
        return h

    @torch.no_grad()
    def write_to(self, modules) -> None:
        """Copy slice ``g`` of every stack into network ``modules[g]``'s parameters."""
        for g, module in enumerate(modules):
            for stack, p in zip(self.stacks, module.parameters()):
                p.copy_(stack[g])

    @torch.no_grad()
    def read_from(self, modules) -> None:
        """Copy network ``modules[g]``'s parameters into slice ``g`` of every stack."""
        for g, module in enumerate(modules):
            for stack, p in zip(self.stacks, module.parameters()):
                stack[g].copy_(p)

    def optimizer_state_for(self, opt: torch.optim.Optimizer, g: int,
                            template: torch.optim.Optimizer) -> dict:
        """The state dict that network ``g``'s own optimiser ``template`` (over
        ``modules[g].parameters()``) would hold after the steps ``opt`` (over the stacks)
        took: per-parameter tensors shaped like the stack are sliced (and copied, so a
        saved checkpoint holds one network's state only), scalars (Adam's step) copied;
        the learning rates are ``opt``'s."""
        state = opt.state_dict()
        out = template.state_dict()
        out["state"] = {
            i: {k: (v[g].clone() if torch.is_tensor(v) and v.dim() > 0
                    and v.shape == self.stacks[i].shape else
                    v.clone() if torch.is_tensor(v) else v)
                for k, v in per.items()}
            for i, per in state["state"].items()}
        for mine, theirs in zip(out["param_groups"], state["param_groups"]):
            mine.update({k: v for k, v in theirs.items() if k != "params"})
        return out

    def load_optimizer_state(self, opt: torch.optim.Optimizer, optimizers) -> None:
        """Load into ``opt`` (over the stacks) the states of the G networks' own optimisers
        ``optimizers``: per-parameter tensors stacked, scalars taken from network 0 (they
        are equal: every network took the same number of steps)."""
        states = [o.state_dict() for o in optimizers]
        if not states[0]["state"]:
            return  # no step taken yet
        merged = opt.state_dict()
        merged["state"] = {
            i: {k: (torch.stack([s["state"][i][k] for s in states])
                    if torch.is_tensor(v) and v.dim() > 0 else v)
                for k, v in per.items()}
            for i, per in states[0]["state"].items()}
        for mine, theirs in zip(merged["param_groups"], states[0]["param_groups"]):
            mine.update({k: v for k, v in theirs.items() if k != "params"})
        opt.load_state_dict(merged)
