"""LAD, Latent Adversarial Debiasing (Darlow et al.; LAD, Section 4, Figure 3).

A pipeline of cached stages (:mod:`debiaskit.stages`) before ordinary training:

1. ``vqvae``: a VQ-VAE ``g`` learns to reconstruct the biased training images (Eq. 2);
2. ``bias_classifier``: a constrained classifier ``f`` (one hidden layer of 100 units)
   learns the class from the flattened quantised latent ``h`` (Eq. 3) with plain SGD (the
   paper's "standard SGD"); being weak and fed the whole latent, it latches onto the
   easy-to-learn confounder;
2b. ``walk_rule`` (only when ``alpha`` or ``walk_steps`` is 0, the defaults): the
   walk-length rule of :mod:`debiaskit.methods.lad.rule` chooses them on held-out training
   images, as the paper's cross-validation did on its own latent scale;
3. ``walk``: every training latent walks towards maximal entropy of ``f``, re-quantised
   after each step (Algorithm 1, :mod:`debiaskit.methods.lad.walk`), and is decoded into
   a new training image ``x_delta = dec(h_delta)`` (Eq. 7).

The final classifier ``f_strong`` (the run's ``--model``; ResNet-20 in the paper) then
trains with cross-entropy on the decoded images, like Vanilla on the original ones (use the
run's ``augment`` for the paper's augmentation). The paper leaves open, and the options
below fix: the VQ-VAE layout and training (``vq_*``; van den Oord's layout, EMA codebook,
Adam 1e-3), how ``f`` is optimised and constrained (``f_*``), where the walk
starts (``walk_start``: the quantised latent ``f`` was trained on, or the encoder's
continuous output), whether steps accumulate on the continuous latent (Eq. 5) or are
undone by each re-quantisation (Algorithm 1; ``walk_accumulate``), whether ``alpha``
applies twice (``alpha_twice``) and whether ``f_strong`` also sees the original images
(``with_originals``).
``walk_objective="random_class"`` is our variant, not the paper's: each latent walks towards
a random other class of ``f`` (drawn per image from the run's seed) and stops there.

Options that test why a walk remaps a class's cue instead of removing it (each default
keeps the walk as before; :mod:`debiaskit.explain.walk_diagnostic` measures them):
``f_optimizer`` / ``f_momentum`` / ``f_steps`` / ``f_label_smoothing`` (an ``f`` that is
not saturated), ``f_temperature`` (the walk reads ``f``'s logits divided by it),
``walk_augment`` / ``walk_jitter`` / ``walk_views`` (walks that start from different
points for images of one class, several per image) and ``alpha_units`` (steps measured in
the codebook's spacing instead of gradient standard deviations).

Modules: :mod:`.options` (the paper's options, the rule's and the diagnostic's, apart),
:mod:`.method` (the stages and training), :mod:`.walk` (the latent walk), :mod:`.rule`
(the walk-length rule).
"""

from .method import LAD, bias_classifier, reconstruct, seeded, to_uint8
from .options import DIAGNOSTIC, PAPER, RULE

__all__ = ["DIAGNOSTIC", "LAD", "PAPER", "RULE", "bias_classifier", "reconstruct", "seeded",
           "to_uint8"]
