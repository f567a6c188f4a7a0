"""Debiasing methods behind one registry; import this package to register them all."""

from .base import METHODS, DataSpec, Method, RunContext, get_method, register
from .hparams import HParam
from . import cff, discovered, disent, erm, gba, groupdro, jtt, lad, lff, sih  # noqa: F401  (registration)

__all__ = ["METHODS", "DataSpec", "HParam", "Method", "RunContext", "get_method", "register"]
