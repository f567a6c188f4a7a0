"""Hyper-parameters: declarations (:class:`HParam`: default, doc, range or choices, search
distribution), the search distributions sweeps draw from (the shape of DomainBed's
``hparams_registry``), and the resolution of a user's values against the declarations
(:func:`resolve`). Declarations are a method's ``hparams`` table; values are what
:func:`resolve` returns (a method's ``hp``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Search:
    """A hyper-parameter's search distribution for sweeps (the shape of DomainBed's
    ``hparams_registry``): ``log_uniform`` (10 ** U(log10 low, log10 high)), ``uniform``
    (U(low, high)), ``int_uniform`` (an integer in [low, high]) or ``choice`` (one of
    ``values``, uniformly)."""

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    def sample(self, rng: np.random.RandomState):
        if self.kind == "log_uniform":
            return float(10 ** rng.uniform(np.log10(self.low), np.log10(self.high)))
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "int_uniform":
            return int(rng.randint(int(self.low), int(self.high) + 1))
        if self.kind == "choice":
            return self.values[int(rng.randint(len(self.values)))]
        raise ValueError(f"unknown search distribution {self.kind!r}")

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.values))
        return f"{self.kind.replace('_', '-')} in [{self.low:g}, {self.high:g}]"


def log_uniform(low: float, high: float) -> Search:
    return Search("log_uniform", low, high)


def uniform(low: float, high: float) -> Search:
    return Search("uniform", low, high)


def int_uniform(low: int, high: int) -> Search:
    return Search("int_uniform", low, high)


def choice(*values) -> Search:
    return Search("choice", values=tuple(values))


@dataclass(frozen=True)
class HParam:
    """A hyper-parameter: the paper's default, a one-line doc, its valid range or, for a
    named option, its valid ``choices``, and the distribution sweeps draw it from
    (``search``; None: not searched unless it is a learning rate or weight decay, which
    :func:`search_of` gives a standard distribution). ``authors_code`` marks an option
    that exists only to reproduce the authors' code where it differs from the paper
    (docs/parity.md); ``debiaskit methods`` says so."""

    default: float | int | bool | str
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    search: Search | None = None
    authors_code: bool = False


def search_of(name: str, hp: HParam) -> Search | None:
    """The search distribution of hyper-parameter ``name``: its own, else for learning
    rates (``lr``, ``*_lr``) log-uniform over a decade either side of the default and for
    ``weight_decay`` log-uniform in [1e-6, 1e-2] (DomainBed's ranges); None otherwise."""
    if hp.search is not None:
        return hp.search
    if (name == "lr" or name.endswith("_lr")) and isinstance(hp.default, float) \
            and hp.default > 0:
        return log_uniform(hp.default / 10, hp.default * 10)
    if name == "weight_decay":
        return log_uniform(1e-6, 1e-2)
    return None


def coerce(value, default):
    """``value`` as the type of ``default`` (bools also from "true"/"false"); None if it is not."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        return {"true": True, "1": True, "yes": True, "false": False, "0": False,
                "no": False}.get(text)
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        return None


def resolve(owner: str, declared: dict[str, HParam], given: dict) -> dict:
    """The values of ``declared`` hyper-parameters: defaults overridden by ``given``
    (coerced to the default's type); an unknown name, a value of the wrong type, out of
    range or not among the choices is a :class:`~debiaskit.errors.ConfigError` naming
    ``owner``."""
    unknown = set(given) - set(declared)
    if unknown:
        raise ConfigError(
            f"method {owner} has no hyper-parameter {', '.join(sorted(unknown))}; "
            f"it has: {', '.join(declared) or 'none'}")
    out = {}
    for key, hp in declared.items():
        value = coerce(given.get(key, hp.default), hp.default)
        if value is None:
            raise ConfigError(f"{owner}.{key}={given[key]!r} is not a "
                              f"{type(hp.default).__name__}")
        if (hp.low is not None and value < hp.low) or (hp.high is not None and value > hp.high):
            raise ConfigError(f"{owner}.{key}={value} is out of range "
                              f"[{hp.low}, {hp.high}]: {hp.doc}")
        if hp.choices is not None and value not in hp.choices:
            raise ConfigError(f"{owner}.{key}={value!r}: use one of "
                              f"{', '.join(map(str, hp.choices))}")
        out[key] = value
    return out


def optimiser_hparams(lr: float = 1e-3, weight_decay: float | None = 0.0,
                      of: str = "") -> dict[str, HParam]:
    """The ``lr`` and ``weight_decay`` declarations every method trains with (``of``: whose,
    e.g. "both models"; ``weight_decay=None`` declares only ``lr``)."""
    whose = f" of {of}" if of else ""
    out = {"lr": HParam(lr, f"learning rate{whose}", 0.0, 10.0)}
    if weight_decay is not None:
        out["weight_decay"] = HParam(weight_decay, f"weight decay{whose}", 0.0, 1.0)
    return out
