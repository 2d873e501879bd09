"""The ``rsckd`` command: one subcommand per pipeline stage.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``. Only the
module of the chosen subcommand is imported, so ``rsckd --help`` and light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rsckd import forkserver
from rsckd.errors import UserError

COMMANDS: dict[str, tuple[str, str]] = {
    "synthesize": ("rsckd.data.synthetic", "generate the synthetic ICBHI-format corpus"),
    "data": ("rsckd.data.summary", "inspect an ICBHI-layout dataset (rsckd data summary ROOT)"),
    "prepare": ("rsckd.data.prepare", "build the cycle table from an ICBHI-layout root"),
    "features": ("rsckd.data.features", "compute one architecture family's input features"),
    "train": ("rsckd.training.run", "train one model (teacher or student)"),
    "ensemble": ("rsckd.evaluation.ensemble", "score the teacher ensemble for every k, write soft labels"),
    "second-gen": ("rsckd.evaluation.second_gen", "score the ensemble of distilled students"),
    "report": ("rsckd.report.build", "render figures and tables from the metrics files"),
    "predict": ("rsckd.predict", "classify the cycles of a new recording with trained run(s)"),
    "import-clap": ("rsckd.models.clap_convert", "convert an original LAION-CLAP checkpoint"),
    "check-params": ("rsckd.inputs", "validate a params file"),
    "parallel": ("rsckd.parallel", "run the stale stage items as a Dask task graph (local or SLURM/PBS)"),
    "fetch": ("rsckd.fetch", "download the paper profile's inputs (ICBHI, pretrained weights), pinned"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    return argparse.ArgumentParser(
        prog="rsckd",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Respiratory sound classification with knowledge distillation from ensembles.",
        epilog="commands:\n" + "\n".join(lines),
        usage="rsckd COMMAND [options]",
    )


def main(argv: list[str] | None = None) -> int:
    """The ``rsckd`` entry point: runs in a fork of a warm process when there is one (rsckd.forkserver)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    code = forkserver.delegate(argv)
    return run(argv) if code is None else code


def run(argv: list[str]) -> int:
    """Run ``rsckd argv`` in this process."""
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = _top_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}")
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"rsckd {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        module.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (
        OSError
    ) as err:  # disk full, permissions, vanished files: the OS names the file, no traceback needed
        where = f": {err.filename}" if err.filename else ""
        print(
            f"error: {err.strerror or err}{where} (outputs already in place were left untouched)",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
