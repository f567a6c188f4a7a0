"""``debiaskit explain KIND``: what shortcut a model took, one sub-command per kind
(learning curves, SiH's bias visualisation, LAD's walk and its diagnostic, CF/F saliency,
the gradient ratio)."""

from __future__ import annotations

from ..errors import ConfigError
from .options import DATA_DIR, EXPLAIN_DATA_DIR, Parser, pairs

NAME = "explain"
#: Sub-commands whose --out names a file (the PNG, its JSON beside it), with an example
#: name; the others' --out is a folder.
OUT_FILES = {"curves": "curves.png", "bias": "bias.png", "lad": "lad.png",
             "saliency": "saliency.png"}


def add_parser(sub) -> None:
    e = sub.add_parser(NAME, help="show which shortcut a model took")
    esub = e.add_subparsers(dest="explain_command", required=True, parser_class=Parser)
    curves = esub.add_parser("curves", help="aligned vs conflicting accuracy per epoch (PNG)")
    curves.add_argument("run_dir", help="run directory (the --out of 'debiaskit train')")
    curves.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    bias = esub.add_parser("bias", help="SiH's latent DeepFool bias visualisation of a sih "
                           "run, next to DisEnt-style swapping (PNG grid and scores JSON)")
    bias.add_argument("run_dir", help="run directory of a finished sih or sih_rds run")
    bias.add_argument("--images", type=int, default=100, help="how many test images to visualise")
    bias.add_argument("--seed", type=int, default=0, help="seed of image and target choice")
    bias.add_argument("--split", default="test", help="evaluation split whose images are "
                      "shown")
    bias.add_argument("--threshold", type=float, default=0.2,
                      help="intensity above which a pixel counts as digit for the shape IoU")
    bias.add_argument("--out", help="PNG path (default RUN_DIR/bias.png; scores beside it)")
    bias.add_argument("--data-dir", help=EXPLAIN_DATA_DIR)
    lad = esub.add_parser("lad", help="LAD's training images next to their VQ-VAE and "
                          "walked reconstructions (Figure 4 PNG)")
    lad.add_argument("run_dir", help="run directory of a lad run whose walk has finished")
    lad.add_argument("--images", type=int, default=24, help="training images shown")
    lad.add_argument("--seed", type=int, default=0,
                     help="seed of the image choice and the bias probe")
    lad.add_argument("--out", help="PNG path (default RUN_DIR/lad.png; the bias probe's "
                     "lad_bias.json and .png beside it)")
    lad.add_argument("--no-probe", action="store_true",
                     help="skip the bias probe (does the walk remove the bias or remap it?)")
    lad.add_argument("--data-dir", help=EXPLAIN_DATA_DIR)
    walk = esub.add_parser("lad-walk", help="LAD walk diagnostic: per walk step, f's "
                           "entropy, codes changed (digit vs background), step vs code gap, "
                           "class-bias NMI and digit-shape IoU (JSON table and PNG)")
    walk.add_argument("run_dir", help="run directory of a lad run (its stages are reused)")
    walk.add_argument("--hp", action="append", metavar="KEY=VALUE",
                      help="LAD option over the run's (a hypothesis; its stages are computed "
                      "in --out, the run's reused where they match)")
    walk.add_argument("--images", type=int, default=2000, help="training images walked")
    walk.add_argument("--seed", type=int, default=0, help="seed of the image sample and probe")
    walk.add_argument("--out", help="folder (default RUN_DIR/walk_diagnostic)")
    walk.add_argument("--data-dir", help=EXPLAIN_DATA_DIR)
    sal = esub.add_parser("saliency", help="CF/F's saliency focus: images, foreground masks "
                          "and saliency maps (PNG) and the saliency AUPR (JSON)")
    sal.add_argument("run_dir", help="run directory of a finished run on data with "
                     "foreground masks")
    sal.add_argument("--split", help="evaluation split with masks (default: the first)")
    sal.add_argument("--method", default="deeplift_shap", help="deeplift_shap or gradient")
    sal.add_argument("--images", type=int, default=8, help="images in the grid")
    sal.add_argument("--aupr-images", type=int, default=500, help="images the AUPR averages")
    sal.add_argument("--seed", type=int, default=0, help="seed of the image choice")
    sal.add_argument("--out", help="PNG path (default RUN_DIR/saliency-SPLIT-METHOD.png; "
                     "the JSON beside it)")
    sal.add_argument("--data-dir", help=EXPLAIN_DATA_DIR)
    gr = esub.add_parser("gradient-ratio", help="LAD's one-pixel problem: train Vanilla and "
                         "track the gradient ratio GR (Eq. 1) per iteration (Figure 2 PNG, JSON)")
    gr.add_argument("--dataset", default="one_pixel_mnist",
                    help="one_pixel_mnist or one_pixel_cifar10")
    gr.add_argument("--model", default="mlp", help="classifier (mlp, resnet20, resnet18)")
    gr.add_argument("--iterations", type=int, default=1000, help="training minibatches")
    gr.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    gr.add_argument("--optimizer", default="adam", help="adam or sgd (plain minibatch SGD)")
    gr.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    gr.add_argument("--value", type=int, default=255, help="value of the class pixel")
    gr.add_argument("--seed", type=int, default=0,
                    help="seed of the data, the initial weights and the batch order")
    gr.add_argument("--eval-every", type=int, metavar="N",
                    help="also evaluate on the test splits every N iterations (4th panel)")
    gr.add_argument("--out", default="gradient-ratio", help="output folder")
    gr.add_argument("--data-dir", help=DATA_DIR)
    gr.add_argument("--download", action="store_true",
                    help="download missing datasets through torchvision")


def outputs(args) -> list:
    """The --out to check: a file for :data:`OUT_FILES`, else a folder (none when not
    given: the default lies in the run directory)."""
    if args.out is None:
        return []
    return [(args.out, OUT_FILES.get(args.explain_command))]


def _curves(args) -> None:
    from ..explain.curves import plot_run_curves

    print(f"wrote {plot_run_curves(args.run_dir, args.out)}")


def _lad(args) -> None:
    from ..explain.lad import explain_lad_run

    if args.images < 1:
        raise ConfigError(f"--images must be >= 1, got {args.images}")
    png, probed = explain_lad_run(args.run_dir, args.images, args.seed, args.out,
                                  args.data_dir, probe=not args.no_probe)
    print(f"wrote {png}")
    if probed:
        print(f"bias probe ({probed['probe_split']} split, held-out accuracy "
              f"{probed['probe_heldout_accuracy']:.1f} %): " + "; ".join(
                  f"{k} images NMI(class, bias) {probed[k]['class_bias_nmi']:.3f}, "
                  f"bias kept {probed[k]['bias_kept']:.1f} %, signal probe "
                  f"{probed[k]['signal_accuracy']:.1f} %" for k in ("original", "walked")))
        if not probed["probe_reads_bias"]:
            print("warning: the bias probe cannot read the bias (held-out accuracy not "
                  "halfway from chance to 100 %), so its figures do not show whether the "
                  "walk removed the bias")
        print(f"wrote {png.with_name('lad_bias.json')} and lad_bias.png")


def _lad_walk(args) -> None:
    from ..explain.walk_diagnostic import diagnose_run, format_table

    if args.images < 1:
        raise ConfigError(f"--images must be >= 1, got {args.images}")
    result = diagnose_run(args.run_dir, pairs(args.hp, "--hp"), args.out, args.images,
                          args.seed, args.data_dir)
    print(format_table(result))
    print(f"wrote {result['folder']}/walk_diagnostic.json and walk_diagnostic.png")


def _saliency(args) -> None:
    from ..explain.saliency import explain_saliency_run

    result = explain_saliency_run(args.run_dir, args.images, args.seed, args.split,
                                  args.method, args.out, args.data_dir, args.aupr_images)
    print(f"saliency AUPR ({result['method']}, {result['split']}): {result['aupr']:.2f} % "
          f"over {result['images_scored']} images; wrote {result['png']}")
    if result["next_class_shift"] is not None:
        print(f"next-class probability shift, Original -> Mixed-Next: "
              f"{result['next_class_shift']:+.2f} points")
    print("macro one-vs-rest AUC: " + ", ".join(
        f"{k} {v:.2f} %" for k, v in result["macro_auc"].items()))


def _gradient_ratio(args) -> None:
    from ..explain.gradient_ratio import explain_gradient_ratio

    trace = explain_gradient_ratio(
        args.out, dataset=args.dataset, model=args.model, iterations=args.iterations,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, seed=args.seed,
        value=args.value, eval_every=args.eval_every,
        data_dir=args.data_dir, download=args.download)
    tests = ", ".join(f"{k} {v:.2f} %" for k, v in trace.test_accuracy.items())
    print(f"final training accuracy {trace.accuracy[-1]:.2f} %; test accuracy: {tests}; "
          f"GR first below 1 at iteration {trace.first_below_one()}; "
          f"wrote {args.out}/gradient_ratio.png")


def _bias(args) -> None:
    from ..explain.bias import explain_bias_run

    if args.images < 1:
        raise ConfigError(f"--images must be >= 1, got {args.images}")
    scores = explain_bias_run(args.run_dir, args.images, args.seed, args.split, args.out,
                              args.data_dir, args.threshold)
    for key, value in scores.items():
        print(f"{key:>22}: {value:.4f}" if isinstance(value, float) else f"{key:>22}: {value}")


#: The function of each sub-command.
KINDS = {"curves": _curves, "bias": _bias, "lad": _lad, "lad-walk": _lad_walk,
         "saliency": _saliency, "gradient-ratio": _gradient_ratio}


def run(args) -> None:
    KINDS[args.explain_command](args)
