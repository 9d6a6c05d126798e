"""One checkpoint file per cycle, written atomically, loaded with ``weights_only=True``.

The minimized module of cycle k is generated code, so a checkpoint does not pickle classes. It keeps
the weights the minimizer was given (``pruned_state``, in the architecture of cycle k-1) and the
cycle's final weights (``state``). Resuming rebuilds each architecture by replaying the minimizer on
the stored pruned weights (exact and deterministic, so the same module comes back) and loads ``state``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import SrIrError, describe
from ..frontend.archive import check_torch_save
from ..outputs import atomic_save_with, atomic_write

FORMAT = "sr-ir-squeeze-release/1"
_NAME = re.compile(r"^cycle_(\d{3,})\.pt$")


def cycle_path(folder: str | Path, cycle: int) -> Path:
    return Path(folder) / f"cycle_{cycle:03d}.pt"


def _cpu(state: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    if state is None:
        return None
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def save_cycle(
    folder: str | Path,
    cycle: int,
    *,
    state: dict[str, torch.Tensor],
    pruned_state: dict[str, torch.Tensor] | None,
    masks: dict[str, torch.Tensor],
    record: dict[str, Any],
    config: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write ``cycle_<k>.pt`` atomically; also refresh the human-readable ``cycles.json``."""
    payload = {
        "format": FORMAT,
        "cycle": cycle,
        "state": _cpu(state),
        "pruned_state": _cpu(pruned_state),
        "masks": _cpu(masks),
        # JSON strings: primitives only, so weights_only loading accepts them unchanged
        "record": json.dumps(record),
        "config": json.dumps(config, sort_keys=True),
        "meta": json.dumps(meta, sort_keys=True),
    }
    path = cycle_path(folder, cycle)
    atomic_save_with(path, lambda tmp: torch.save(payload, tmp))
    return path


def load_cycle(path: str | Path) -> dict[str, Any]:
    """Read one cycle checkpoint; JSON fields come back decoded."""
    path = Path(path)
    check_torch_save(path)  # a pickle weights_only refuses, named in one line (torch's refusal is a page)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file: say which, in one line
        raise SrIrError(f"{path}: not a readable squeeze-release checkpoint ({describe(e)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SrIrError(f"{path}: not a squeeze-release checkpoint (expected format {FORMAT})")
    for key in ("record", "config", "meta"):
        payload[key] = json.loads(payload[key])
    return payload


def completed_cycles(folder: str | Path) -> list[int]:
    """Cycle numbers with a checkpoint in ``folder``, ascending (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
