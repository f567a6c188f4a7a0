"""Reading what older versions wrote: the one place that knows their layouts.

Checkpoints written before methods were ``nn.Module`` s hold ``networks`` (a state dict),
``optimizers`` and ``tables`` (per-sample tables as plain tensors) instead of one
``module`` state dict. (Run configs and stage keys written before a setting existed are
read with that setting's default: :func:`debiaskit.runs.with_defaults`.)
"""

from __future__ import annotations

import torch


def load_pre_module_state(method, state: dict) -> None:
    """Load a pre-module checkpoint's networks and tables into ``method`` (its optimisers
    are loaded by the caller, as for current checkpoints)."""
    method.networks.load_state_dict(state["networks"])
    with torch.no_grad():
        for key, table in state.get("tables", {}).items():
            for name, value in table.items():
                # a table module's buffer, a method buffer of the field's name (GroupDRO's
                # q), or one named after the table (DisEnt's steps)
                target = (getattr(method.tables[key], name) if key in method.tables
                          else getattr(method, name, None))
                if not isinstance(target, torch.Tensor):
                    target = getattr(method, key)
                target.copy_(torch.as_tensor(value))
