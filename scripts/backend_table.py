"""Print the per-backend table: model x Keras backend, verdict, max error, seconds.

Each model is rebuilt once (written, not built, in this process) and verified by one worker per
backend (commands/backends.py: KERAS_BACKEND set, the same end-to-end + layer-local check as
`tfl-rebuild keras`). Workers live for the whole run, so each backend's import is paid once.

    python scripts/backend_table.py fixtures/*.tflite .corpus/*.tflite --backend all

Rows print as they finish (a Markdown table); a model that does not rebuild is one row saying why.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfl_rebuild.commands.backends import BACKENDS, Workers, parse_backends  # noqa: E402
from tfl_rebuild.commands.pipeline import rebuild_and_verify  # noqa: E402
from tfl_rebuild.errors import TflRebuildError  # noqa: E402


def cell(r) -> str:
    if r.error:
        return f"error: {r.error[:120]}"
    verdict = "ok" if r.ok else "MISMATCH"
    return f"{verdict} {r.max_rel:.2g} rel, {r.max_abs:.2g} abs, {r.seconds:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--backend", action="append", default=[], help="tensorflow|jax|torch|all")
    args = parser.parse_args()
    backends = parse_backends(args.backend or BACKENDS)
    print("| model | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends), flush=True)
    failures = 0
    with Workers(stdout=sys.stderr.fileno()) as workers, tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(args.models):
            try:
                rebuilt = rebuild_and_verify(str(path), str(Path(tmp) / f"m{i}"), build=False, verify=False)
            except TflRebuildError as exc:
                print(f"| {path.name} | " + " | ".join([f"not rebuilt: {exc}"] * len(backends)) + " |")
                failures += 1
                continue
            cells = []
            for backend in backends:
                result = workers.verify(backend, rebuilt)
                failures += not (result.ok and not result.error)
                cells.append(cell(result))
            print(f"| {path.name} | " + " | ".join(cells) + " |", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
