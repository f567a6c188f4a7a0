"""Replays of parity fixtures: one module ``replay_<name>.py`` per reference code.

Each module has ``replay(fixture, options) -> debiaskit.parity.Comparison``: it builds
debiaskit's own method from ``options`` (the manifest's ``options`` or its
``negative_control`` options), loads the fixture's initial weights, feeds the recorded
batches and random draws through the method's ``update`` on one thread, and compares
every recorded quantity step by step.
"""
