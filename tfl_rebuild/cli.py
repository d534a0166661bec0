"""Command line: tfl-rebuild inspect | weights | dump | keras | compare | coreml | check.

Heavy modules are imported inside each command so `inspect` starts fast. Every error that is
the input's fault is a `TflRebuildError`: printed as one line, exit code 2.
"""

from __future__ import annotations

import sys

import click

from .errors import TflRebuildError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TflRebuildError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tfl-rebuild")
def main():
    """See inside TensorFlow Lite models, debug them layer by layer, rebuild them in Keras."""


MODEL = click.argument("model", type=click.Path(dir_okay=False, path_type=str))


@main.command()
@MODEL
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON document.")
@click.option("--tensors", is_flag=True, help="Also list every tensor.")
@click.option("--graph", "graph_path", type=click.Path(dir_okay=False), help="Write the graph (.graphml/.json/.dot).")
def inspect(model, as_json, tensors, graph_path):
    """Summarize a model: ops, shapes, quantization, signatures, metadata (no TensorFlow needed)."""
    from . import inspect as inspect_mod
    from .reader import read_model

    m = read_model(model)
    if graph_path:
        from .graph import write_graph

        write_graph(m, graph_path)
    if as_json:
        click.echo(inspect_mod.to_json(m))
    else:
        inspect_mod.print_report(m, show_tensors=tensors)


@main.command()
@MODEL
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .npz file.")
@click.option("--layout", type=click.Choice(["raw", "keras"]), default="raw", show_default=True,
              help="keras: transpose conv/dense kernels to Keras layout.")
@click.option("--dequantize", is_flag=True, help="Store quantized/fp16 constants as float32.")
def weights(model, output, layout, dequantize):
    """Export every constant tensor to one .npz, keyed by tensor name."""
    from .reader import read_model
    from .weights import export_weights

    m = read_model(model)
    n, nbytes = export_weights(m, output, layout=layout, dequantize=dequantize)
    click.echo(f"wrote {n} tensors ({nbytes / 1e6:.2f} MB) to {output}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
