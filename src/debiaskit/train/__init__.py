"""The trainer: epochs, evaluation on every split, model selection, run directory, resume.

``train(RunConfig(...), out_dir)`` builds the data and the method, checks that the data
carries the supervision the method needs, and trains. Everything is validated before the
run directory is created, so bad input writes nothing. After every epoch it evaluates each
split (the final classifier and any auxiliary one, e.g. LfF's biased model), appends the
record to ``metrics.jsonl`` and writes ``checkpoint.pt`` atomically; started again with the
same configuration, it resumes from that checkpoint and ends with the same numbers.
With ``early_stop`` selection it also computes the method's objective on a held-out split
after every epoch, lowers the learning rate on plateaus and stops when it stops improving.

Modules: :mod:`.config` (RunConfig, its checks, selection policies), :mod:`.assemble`
(data and method built and checked: :func:`prepare`, :func:`load_trained`),
:mod:`.evaluation` (metrics, held-out objective, selection score), :mod:`.record` (protocol
text; what the numbers depend on: machine, versions, arithmetic), :mod:`.trainer` (the
loop and the run directory), :mod:`.seed_pack` (several seeds of one configuration in one
process, stacked: :func:`train_seeds`).
"""

from .assemble import (Prepared, channel_stats, heldout_indices, load_trained,
                       normalisation_from_data, prepare, random_subset)
from .config import (MEMORY_FORMATS, SELECTION, VOLATILE, RunConfig, check_config,
                     config_from_run, same_run)
from .evaluation import EVAL_BATCH, arithmetic, evaluate, heldout_objective, selection_score
from .record import describe_optimiser, machine, peak_rss_mib, protocol_text, versions
from .trainer import COMPILE_MIN_STEPS, Trainer, compiled_update, train
from .seed_pack import (SEED_PACK_MODES, SeedPackTrainer, resolve_seed_pack, train_seeds,
                        why_not_packed)

__all__ = ["COMPILE_MIN_STEPS", "EVAL_BATCH", "MEMORY_FORMATS", "SEED_PACK_MODES", "SELECTION",
           "VOLATILE", "Prepared", "RunConfig", "SeedPackTrainer", "Trainer", "arithmetic",
           "channel_stats", "check_config", "compiled_update", "config_from_run",
           "describe_optimiser", "evaluate", "heldout_indices", "heldout_objective",
           "load_trained", "machine", "normalisation_from_data", "peak_rss_mib", "prepare",
           "protocol_text", "random_subset", "resolve_seed_pack", "same_run", "selection_score",
           "train", "train_seeds", "versions", "why_not_packed"]
