"""G copies of one MLP architecture as stacked weights (seed packing).

:class:`StackedMLP` holds, for every parameter of G same-shaped MLPs (one per seed), one
tensor ``G x ...`` whose slice ``g`` is network ``g``'s parameter, and computes the G
networks on G batches (``G x B x ...``) with one batched matrix product per layer
(``baddbmm``). It is what lets several seeds of a small network train in one process
(:mod:`debiaskit.train.seed_pack`): each seed keeps its own weights (slice ``g``); an
optimiser over network ``g``'s slices (:meth:`StackedMLP.slices`) updates it as a
separate network's optimiser would. The outputs equal those of each network on its
own batch up to float rounding (on this repository's CPU, bit for bit: the backward pass
issues per network the products a ``Linear`` issues, :class:`_StackedLinear`).

The stacks are copies: :meth:`StackedMLP.write_to` copies them back into the G networks
(before evaluating or saving them); :meth:`StackedMLP.slices` are each network's
parameters as views of the stacks, for one optimiser per network (with the format and the
arithmetic of a separate run's).
"""

from __future__ import annotations

import torch
from torch import nn

from .packed import _scale, mlp_layers


class _StackedLinear(torch.autograd.Function):
    """G linear layers on G batches, ``alpha * x[g] @ weight[g]^T + bias[g]``, whose
    backward pass issues per slice the products a separate ``Linear`` (``addmm``) issues,
    with the same operand layouts: ``grad @ W`` for the input, ``grad^T @ x`` for the
    weight, then the ``alpha`` factor, and the bias gradient summed over the batch.
    (Autograd's own ``baddbmm`` backward computes the weight gradient as ``x^T @ grad``,
    which sums in another order; Adam turns such rounding differences in gradients that
    nearly cancel into differences of a whole learning rate.)"""

    @staticmethod
    def forward(ctx, x, weight, bias, alpha):
        ctx.save_for_backward(x, weight)
        ctx.alpha, ctx.bias_dtype = alpha, bias.dtype
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2), alpha=alpha)

    @staticmethod
    def backward(ctx, grad):
        # under autocast the gradient comes in the product's dtype (bf16): the products
        # run in it and each gradient returns in its input's dtype (no-ops in float32)
        x, weight = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad.bmm(weight.to(grad.dtype))
        grad_w = grad.transpose(1, 2).bmm(x.to(grad.dtype))
        if ctx.alpha != 1.0:
            grad_w = grad_w * ctx.alpha
            grad_x = None if grad_x is None else grad_x * ctx.alpha
        return (None if grad_x is None else grad_x.to(x.dtype), grad_w.to(weight.dtype),
                grad.sum(1).to(ctx.bias_dtype), None)


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
                h = _StackedLinear.apply(h, weight, bias, scale)
        return h

    @torch.no_grad()
    def write_to(self, modules) -> None:
        """Copy slice ``g`` of every stack into network ``modules[g]``'s parameters."""
        for g, module in enumerate(modules):
            for stack, p in zip(self.stacks, module.parameters()):
                p.copy_(stack[g])

    def slices(self, g: int) -> list[nn.Parameter]:
        """Network ``g``'s parameters as views of the stacks (in the order of
        ``modules[g].parameters()``): an optimiser over them updates slice ``g`` in place
        and sees exactly the tensors a separate network's optimiser sees (a fused
        optimiser over the whole stacks would vectorise other elements than over one
        network's tensors, which can round differently). :meth:`pass_gradients` gives
        them their gradients after a backward pass through :meth:`forward`."""
        return [nn.Parameter(stack.detach()[g]) for stack in self.stacks]

    def pass_gradients(self, g: int, views: list[torch.Tensor]) -> None:
        """Set the gradient of each of :meth:`slices` ``views`` of network ``g`` to slice
        ``g`` of its stack's gradient (None where the stack has none)."""
        for stack, view in zip(self.stacks, views):
            view.grad = None if stack.grad is None else stack.grad[g]
