"""Ways to see which shortcut a model took: learning curves, SiH's bias visualisation,
LAD's walks and bias probe, CF/F saliency, the gradient ratio (bias discovery is
:mod:`debiaskit.discover`)."""
