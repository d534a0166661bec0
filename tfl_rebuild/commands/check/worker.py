"""The worker process: `python -m tfl_rebuild.commands.check.worker --worker MODEL RESULT OPTIONS_JSON
[KEEP_DIR]` checks one model (stages.check_model) and writes its row as JSON to RESULT. pool.py
starts it; a crash here ends this process only, and the driver's row says which."""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

from tfl_rebuild.commands.check.rows import Options, Row, one_line

MODULE = "tfl_rebuild.commands.check.worker"


def command(model: Path, result: Path, opts: Options, keep: Path | None) -> list[str]:
    """The command line that checks `model` in a new Python process."""
    cmd = [sys.executable, "-m", MODULE, "--worker", str(model), str(result), json.dumps(asdict(opts))]
    return cmd + ([str(keep)] if keep else [])


def main(argv: list[str]) -> int:
    model, result, opts_json = argv[:3]
    keep = argv[3] if len(argv) > 3 else None
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    raw = json.loads(opts_json)
    lists = {k: tuple(raw.get(k, ())) for k in ("input_shapes", "backends")}  # JSON made them lists
    opts = Options(**{**raw, **lists})
    try:
        from tfl_rebuild.commands.check.stages import check_model

        row = check_model(model, opts, keep)
    except BaseException as exc:  # a bug of ours: still one row, with the traceback in the log
        traceback.print_exc()
        row = Row(
            path=model, name=Path(model).name, outcome="crash", reason=f"checker error: {one_line(exc)}"
        )
    from tfl_rebuild.fileio import atomic_output

    with atomic_output(result, "w") as f:
        json.dump(asdict(row), f)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(main(sys.argv[2:]))
    sys.exit(
        f"usage: python -m {MODULE} --worker MODEL RESULT OPTIONS_JSON [KEEP_DIR] (use `tfl-rebuild check`)"
    )
