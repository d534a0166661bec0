"""A small numpy reference evaluator for Core ML MIL programs: the Linux stand-in for MLModel.predict.

Core ML runs models only on macOS; on Linux we execute the MIL program coremltools produced
(`mlmodel._mil_program`) op by op with numpy, in the program's layout (conv and pooling in NCHW).
Each op computes in float32 and its result is stored in the output's declared dtype (fp16 values
rounded through np.float16, kept in float32 arrays). Device kernels may accumulate in fp16 where we
use fp32, so fp16 checks need a tolerance (coreml/check.py).

`unknown_ops(program)` lists op types this evaluator cannot run, so a caller can say "not checked"
instead of guessing. `core` holds the walk; each family module below registers its ops with
`@op("name", ...)`, one small function each. FAMILIES is the one list of them (as onnx's
reference/ops/_op_list.py): a new family module is added there.
"""

from __future__ import annotations

from tfl_rebuild.coreml.mil_eval import (
    activation,
    classifier,
    conv,
    elementwise,
    indexing,
    linear,
    normalization,
    pool,
    reduce,
    resize,
    shape,
)
from tfl_rebuild.coreml.mil_eval.core import (
    CONTROL_FLOW,
    MAX_ITERATIONS,
    OPS,
    Args,
    MilEvalError,
    evaluate,
    op,
    op_types,
    unknown_ops,
)

FAMILIES = (
    elementwise,
    activation,
    linear,
    conv,
    pool,
    normalization,
    reduce,
    shape,
    indexing,
    resize,
    classifier,
)

__all__ = [
    "CONTROL_FLOW",
    "FAMILIES",
    "MAX_ITERATIONS",
    "OPS",
    "Args",
    "MilEvalError",
    "evaluate",
    "op",
    "op_types",
    "unknown_ops",
]
