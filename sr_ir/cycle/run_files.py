"""The files a Squeeze-Release run leaves in its folder, written by the library (the CLI only names the folder).

    cycle_NNN.pt        one checkpoint per cycle (checkpoint.py)
    cycles.json         config, dense record, one record per cycle; rewritten after every cycle while
                        ``"running": true``, then the final summary (best state, single pass, wall time)
    cycles.txt          the per-cycle table as the CLI prints it, and how the run ended
    cycles.png          deployable parameters and accuracy per cycle, with the validation floor
    final.safetensors   the final module's weights
    final.pt2           its ``torch.export`` program, batch dimension dynamic where the module allows;
                        left out (``export_error`` in the summary says why) when torch cannot export it
    .sr-ir.lock         held for the run: a second run on the folder refuses at once

Every file is written atomically (sr_ir.outputs) by the main process only.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import SrIrError, describe
from ..outputs import atomic_save_with, atomic_write, run_lock
from .checkpoint import write_json
from .report import plot_cycles, summary_lines, table_text

FILES = ("cycles.json", "cycles.txt", "cycles.png", "final.safetensors", "final.pt2")

_CLAIMED: set[Path] = set()
_CLAIMED_LOCK = threading.Lock()


@contextmanager
def claim(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s run lock (``sr_ir.outputs.run_lock``) for the block; re-entrant within one process,
    so the CLI can claim its folder before it loads any data and the library's own claim then passes."""
    key = Path(folder).absolute()
    with _CLAIMED_LOCK:
        held = key in _CLAIMED
    if held:
        yield
        return
    with run_lock(folder):
        with _CLAIMED_LOCK:
            _CLAIMED.add(key)
        try:
            yield
        finally:
            with _CLAIMED_LOCK:
                _CLAIMED.discard(key)


def title_of(info: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The plot's title from the run's description (``info["title"]``, else model, dataset and preset)."""
    if info.get("title"):
        return str(info["title"])
    parts = [str(info[k]) for k in ("model", "dataset") if info.get(k)]
    head = " on ".join(parts) if parts else "Squeeze-Release"
    extra = [str(info["preset"])] if info.get("preset") else []
    if config.get("release") is False:
        extra.append("no release")
    return head + (f" ({', '.join(extra)})" if extra else "")


def write_progress(folder: Path, info: Mapping[str, Any], config: Mapping[str, Any],
                   history: Sequence[dict[str, Any]]) -> None:
    """``cycles.json`` while the run goes on (``history[0]`` is the dense record), so a long run can be watched."""
    write_json(folder / "cycles.json", {**info, "config": dict(config), "dense": history[0],
                                        "cycles": list(history[1:]), "running": True})


def export_program(module: nn.Module, example_inputs: tuple, path: Path) -> tuple[str | None, str | None]:
    """Write ``module`` as a ``torch.export`` program at ``path``, with a dynamic batch dimension where the
    module allows one. Returns ``(batch, error)``: ``("dynamic" | "static", None)``, or ``(None, reason)``
    when torch cannot export it (nothing is written then; the weights are saved regardless)."""
    from ..frontend.lower import export_model

    was_training = module.training
    try:
        ep = export_model(module, example_inputs, dynamic_batch=True)
    except Exception as e:  # export limits are torch's: a reason in the summary, not a failed run
        return None, describe(e)
    finally:
        module.train(was_training)
    shapes = [n.meta["val"].shape for n in ep.graph.nodes
              if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs and "val" in n.meta]
    dynamic = bool(shapes) and all(len(s) > 0 and not isinstance(s[0], int) for s in shapes)
    atomic_save_with(path, lambda tmp: torch.export.save(ep, tmp))
    return ("dynamic" if dynamic else "static"), None


def write_final(folder: Path, summary: dict[str, Any], module: nn.Module, example_inputs: tuple,
                info: Mapping[str, Any]) -> dict[str, Any]:
    """Every file of a finished run (see the module docstring); adds ``export_batch`` and
    ``export_error`` to ``summary`` and returns it."""
    from safetensors.torch import save_file

    dense, records = summary["dense"], summary["cycles"]
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    atomic_save_with(folder / "final.safetensors", lambda tmp: save_file(state, tmp))
    summary["export_batch"], summary["export_error"] = export_program(module, example_inputs, folder / "final.pt2")
    plot_cycles(folder / "cycles.png", dense, records, baseline=records[0] if records else None,
                title=title_of(info, summary["config"]))
    atomic_write(folder / "cycles.txt", table_text(dense, records) + "\n" + "\n".join(summary_lines(summary)) + "\n")
    write_json(folder / "cycles.json", summary)
    return summary


def check_folder(folder: Path) -> None:
    """A folder the run can write: not a file (one line instead of a traceback from deep in a writer)."""
    if folder.exists() and not folder.is_dir():
        raise SrIrError(f"{folder}: is a file, not a folder for the run's checkpoints")
