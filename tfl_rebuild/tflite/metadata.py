"""What a file holds besides the graph: tflite_support's model metadata, or (given a zip) the
.tflite files a MediaPipe bundle packs. Read by `reader.py`; no failure here stops a read."""

from __future__ import annotations

import struct

import flatbuffers

from tfl_rebuild.tflite.ir import ModelInfo, TensorInfo


def read_model_info(blob: bytes) -> ModelInfo | None:
    """Decode the strings of tflite_support's ModelMetadata flatbuffer ("M001"); None if unreadable.

    Only name/description/version/author/license and per-tensor name/description are read, by
    field position from metadata_schema.fbs, so no extra package is needed.
    """
    from flatbuffers.table import Table

    if len(blob) < 8:
        return None

    def field(tab: Table, i: int) -> int:
        return tab.Offset(4 + 2 * i)

    def text(tab: Table, i: int) -> str:
        o = field(tab, i)
        return tab.String(o + tab.Pos).decode("utf-8", "replace") if o else ""

    def tables(tab: Table, i: int) -> list[Table]:
        o = field(tab, i)
        if not o:
            return []
        n = tab.VectorLen(o)
        if n * 4 > len(blob):
            raise ValueError("vector too long")
        start = tab.Vector(o)
        return [Table(tab.Bytes, tab.Indirect(start + 4 * k)) for k in range(n)]

    try:
        root = Table(blob, flatbuffers.encode.Get(flatbuffers.packer.uoffset, blob, 0))
        sub = tables(root, 3)
        tinfo = lambda tabs: tuple(TensorInfo(text(t, 0), text(t, 1)) for t in tabs)  # noqa: E731
        return ModelInfo(
            name=text(root, 0),
            description=text(root, 1),
            version=text(root, 2),
            author=text(root, 4),
            license=text(root, 5),
            inputs=tinfo(tables(sub[0], 2)) if sub else (),
            outputs=tinfo(tables(sub[0], 3)) if sub else (),
            associated_files=tuple(text(t, 0) for t in tables(root, 6)),
        )
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, AttributeError, RecursionError):
        return None


def zip_text(buf) -> str:
    """What a zip archive given as a model holds (a MediaPipe .task bundle is a zip of .tflite files)."""
    import io
    import zipfile

    try:
        names = [n for n in zipfile.ZipFile(io.BytesIO(bytes(buf))).namelist() if n.endswith(".tflite")]
    except (zipfile.BadZipFile, OSError, ValueError):
        names = []
    held = (
        f"it holds {', '.join(repr(n) for n in names[:6])}{' ...' if len(names) > 6 else ''}: extract one "
        "(unzip) and pass that"
        if names
        else "it holds no .tflite file"
    )
    return f"a zip archive (a MediaPipe .task bundle?), not a .tflite model; {held}"
