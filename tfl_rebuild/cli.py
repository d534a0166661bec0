"""Command line: tfl-rebuild inspect | weights | dump | keras | compare | coreml | check.

Heavy modules are imported inside each command so `inspect` starts fast. Every error that is
the input's fault is a `TflRebuildError`: printed as one line, exit code 2.
"""

from __future__ import annotations

import os
import sys

import click

from tfl_rebuild.commands.extras import require_extras
from tfl_rebuild.commands.options import INPUT_FILE, INPUT_FILE_OR_FOLDER, input_options, stoppable
from tfl_rebuild.errors import Terminated, TflRebuildError, TimedOut
from tfl_rebuild.fileio import ensure_dir
from tfl_rebuild.text import printable

# An error is one line, whatever the model's strings hold, and short enough to read: our longest
# messages (an SSD post-processing refusal names every tensor) run near 500 characters.
ERROR_LIMIT = 1000


def error_line(exc: BaseException) -> str:
    """'error: <message>' with control characters and line breaks escaped, cut to ERROR_LIMIT."""
    return f"error: {printable(str(exc), ERROR_LIMIT)}"


class _Group(click.Group):
    def invoke(self, ctx):
        from tfl_rebuild.commands.stopping import handle_sigterm

        handle_sigterm()  # like Ctrl-C: `finally` blocks run, temp files go
        try:
            return super().invoke(ctx)
        except (TflRebuildError, TimedOut) as exc:
            click.echo(error_line(exc), err=True)
            ctx.exit(getattr(exc, "exit_code", 2))
        except Terminated:
            click.echo("terminated", err=True)
            ctx.exit(Terminated.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tfl-rebuild")
def main():
    """See inside TensorFlow Lite models, debug them layer by layer, rebuild them in Keras."""
    # TensorFlow's C++ start-up chatter (CUDA probing, CPU flags) is noise for our users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# Output paths are checked by fileio (one-line OutputError), not by click.
OUTPUT_PATH = click.Path(path_type=str)
# The reader says what is wrong with a missing file or a directory.
MODEL = click.argument("model", type=click.Path(path_type=str))
SIGNATURE = click.option(
    "--signature",
    metavar="NAME",
    help="Work on this signature's subgraph (default: subgraph 0; `inspect` lists them).",
)
INPUT_SHAPE = click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="[NAME=]D,D,...",
    help="Fix a dynamic input (-1 dims) to this shape (default: its stored shape).",
)


@main.command()
@MODEL
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON document.")
@click.option("--tensors", is_flag=True, help="Also list every tensor.")
@click.option("--graph", "graph_path", type=OUTPUT_PATH, help="Write the graph (.graphml/.json/.dot).")
@click.option(
    "--ops", multiple=True, metavar="OP[,OP]", help="Op table: only these op types (e.g. CONV_2D,ADD)."
)
@click.option("--select", metavar="REGEX", help="Op table: only ops with an output name matching REGEX.")
def inspect(model, as_json, tensors, graph_path, ops, select):
    """Summarize a model: ops, shapes, quantization, signatures, metadata (no TensorFlow needed).

    Piped or redirected, the report is plain text with every name whole (no cut to 80 columns)."""
    from tfl_rebuild.tflite.lazy import defer_numpy

    defer_numpy()  # a float model's report needs no array: numpy was a third of the time
    from tfl_rebuild.commands import inspect as inspect_mod

    keep = inspect_mod.OpFilter.parse(ops, select)  # a bad regex fails before the model is read
    m = inspect_mod.read_hashed(model)
    if graph_path:
        from tfl_rebuild.tflite.graph import write_graph

        write_graph(m, graph_path)
    if as_json:
        click.echo(inspect_mod.to_json(m))
    else:
        inspect_mod.print_report(m, show_tensors=tensors, keep=keep)


@main.command()
@MODEL
@click.option("-o", "--output", required=True, type=OUTPUT_PATH, help="Output .npz file.")
@click.option(
    "--layout",
    type=click.Choice(["raw", "keras"]),
    default="raw",
    show_default=True,
    help="keras: transpose conv/dense kernels to Keras layout.",
)
@click.option("--dequantize", is_flag=True, help="Store quantized/fp16 constants as float32.")
def weights(model, output, layout, dequantize):
    """Export every constant tensor to one .npz, keyed by tensor name."""
    from tfl_rebuild.tflite.reader import read_model
    from tfl_rebuild.tflite.weights import export_weights

    m = read_model(model)
    n, nbytes = export_weights(m, output, layout=layout, dequantize=dequantize)
    click.echo(f"wrote {n} tensors ({nbytes / 1e6:.2f} MB) to {output}")


@main.command()
@MODEL
@click.option(
    "-o",
    "--output",
    "outdir",
    type=OUTPUT_PATH,
    help="Directory for the .npy files, index.json, summary.csv.",
)
@input_options
@click.option(
    "--random", "seed", type=int, help="Random inputs from this seed (for inputs no --input gives)."
)
@click.option("--select", metavar="REGEX", help="Only tensors whose name matches this regex.")
@click.option(
    "--ops", multiple=True, metavar="OP[,OP]", help="Only outputs of these op types (e.g. CONV_2D)."
)
@click.option("--save-patched", type=OUTPUT_PATH, help="Also write the patched .tflite here.")
@click.option(
    "--xnnpack",
    is_flag=True,
    help="Run with the XNNPACK delegate (tensors it folds into its weights are left out).",
)
@click.option("--num-threads", type=click.IntRange(min=1), help="Interpreter threads.")
@click.option("--force", is_flag=True, help="Write into a DIR that holds other files (they are left alone).")
@SIGNATURE
@INPUT_SHAPE
@stoppable
def dump(
    model,
    outdir,
    inputs,
    seed,
    select,
    ops,
    save_patched,
    xnnpack,
    num_threads,
    signature,
    input_shapes,
    force,
):
    """Every intermediate tensor from one run: one .npy each, index.json and summary.csv.

    An earlier dump in DIR is replaced (only the files its index.json lists); a DIR holding other
    files is refused unless --force, and those files are never touched."""
    from tfl_rebuild.commands import dump as dump_cmd

    if not outdir and not save_patched:
        raise click.UsageError("give -o DIR for the tensors, --save-patched FILE for the model, or both")
    opts = dump_cmd.Options(
        inputs=inputs,
        seed=seed,
        select=select,
        ops=ops,
        save_patched=save_patched,
        xnnpack=xnnpack,
        num_threads=num_threads,
        signature=signature,
        input_shapes=input_shapes,
        force=force,
    )
    dump_cmd.run(model, outdir, opts, click.echo)


@main.command()
@MODEL
@click.option("-o", "--output", "outdir", required=True, type=OUTPUT_PATH, help="Output directory.")
@click.option("--name", help="File stem of the generated module (default: the model's file name).")
@click.option(
    "--verify/--no-verify", default=True, show_default=True, help="Check the rebuild against TFLite."
)
@click.option(
    "--fake-quant/--no-fake-quant",
    default=None,
    help="Round activations to the int8 grid like the model does (default: on for int8 models).",
)
@click.option("--save-keras", type=OUTPUT_PATH, help="Also save the built model (.keras).")
@click.option(
    "--json", "json_out", metavar="FILE|-", help="Also write the verification report as JSON (- prints it)."
)
@click.option(
    "--backend",
    "backend_words",
    multiple=True,
    metavar="tensorflow|jax|torch|all",
    help="Verify on this Keras backend, in its own process (repeatable; default: this process's).",
)
@SIGNATURE
@INPUT_SHAPE
@stoppable
def keras(
    model, outdir, name, verify, fake_quant, save_keras, json_out, backend_words, signature, input_shapes
):
    """Write readable Keras source + weights that rebuild the model, and verify them."""
    from tfl_rebuild.commands.backends import parse_backends, require_backends

    backends = parse_backends(backend_words) if verify else ()
    require_extras("keras", "keras", "litert" if verify else None)  # Keras writes the .weights.h5
    require_backends("keras", backends)
    from tfl_rebuild.commands.keras import rebuild

    ok = rebuild(
        model,
        outdir,
        name=name,
        verify=verify,
        fake_quant=fake_quant,
        save_keras=save_keras,
        signature=signature,
        input_shapes=input_shapes,
        json_out=json_out,
        backends=backends,
    )
    sys.exit(0 if ok else 1)


@main.command()
@MODEL
@click.argument("module", type=INPUT_FILE_OR_FOLDER)
@input_options
@click.option("--random", "seed", type=int, default=0, show_default=True, help="Seed of the random input.")
@click.option("--json", "as_json", is_flag=False, flag_value="-", metavar="[FILE|-]", help="JSON (- prints).")
@click.option("--plot", type=OUTPUT_PATH, help="Write the per-layer error curve (png/svg/pdf).")
@click.option("--sqnr", type=float, help="Two models: a layer under this dB diverges (20; both float: 60).")
@click.option(
    "--model-explorer",
    "explorer",
    type=OUTPUT_PATH,
    help="Write Model Explorer node data (errors as colours on the graph).",
)
@click.option(
    "--local",
    is_flag=True,
    help="Feed each layer TFLite's own inputs: the error of each layer alone, not accumulated.",
)
@click.option("--map", "name_map", metavar="JSON|s/RE/REPL/", help="References: name their tensors.")
@stoppable
def compare(model, module, inputs, seed, as_json, plot, explorer, sqnr, local, name_map):
    """Layer by layer: each TFLite tensor against the generated Keras layer of the same name.

    `compare A.tflite B.tflite`: each tensor of B (e.g. int8) against A's (float): SQNR per layer.
    `compare model.tflite refs.npz|DIR`: against another framework's activations (--map).
    `compare M.tflite M.mlpackage`: each Core ML op against TFLite's tensor; float16's first break, NaN op."""
    from tfl_rebuild.verify.references import is_references

    if module.rstrip("/").endswith((".mlpackage", ".mlmodel")):
        require_extras("compare", "keras", "litert", "coreml")
        from tfl_rebuild.commands.compare_coreml import run as run_coreml

        sys.exit(run_coreml(model, module, seed, as_json, plot, explorer, sqnr, local, inputs=inputs))
    if module.endswith(".tflite") or is_references(module):
        require_extras("compare", "litert")
        from tfl_rebuild.commands.compare_models import run as run_models

        sys.exit(run_models(model, module, inputs, seed, as_json, plot, explorer, sqnr, local, name_map))
    if name_map:
        from tfl_rebuild.errors import InputError

        raise InputError("--map is for `compare MODEL REFS.npz|DIR` (references from another framework)")
    require_extras("compare", "keras", "litert")
    from tfl_rebuild.commands.compare import run

    sys.exit(run(model, module, inputs, seed, as_json, plot, explorer, local))


@main.command()
@click.argument("source", type=INPUT_FILE)
@click.option(
    "-o", "--output", type=OUTPUT_PATH, help="Output .mlpackage (.mlmodel for --format neuralnetwork)."
)
@click.option(
    "--tflite",
    type=INPUT_FILE,
    help="With a generated .py: the .tflite to check against (default: from its _tensors.json).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mlprogram", "neuralnetwork"]),
    default="mlprogram",
    show_default=True,
)
@click.option(
    "--minimum-deployment-target",
    "target",
    metavar="TARGET",
    help="e.g. iOS15..iOS18, macOS12..macOS15 (default: the lowest the format allows).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "float16", "float32", "mixed"]),
    default="auto",
    show_default=True,
    help="Compute precision; mixed: float16 but the fewest ops that must stay float32 to pass the "
    "check; auto: float16 when it passes, else mixed, else float32.",
)
@click.option("--image-input", metavar="NAME", help="Make this input an image (ImageType).")
@click.option("--scale", type=float, default=1.0, show_default=True, help="Image input: pixel scale.")
@click.option(
    "--bias", metavar="V[,V,V]", default="0", show_default=True, help="Image input: added after --scale."
)
@click.option("--color-layout", type=click.Choice(["RGB", "BGR"]), default="RGB", show_default=True)
@click.option(
    "--class-labels",
    type=INPUT_FILE,
    help="Labels file (one per line): make a classifier of the first output.",
)
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="NAME=D,D,...",
    help="Fixed or flexible input shape, e.g. image=1,64:512,64:512,3 (LOW:HIGH is a range).",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Verify the Keras rebuild and the converted numbers against TFLite.",
)
@click.option("--keras-dir", type=OUTPUT_PATH, help="Keep the generated Keras module here.")
@click.option(
    "--json", "json_out", metavar="FILE|-", help="Also write the result and checks as JSON (- prints)."
)
@stoppable
def coreml(
    source,
    output,
    tflite,
    fmt,
    target,
    precision,
    image_input,
    scale,
    bias,
    color_layout,
    class_labels,
    input_shapes,
    check,
    keras_dir,
    json_out,
):
    """Convert to Core ML through the generated Keras model and check the numbers against TFLite."""
    require_extras("coreml", "keras", "coreml", "litert" if check else None)
    from tfl_rebuild.commands.coreml import run_command
    from tfl_rebuild.coreml import convert as cm
    from tfl_rebuild.runtime.inputs import parse_floats

    if output:
        ensure_dir(os.path.dirname(output) or ".")
    if keras_dir:
        ensure_dir(keras_dir)
    if target and target not in cm.TARGETS:
        raise click.BadParameter(
            f"{target!r}; one of {', '.join(cm.TARGETS)}", param_hint="--minimum-deployment-target"
        )
    image = None
    if image_input:
        image = cm.ImageInput(image_input, scale, list(parse_floats(bias, "--bias")), color_layout)
    opts = cm.Options(
        format=fmt,
        target=target,
        precision=precision,
        image=image,
        class_labels=cm.read_labels(class_labels) if class_labels else None,
        shapes=dict(cm.parse_shape(s) for s in input_shapes),
    )
    sys.exit(
        run_command(
            source, output, opts, tflite=tflite, do_check=check, keras_dir=keras_dir, json_out=json_out
        )
    )


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Models checked at once, each in its own process.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=1800,
    show_default=True,
    help="Seconds one model may take; then its process is killed and its row says so.",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Compare the Keras and Core ML numbers with TFLite (--no-verify only builds and converts).",
)
@click.option(
    "--coreml/--no-coreml",
    "do_coreml",
    default=True,
    show_default=True,
    help="Also convert to Core ML and check the converted program.",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "float16", "float32", "mixed"]),
    default="auto",
    show_default=True,
    help="Core ML compute precision; auto: float16 when it passes the check, else mixed (fewest "
    "ops in float32), else float32.",
)
@click.option(
    "--json", "json_out", type=OUTPUT_PATH, metavar="FILE|-", help="Write every row as one JSON document."
)
@click.option(
    "--markdown", "md_out", type=OUTPUT_PATH, metavar="FILE|-", help="Write a Markdown coverage report."
)
@click.option(
    "--keep",
    type=OUTPUT_PATH,
    metavar="DIR",
    help="Keep each model's Keras module (and .mlpackage) in DIR/<path>/, its path flattened "
    "(a/m.tflite: DIR/a__m/; default: temporary).",
)
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="[NAME=]D,D,...",
    help="Fix a dynamic input to this shape in every model it fits (an input NAME, or a one-input "
    "model's input); others keep their stored shapes.",
)
@click.option(
    "--backends",
    "backend_words",
    multiple=True,
    metavar="tensorflow|jax|torch|all",
    help="Also verify each rebuild on these Keras backends, each in its own process: a column each.",
)
def check(
    paths, jobs, timeout, verify, do_coreml, precision, json_out, md_out, keep, input_shapes, backend_words
):
    """Every model end to end: unsupported ops, Keras rebuild + verify, Core ML + check; one row each.

    PATH: .tflite files, or directories (every *.tflite below them). Exit 0 when every model passes."""
    from tfl_rebuild.commands.backends import parse_backends, require_backends

    backends = parse_backends(backend_words, "--backends") if verify else ()
    require_extras("check", "keras", "litert", "coreml" if do_coreml else None)
    require_backends("check", backends)
    from tfl_rebuild.commands.check.command import run_command
    from tfl_rebuild.commands.check.rows import Options

    opts = Options(
        verify=verify,
        coreml=do_coreml,
        precision=precision,
        timeout=timeout,
        input_shapes=tuple(input_shapes),
        backends=backends,
    )
    sys.exit(run_command(list(paths), opts, jobs=jobs, json_out=json_out, md_out=md_out, keep=keep))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
