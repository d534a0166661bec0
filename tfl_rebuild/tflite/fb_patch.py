"""Byte-level access to a .tflite flatbuffer, for the patches that edit a model in place.

`reader.py` parses through the generated `tflite` accessors into the IR. The patches (outputter:
the outputs vector; views: subgraph order, signature list, tensor shapes, and for state the
inputs / outputs / operators vectors and op inputs) need byte positions,
which those accessors neither give nor bounds-check, so they read and write through here. Every
position is checked against the file before use; a fault is one `ModelFormatError` line naming
what and where.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

from tfl_rebuild.errors import ModelFormatError, TflRebuildError

# Flatbuffers' verifier refuses buffers of 2 GB or more, so a patched model must end below that.
FLATBUFFER_LIMIT = 2**31 - 1


# Field slots: each field's position in its table in schema.fbs (tests check them against `tflite`).
class Model:
    SUBGRAPHS = 2
    SIGNATURE_DEFS = 7


class SubGraph:
    TENSORS = 0
    INPUTS = 1
    OUTPUTS = 2
    OPERATORS = 3


class Operator:
    INPUTS = 1


class Tensor:
    SHAPE = 0
    NAME = 3
    SHAPE_SIGNATURE = 7


class SignatureDef:
    SUBGRAPH_INDEX = 4


class Vector(NamedTuple):
    first: int  # position of element 0
    length: int


def _name(model) -> str:
    return Path(model.path).name if model.path else "<bytes>"


def int32_vector(values) -> bytes:
    """A flatbuffer vector of int32: its length, then the values."""
    return struct.pack(f"<I{len(values)}i", len(values), *(int(v) for v in values))


class Buffer:
    """Bounds-checked little-endian reads of a model's bytes (an mmap or bytes: never copied)."""

    def __init__(self, data, name: str):
        self.data, self.name = data, name

    @classmethod
    def of(cls, model, **kwargs):
        return cls(model._storage, _name(model), **kwargs)

    def read(self, fmt: str, pos: int, what: str) -> int:
        if not 0 <= pos <= len(self.data) - struct.calcsize(fmt):
            raise ModelFormatError(f"{self.name}: {what} at byte {pos} lies outside the file")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def uoffset(self, pos: int, what: str) -> int:
        """Where the uoffset stored at `pos` points."""
        return pos + self.read("<I", pos, what)

    def root(self) -> int:
        return self.read("<I", 0, "root table offset")

    def field(self, table: int, slot: int, what: str) -> int | None:
        """Position of a field of the table `what`; None when its vtable does not have it."""
        vtable = table - self.read("<i", table, f"{what} table")
        vt_size = self.read("<H", vtable, f"{what} vtable")
        if 4 + 2 * slot + 2 > vt_size:
            return None
        off = self.read("<H", vtable + 4 + 2 * slot, f"{what} vtable")
        return table + off if off else None

    def vector_at(self, pos: int, what: str) -> Vector:
        """The vector the uoffset at `pos` points to."""
        vec = self.uoffset(pos, what)
        return Vector(vec + 4, self.read("<I", vec, what))

    def vector(self, table: int, slot: int, table_what: str, what: str) -> Vector | None:
        f = self.field(table, slot, table_what)
        return None if f is None else self.vector_at(f, what)

    def table(self, vec: Vector, k: int, what: str) -> int:
        """Position of table `k` of a vector of tables (`what` names that element)."""
        if not 0 <= k < vec.length:
            raise ModelFormatError(f"{self.name}: {what} is not in the {vec.length}-element vector")
        return self.uoffset(vec.first + 4 * k, what)

    def subgraphs(self) -> Vector:
        f = self.field(self.root(), Model.SUBGRAPHS, "model")
        if f is None:
            raise ModelFormatError(f"{self.name}: model has no subgraphs")
        return self.vector_at(f, "subgraphs vector")

    def check_aligned(self, pos: int, what: str) -> None:
        if pos % 4:
            raise ModelFormatError(f"{self.name}: {what} at byte {pos} is misaligned")

    def appended_vector(self, field: int, values: list[int], what: str) -> list:
        """The file as pieces to concatenate: the uoffset at `field` repointed to a new int32
        vector of `values` after the end (4-byte aligned). Nothing else moves or is copied, so
        weights and external buffers (absolute offsets) stay valid."""
        self.read("<I", field, what)
        size = len(self.data)
        start = -(-size // 4) * 4
        view = memoryview(self.data)  # slices of a view are not copies
        return [
            view[:field],
            struct.pack("<I", start - field),
            view[field + 4 :],
            bytes(start - size),
            int32_vector(values),
        ]


class Patch(Buffer):
    """A writable copy of the bytes. `refuse` is raised for an edit that cannot be made in place."""

    def __init__(self, data, name: str, refuse: type[TflRebuildError] = TflRebuildError):
        super().__init__(bytearray(data), name)
        self.refuse = refuse

    def _put(self, fmt: str, pos: int, value: int, what: str) -> None:
        if not 0 <= pos <= len(self.data) - struct.calcsize(fmt):
            raise ModelFormatError(f"{self.name}: {what} at byte {pos} lies outside the file")
        struct.pack_into(fmt, self.data, pos, value)

    def set_uint32(self, pos: int, value: int, what: str) -> None:
        self._put("<I", pos, value, what)

    def set_table(self, vec: Vector, k: int, table: int, what: str) -> None:
        """Make element `k` of a vector of tables refer to `table`."""
        if not 0 <= k < vec.length:
            raise ModelFormatError(
                f"{self.name}: {what} element {k} is not in the {vec.length}-element vector"
            )
        elem = vec.first + 4 * k
        if table <= elem:  # uoffsets only point forward
            raise self.refuse(f"{self.name}: cannot repoint the {what} element at byte {elem} in place")
        self._put("<I", elem, table - elem, what)

    def set_length(self, vec: Vector, n: int, what: str) -> None:
        """Cut a vector to its first `n` elements."""
        if not 0 <= n <= vec.length:
            raise ModelFormatError(
                f"{self.name}: cannot grow the {vec.length}-element {what} to {n} in place"
            )
        self._put("<I", vec.first - 4, n, what)

    def keep_tables(self, vec: Vector, keep: list[int], what: str) -> None:
        """Cut a vector of tables to elements `keep` (ascending), in place: each kept uoffset moves
        toward the front, where it still points forward to its table."""
        tables = [self.table(vec, k, f"{what} element {k}") for k in keep]
        for k, table in enumerate(tables):
            self.set_table(vec, k, table, what)
        self.set_length(vec, len(tables), what)

    def append_int32_vector(self, field: int, values, what: str) -> None:
        """Repoint the uoffset at `field` to a new int32 vector of `values` after the end."""
        self._append(field, int32_vector(values), what)

    def append_string(self, field: int, text: str, what: str) -> None:
        """Repoint the uoffset at `field` to a new string after the end."""
        raw = text.encode("utf-8")
        self._append(field, struct.pack("<I", len(raw)) + raw + b"\0", what)

    def _append(self, field: int, payload: bytes, what: str) -> None:
        """`payload` after the end of the file (4-byte aligned), the uoffset at `field` pointing at it;
        nothing before it moves, so weights and external buffers keep their offsets."""
        self.read("<I", field, what)
        start = -(-len(self.data) // 4) * 4
        if start + len(payload) > FLATBUFFER_LIMIT:
            raise self.refuse(
                f"{self.name}: the patched model would end past the 2 GB a flatbuffer offset may reach"
            )
        self.data.extend(bytes(start - len(self.data)))
        self.data.extend(payload)
        self._put("<I", field, start - field, what)

    def set_int32s(self, vec: Vector, values, what: str) -> None:
        """Overwrite the elements of an int32 vector (as many as it has)."""
        if len(values) != vec.length:
            raise ModelFormatError(f"{self.name}: {what} has {vec.length} elements, not {len(values)}")
        for k, v in enumerate(values):
            self._put("<i", vec.first + 4 * k, int(v), what)
