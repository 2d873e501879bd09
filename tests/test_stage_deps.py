"""Every stage depends on exactly the source code its command runs, so an edit re-runs what it can change.

A stage's code is its subcommand's module and every ``rsckd`` module that imports, at module level or inside
a function (``modulefinder`` reads both), leaving out the shared infrastructure that validates, declares and
writes without deciding a result (README, 'The pipeline') and what only it imports; a command that builds
models (``models/base.py``) also runs the builders the architecture table names and what they import. Each
module of that code must lie under one of the stage's ``src/`` dependencies, and each ``src/`` dependency must
hold some of the code (a declared folder may hold modules the stage does not run).
"""

from __future__ import annotations

import importlib.util
from modulefinder import ModuleFinder
from pathlib import Path

import pytest
import yaml

from rsckd.architectures import ARCHITECTURES
from rsckd.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
INFRASTRUCTURE = ("cli", "config", "schema", "architectures", "atomic", "errors")
# `rsckd train` imports the Table 3 rows for its --ablation option: its code only in stages that use it
FLAG_ONLY = {"train": {"src/rsckd/ablations.py": "--ablation"}}


def stage_bodies() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def imported(command: str, infrastructure: bool = False) -> set[str]:
    """Repository paths of the subcommand's module and the rsckd modules it imports (without the
    infrastructure and what only it imports, unless ``infrastructure``)."""
    words = [w for w in command.split() if not w.startswith("$")]
    assert words[0] == "rsckd", command
    entries = [Path(importlib.util.find_spec(COMMANDS[words[1]][0]).origin)]
    excludes = [] if infrastructure else [f"rsckd.{name}" for name in INFRASTRUCTURE]
    finder = ModuleFinder(path=[str(SRC)], excludes=excludes)
    finder.run_script(str(entries[0]))
    if "rsckd.models.base" in finder.modules:  # build_model imports the named builder at run time
        for arch in ARCHITECTURES.values():
            entries.append(Path(importlib.util.find_spec(arch.builder.split(":")[0]).origin))
            finder.run_script(str(entries[-1]))
    files = {Path(m.__file__) for n, m in finder.modules.items() if n.startswith("rsckd") and m.__file__}
    flags = FLAG_ONLY.get(words[1], {})
    return {
        path
        for path in (p.relative_to(ROOT).as_posix() for p in files | set(entries))
        if not path.endswith("/__init__.py") and (path not in flags or flags[path] in words)
    }


def declared_source(body: dict) -> set[str]:
    return {d for d in body.get("deps", []) if isinstance(d, str) and d.startswith("src/")}


def under(path: str, dep: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("stage", sorted(stage_bodies()))
def test_a_stage_declares_the_code_it_runs_and_no_other(stage):
    body = stage_bodies()[stage]
    declared = declared_source(body)
    assert {p for p in imported(body["cmd"]) if not any(under(p, d) for d in declared)} == set()
    code = imported(body["cmd"], infrastructure=True)
    assert {d for d in declared if not any(under(p, d) for p in code)} == set()


def test_the_check_sees_what_a_command_imports():
    """A training command's code includes the cycle-table reader (imported inside a function), the Table 3
    rows only for an ablation, the architectures' builders, and neither the ICBHI reader nor the
    infrastructure."""
    code = imported("rsckd train --ablation curated")
    assert {"src/rsckd/models/bts.py", "src/rsckd/models/timm_models.py"} <= code
    assert {"src/rsckd/data/table.py", "src/rsckd/ablations.py", "src/rsckd/training/loop.py"} <= code
    assert code - imported("rsckd train") == {"src/rsckd/ablations.py"}
    assert not {"src/rsckd/data/icbhi.py", "src/rsckd/config.py"} & code
