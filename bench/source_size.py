"""Generated source per TFLite op, this tree against a git ref (the "before"): nothing asserted.

For every model given (default: fixtures/*.tflite and .corpus/*.tflite), generates the Keras module
with `generate(read_model(path), stem)` in a child process per tree (no TensorFlow import, no
build), and prints bytes per op and the longest line; then the median bytes per op of each tree
and their ratio (issue 11's bar: the median does not grow).

    .venv/bin/python bench/source_size.py [--before 0323b97] [MODEL.tflite ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys
from tfl_rebuild.rebuild.codegen.emit import generate
from tfl_rebuild.tflite.reader import read_model
out = {}
for path in sys.argv[1:]:
    try:
        model = read_model(path)
        src = generate(model, "model").source
        ops = sum(len(sg.operators) for sg in model.subgraphs)
        out[path] = [len(src.encode()), ops, max(map(len, src.splitlines()))]
    except Exception as exc:  # noqa: BLE001 - a model one tree cannot rebuild is reported, not fatal
        out[path] = str(exc)[:80]
print(json.dumps(out))
"""


def sizes(tree: Path, models: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *models],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="0323b97", help="git ref of the 'before' tree")
    ap.add_argument("models", nargs="*")
    args = ap.parse_args()
    models = args.models or sorted(
        str(p) for d in ("fixtures", ".corpus") for p in (ROOT / d).glob("*.tflite")
    )
    models = [str(Path(m).resolve()) for m in models]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.before], check=True
        )
        try:
            before = sizes(old, models)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=True)
    after = sizes(ROOT, models)
    print(f"{'model':<40} {'ops':>5} {'B/op before':>12} {'B/op after':>11} {'max line':>9}")
    per_op = {"before": [], "after": []}
    for m in models:
        b, a = before[m], after[m]
        if isinstance(b, str) or isinstance(a, str):
            print(f"{Path(m).name:<40} not generated: {b if isinstance(b, str) else a}")
            continue
        per_op["before"].append(b[0] / b[1])
        per_op["after"].append(a[0] / a[1])
        print(f"{Path(m).name:<40} {a[1]:>5} {b[0] / b[1]:>12.0f} {a[0] / a[1]:>11.0f} {a[2]:>9}")
    mb, ma = statistics.median(per_op["before"]), statistics.median(per_op["after"])
    print(f"median bytes per op: before {mb:.0f}, after {ma:.0f}: ratio {ma / mb:.2f}x")


if __name__ == "__main__":
    main()
