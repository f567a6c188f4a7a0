"""Bias discovery without bias labels: which training images conflict with the shortcut,
and what the shortcut is.

``debiaskit discover`` takes images and class labels only (a folder, or a built-in protocol
whose bias labels are hidden from every step and used only to score the result) and:

1. trains label-free biased models on all training images and ranks the images by each
   (:mod:`.variants`, ``rankings``; all by default): LfF's generalized cross-entropy model
   (Eq. 2, ``GCE = (1 - p_y^q) / q``, q = 0.7), which amplifies the easiest cue, ranked by
   its cross-entropy ``-log p_y`` (``gce``; with ``score=ema`` LfF's per-sample moving
   average of it) and by its loss trajectory, the cross-entropy at each visit averaged
   over the epochs (``trajectory``); JTT's ERM identification model, stopped early by the
   selection rule, ranked by its cross-entropy (``erm``) and by its error set first
   (``jtt``); with ``sih``, SiH's biased classifier (``sih``, below). Images a biased
   model cannot fit go against the shortcut; a ranking orders them by score, highest
   first (rank 0);
2. chooses the primary ranking (``ranking``; ``auto``: :mod:`.selection`'s label-free
   rule, the ranking whose per-image loss best separates a small high-loss minority from
   a low-loss majority by Otsu's separability). Its order and its model's error set are
   what ``debiaskit train --reweight-from`` reads; every ranking's network stays
   reachable (``Ranking.net``);
3. clusters what the biased model may rely on with k-means (scikit-learn; k = number of
   classes by default): ``features`` (default) clusters the primary ranking's model's
   penultimate features, each image's scaled to unit length; ``colour`` clusters per-image
   colour statistics, the mean RGB colour of the foreground pixels and of the background
   pixels, where a pixel is foreground when its brightness (mean of R, G, B in [0, 1]) is
   above a threshold (default per image: halfway between its darkest and brightest
   pixel). Each cluster reports its size, the biased model's training accuracy on it, its
   dominant class, its mean colours and example images; then names the shortcut
   (:mod:`.naming`, :mod:`.facts`, :mod:`.figures`): the primary model's attribution maps
   per class and per cluster, where they concentrate and what separates each cluster, in
   measured facts;
4. with hidden bias labels, scores every ranking: precision at K (K = the number of truly
   bias-conflicting images), AUROC, precision and recall at fixed k, average precision,
   the error set's precision and recall, and for the primary one the normalised mutual
   information (NMI) between the clusters and the true bias values (and, for contrast,
   the classes);
5. with ``sih`` (MNIST-size 28 x 28 images only, where SiH's MLP VAE fits), also trains
   SiH (:mod:`debiaskit.methods.sih`) label-free with the library's trainer into the run
   folder ``OUT/sih`` (selection "last", ``sih_epochs`` epochs, bias labels dropped), scores
   every training image by the cross-entropy of SiH's biased classifier (the head on its
   bias encoder's latent mean) as one more ranking, and renders SiH's bias visualisation
   (:mod:`debiaskit.explain.bias`: DeepFool on the bias latent, next to a DisEnt-style
   swap) on training images.

Everything but the SiH run is computed before anything is written; the output folder
(new or empty) is then written whole through a temporary folder renamed into place:
``discovery.json``, ``ranking.csv`` and ``discover.html`` (a self-contained page: images as
base64 PNG data URIs, no scripts, no external resources), plus ``labels.csv`` when the
classes came from sub-folders (so that ``debiaskit train --dataset folder`` can read the
same images) and, with ``sih``, ``sih_bias.png``. The SiH run is a normal run directory
written by the trainer while it trains: until the rest is written, ``OUT`` holds only
``sih/``, and the same command run again resumes it (or reuses it once finished); the
finished run is then moved into the temporary folder before the rename.
``debiaskit train --reweight-from DIR`` trains a debiased model from the result
(:mod:`debiaskit.methods.discovered`).


Modules: :mod:`.config` (settings, file names), :mod:`.inputs` (what is read),
:mod:`.biased` (training the GCE and ERM models), :mod:`.variants` (the rankings),
:mod:`.selection` (the rule choosing the primary one), :mod:`.ranking` (rankings and their
scores),
:mod:`.clusters` (colour statistics, k-means), :mod:`.sih` (the SiH sub-run),
:mod:`.output` (discovery.json, ranking.csv), :mod:`.page` (discover.html),
:mod:`.pipeline` (the whole discovery, written at once).
"""

from .config import (CLUSTER_FEATURES, LABELS, PAGE, RANKING, RANKINGS, SCORES, SIH_DIR,
                     SIH_PNG, DiscoverConfig, check_config, check_out_dir)
from .inputs import DiscoveryInput, load_folder_input, load_protocol_input
from .pipeline import discover, run_discovery, write_discovery
from .ranking import Discovery, Ranking, score_discovery, score_ranking
from .selection import choose_primary, separation, split_separation

__all__ = ["CLUSTER_FEATURES", "LABELS", "PAGE", "RANKING", "RANKINGS", "SCORES", "SIH_DIR",
           "SIH_PNG", "DiscoverConfig", "Discovery", "DiscoveryInput", "Ranking",
           "check_config", "check_out_dir", "choose_primary", "discover",
           "load_folder_input", "load_protocol_input", "run_discovery", "score_discovery",
           "score_ranking", "separation", "split_separation", "write_discovery"]
