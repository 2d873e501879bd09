"""Local pretrained weights with a strict key check.

``from_pretrained``-style loaders log missing or unexpected weights and carry on, so a wrong checkpoint
silently trains from random init. Here every key that does not match is named in one error, except keys
documented as safe to ignore (extractor weights of the original code, heads that are replaced, derived
buffers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsckd.errors import UserError

# derived buffers: recomputed identically at construction, absent from some exports
BUFFER_KEYS = (r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"(^|\.)num_batches_tracked$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_LISTED = 12  # names listed per category before "... and N more"


def read_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (.safetensors, or a torch file, possibly under ``model``/``state_dict``),
    or of the weights file in a downloaded model directory (e.g. a timm hub folder)."""
    if path.is_dir():
        found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not found:
            raise UserError(f"{where}: {path} holds none of {', '.join(WEIGHT_FILES)}")
        path = found[0]
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle with code objects, not a checkpoint at all
        raise UserError(
            f"{where}: {path} is not a readable checkpoint ({type(err).__name__}: {err})"
        ) from None
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"{where}: {path} is not a state dict (expected name -> tensor, optionally under 'model')"
        )
    return dict(obj)


def hf_config(path: Path, where: str) -> dict[str, Any]:
    """config.json of a Hugging Face model directory."""
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UserError(f"{where}: {path} is not a Hugging Face model directory (no config.json)")
    return json.loads((path / "config.json").read_text())


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, key) for p in patterns)


def _listing(title: str, keys: list[str]) -> str:
    more = f" ... and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return f"\n  {title} ({len(keys)}): " + ", ".join(keys[:_LISTED]) + more


def check_keys(
    where: str, missing: Iterable[str], unexpected: Iterable[str], mismatched: Iterable[str] = ()
) -> None:
    """One UserError naming every problem key (derived buffers are never a problem)."""
    problems = [
        ("missing", sorted(k for k in missing if not _matches(k, BUFFER_KEYS))),
        ("unexpected", sorted(k for k in unexpected if not _matches(k, BUFFER_KEYS))),
        ("shape (checkpoint vs model)", sorted(mismatched)),
    ]
    if any(keys for _, keys in problems):
        raise UserError(
            f"{where}: the checkpoint does not match the model"
            + "".join(_listing(t, k) for t, k in problems if k)
        )


def load_strict(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    where: str,
    ignore_unexpected: Iterable[str] = (),
    allow_missing: Iterable[str] = (),
) -> None:
    """Copy ``state`` into ``module``; raise one UserError naming every missing, unexpected or mis-shaped key.

    ``ignore_unexpected``/``allow_missing`` are regexes for the documented exceptions (checkpoint keys with no
    counterpart here; weights of ours that are new, e.g. the 4-class head).
    """
    own = module.state_dict()
    kept = {k: v for k, v in state.items() if k in own or not _matches(k, ignore_unexpected)}
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in kept.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in kept and not _matches(k, allow_missing)]
    check_keys(where, missing, [k for k in kept if k not in own], mismatched)
    with torch.no_grad():
        for key, value in kept.items():
            if key in own:
                own[key].copy_(value)


def hf_load(cls: Any, path: Path, where: str, ignore_unexpected: Iterable[str] = (), **kwargs: Any) -> Any:
    """``cls.from_pretrained`` on a local directory, refusing any weight it would leave random or drop.

    transformers renames legacy checkpoint keys and strips task prefixes itself; it only logs what did not
    match, so its loading report is checked here instead.
    """
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # its own report would repeat (or contradict) ours
    try:
        model, info = cls.from_pretrained(
            str(path),
            local_files_only=True,
            output_loading_info=True,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,  # report mis-shaped weights in info (named below), never raise
            **kwargs,
        )
    except (OSError, ValueError) as err:
        raise UserError(f"{where}: cannot load {path} as {cls.__name__} ({err})") from None
    finally:
        logging.set_verbosity(verbosity)
    unexpected = [k for k in info["unexpected_keys"] if not _matches(k, ignore_unexpected)]
    mismatched = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in info["mismatched_keys"]]
    check_keys(f"{where} ({path})", info["missing_keys"], unexpected, mismatched)
    return model
