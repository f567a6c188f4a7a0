"""LAD's options, in three visibly separate tables: what the paper specifies or leaves
open (:data:`PAPER`), the walk-length rule that chooses ``alpha`` and ``walk_steps`` on
held-out training images when they are not given (:data:`RULE`), and the diagnostic's
hypothesis knobs and our variants, each of whose defaults keeps the paper's walk
(:data:`DIAGNOSTIC`; :mod:`debiaskit.explain.walk_diagnostic` measures them). Also the
settings that key each cached stage."""

from __future__ import annotations

from ...data.augment import AUGMENTATIONS
from ...models.vqvae import VQVAE
from ..hparams import HParam

#: Batch size of encoding, walking and decoding (no gradients to parameters: large batches).
WALK_BATCH = 1000
#: f's default SGD learning rate, chosen on training images with the walk diagnostic
#: (docs/lad-findings.md, "The diagnostic table over the new region").
F_LR = 0.01
WALK_STARTS = ("quantized", "continuous")
WALK_OBJECTIVES = ("entropy", "random_class")
F_OPTIMIZERS = ("adam", "sgd")
ALPHA_UNITS = ("std", "spacing")
#: Settings of each stage, in its cache key (a stage reruns when one of them changes).
VQ_SETTINGS = ("codebook_size", "code_dim", "vq_downsample", "vq_hidden", "vq_epochs", "vq_lr",
               "vq_batch", "commitment", "vq_decay", "vq_restart")
F_SETTINGS = ("f_hidden", "f_epochs", "f_lr", "f_optimizer", "f_momentum", "f_steps",
              "f_label_smoothing", "f_stop_accuracy", "f_stop_entropy", "f_l1")
#: Batches over which f's stopping rule averages its training accuracy and entropy.
F_STOP_WINDOW = 10
WALK_SETTINGS = ("walk_steps", "alpha", "alpha_twice", "walk_start", "walk_accumulate",
                 "walk_objective", "f_temperature", "walk_augment", "walk_jitter", "walk_views",
                 "alpha_units")
#: Settings of the walk-length rule (:mod:`debiaskit.methods.lad.rule`), in its stage's key.
RULE_SETTINGS = ("walk_rule_alphas", "walk_rule_max_steps", "walk_rule_images",
                 "walk_rule_entropy", "walk_rule_iou")
#: What a stage key written before an option existed implies for it, where that differs
#: from the option's current default (f was trained with Adam before SGD became the default).
IMPLIED_BEFORE = {"f_optimizer": "adam"}


#: The paper's settings and the choices it leaves open (VQ-VAE layout and training, f and
#: its constraint, the walk's step, start, accumulation, alpha applied twice, originals).
PAPER = {
    "codebook_size": HParam(20, "VQ-VAE codebook size (paper: 20 for MNIST, 2048 CIFAR)", 2,
                            65536),
    "code_dim": HParam(64, "length of each code (paper: 64)", 1, 4096),
    "vq_downsample": HParam(4, "VQ-VAE grid: image side / latent side (4: van den Oord's "
                            "7 x 7 for MNIST; 2: 14 x 14, patches small enough that a code "
                            "holds colour or stroke, not both)", 2, 4,
                            choices=VQVAE.DOWNSAMPLES),
    "vq_hidden": HParam(64, "VQ-VAE channels (van den Oord used 128; 64 for CPU)", 4, 1024),
    "vq_epochs": HParam(3, "VQ-VAE training epochs", 1, 1000),
    "vq_lr": HParam(1e-3, "VQ-VAE Adam learning rate", 0.0, 10.0),
    "vq_batch": HParam(128, "VQ-VAE batch size", 1, 65536),
    "commitment": HParam(0.25, "VQ-VAE commitment cost", 0.0, 100.0),
    "vq_decay": HParam(0.99, "EMA decay of the codebook", 0.0, 1.0),
    "vq_restart": HParam(1.0, "restart codes used less than this many times per batch "
                         "(EMA) at a random latent of the batch (0: never)", 0.0, 1e9),
    "f_hidden": HParam(100, "hidden units of the bias classifier f (paper: 100)", 1, 100000),
    "f_epochs": HParam(1, "training epochs of f", 1, 1000),
    "f_lr": HParam(F_LR, "learning rate of f", 0.0, 10.0),
    "f_optimizer": HParam("sgd", "optimiser of f: sgd (the paper's \"standard SGD\"), or "
                          "adam (learns the weak cue too and saturates f; use f_lr=0.001 "
                          "with it)", choices=F_OPTIMIZERS),
    "f_stop_accuracy": HParam(0.0, "the paper's \"we also constrain f\" as a stopping "
                              "rule: stop f once its training accuracy (%, mean of the "
                              "last 10 batches, before each step) reaches this (0: off)",
                              0.0, 100.0),
    "f_stop_entropy": HParam(0.0, "stop f once its mean predictive entropy on the last 10 "
                             "batches falls to this (nats; 0: off): f confident but "
                             "not saturated", 0.0, 100.0),
    "f_l1": HParam(0.0, "constrain f: L1 penalty, this times the sum of |weights| of "
                   "f's first layer, added to its loss (0: none)", 0.0, 100.0),
    "walk_steps": HParam(0, "walk steps (paper: BG MNIST 20, FG MNIST 7, CIFAR 4; 0: "
                         "chosen by the walk-length rule)", 0, 10000),
    "alpha": HParam(0.0, "walk step size (paper: 0.1 MNIST, 0.07 CIFAR; 0: chosen by "
                    "the walk-length rule, in code spacings)", 0.0, 100.0),
    "alpha_twice": HParam(False, "multiply by alpha again as Algorithm 1 does (Eq. 6 "
                          "already has it)"),
    "walk_start": HParam("quantized", "start of the walk: quantized | continuous",
                         choices=WALK_STARTS),
    "walk_accumulate": HParam(False, "Eq. 5: steps accumulate on the continuous latent "
                              "and f sees its quantisation (False: Algorithm 1, the "
                              "latent is replaced by its quantisation after every step)"),
    "with_originals": HParam(False, "train f_strong on the original images as well"),
}

#: The walk-length rule (:mod:`.rule`): used when ``alpha`` or ``walk_steps`` is 0.
RULE = {
    "walk_rule_alphas": HParam("0.05,0.1,0.2,0.3,0.5,1", "the walk-length rule's step "
                               "sizes to try, in code spacings (comma-separated)"),
    "walk_rule_max_steps": HParam(40, "the walk-length rule's longest walk (steps)", 1,
                                  10000),
    "walk_rule_images": HParam(1000, "training images the walk-length rule holds out "
                               "from f' and walks", 10, 10**7),
    "walk_rule_entropy": HParam(0.8, "the rule's end state: f' unsure, mean entropy at "
                                "least this share of log(classes)", 0.0, 1.0),
    "walk_rule_iou": HParam(0.8, "the rule keeps the digit: mean stroke IoU of the "
                            "walked and the start image, decoded, at least this",
                            0.0, 1.0),
}

#: Hypothesis knobs of the walk diagnostic and our variants (not the paper's); every
#: default leaves the paper's walk unchanged.
DIAGNOSTIC = {
    "f_momentum": HParam(0.0, "SGD momentum of f (f_optimizer=sgd)", 0.0, 1.0),
    "f_steps": HParam(0, "stop f's training after this many steps of batch 256 (0: all "
                      "f_epochs)", 0, 10**9),
    "f_label_smoothing": HParam(0.0, "label smoothing of f's cross-entropy (keeps f "
                                "from saturating)", 0.0, 1.0),
    "f_temperature": HParam(1.0, "the walk reads f's logits divided by this (above 1: "
                            "a saturated f gives the walk gradients)", 1e-3, 1e6),
    "walk_objective": HParam("entropy", "entropy: the paper's walk to maximal entropy of "
                             "f (Eq. 5); random_class (ours, not the paper's): towards a "
                             "random other class of f per image, stopping there",
                             choices=WALK_OBJECTIVES),
    "walk_augment": HParam("none", "augmentation of the image each walk starts from "
                           "(one of the training augmentations): images of a class no "
                           "longer start from the same code", choices=tuple(AUGMENTATIONS)),
    "walk_jitter": HParam(0.0, "Gaussian noise on each start latent, about this many code "
                          "spacings per latent position (0: none)", 0.0, 100.0),
    "walk_views": HParam(1, "walks per training image, each from its own draw of "
                         "walk_augment / walk_jitter; f_strong trains on all of them "
                         "(an epoch costs walk_views times as much)", 1, 64),
    "rewalk_every": HParam(0, "0: f_strong trains on every walk view each epoch; k: "
                           "on one view per epoch, the next view every k epochs (a "
                           "re-walk every k epochs, the walks computed once)", 0, 10**6),
    "alpha_units": HParam("std", "std: alpha in standard deviations of the gradient "
                          "(Eq. 6); spacing: each latent position moves about alpha "
                          "times the median distance between neighbouring codes",
                          choices=ALPHA_UNITS),
}
