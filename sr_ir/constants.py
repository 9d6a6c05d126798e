"""Defaults and names that the library and the `sr-ir` command line both use, in a module that imports
nothing: the commands' parsers show them in their --help without importing torch or the library
(sr_ir/cli/main.py). The library modules that use them import them from here; this module must stay
free of imports, of the library's and of the CLI's alike."""
from __future__ import annotations

# Random inputs beside the example that verification compares on (sr_ir.minimization.verify): one.
# The example may be special (zeros, one token repeated), so a generic input is needed; a wrong rewrite
# (the proved rules are not what this check is for, the engine, the lowering and the emission are)
# changes the function on almost every input, which a second or third Gaussian draw of the same batch
# size would only see again at the same cost each.
N_RANDOM = 1

# Pruning criteria and ranking scopes of sr_ir.cycle.pruning.PruneSpec (`squeeze-release --criterion`,
# `--scope`).
CRITERIA = ("magnitude", "unit", "coupled")
SCOPES = ("global", "layer")

# The fine-tuning batch size where neither the TrainSpec nor a DataLoader gives one (sr_ir.cycle.train).
DEFAULT_BATCH_SIZE = 128

# Learning-rate schedules of a fine-tuning phase (sr_ir.cycle.train.TrainSpec.schedule,
# `squeeze-release --schedule`): constant, or cosine from the learning rate to 0 over the phase.
SCHEDULES = ("constant", "cosine")
