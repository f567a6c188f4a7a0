"""debiaskit: train image classifiers that do not take the shortcut."""

__version__ = "0.1.0"
