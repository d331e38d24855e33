"""``models``, ``layers``, ``methods``: what camcli can explain, without explaining.
"""

from __future__ import annotations

import json

import click

from camcli.cli.app import main, storage, translate_errors, verbosity_options


@main.command()
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))
@verbosity_options
def models(fmt):
    """List the built-in models: input size, default layer, CAM, weights availability."""
    from camcli.compute.models import BUILTIN, DEFAULT_MODEL

    rows = [{"name": spec.name, "default": spec.name == DEFAULT_MODEL,
             "input_size": list(spec.input_size), "layer": spec.target_layer,
             "cam": spec.cam, "weights": spec.availability(), "description": spec.description}
            for spec in BUILTIN.values()]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    header = f"{'model':<20} {'input':<8} {'default layer':<18} {'cam':<4} weights"
    click.echo(header)
    for row in rows:
        name = row["name"] + (" *" if row["default"] else "")
        size = "x".join(map(str, row["input_size"]))
        click.echo(f"{name:<20} {size:<8} {row['layer']:<18} {'yes' if row['cam'] else 'no':<4} "
                   f"{row['weights']}")
    click.echo("\n* default. 'cam: no' models are explained with gradcam.")


@main.command(short_help="List the layers --layer accepts, with their shapes and the default.")
@click.argument("model", metavar="NAME|PATH")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]),
              help="table for people; json for scripts (stdout holds nothing else).")
@click.option("--unsafe-model-code", is_flag=True,
              help="Run Python code stored in a model file (Lambda layers); only for files "
                   "you trust.")
@verbosity_options
@translate_errors
def layers(model, fmt, unsafe_model_code):
    """List every address --layer accepts on MODEL (a built-in name or a .keras / .h5
    file): each layer with a 4-D output, or a 3-D token output with its prefix tokens and
    patch grid, '/'-separated through nested models and the layers a layer holds
    (keras-hub's transformer blocks, with their ':input'), its output shape, and the one
    explained by default. Built-ins are listed without their weights (nothing is
    downloaded).
    """
    from camcli.compute.models import addresses, architecture

    keras_model, registered = architecture(model, unsafe_model_code, storage())
    found = addresses.layers(keras_model, registered)
    if fmt == "json":
        click.echo(json.dumps([
            {"address": f.address, "shape": list(f.shape),
             "grid": [f.grid.height, f.grid.width] if f.grid else None,
             "prefix_tokens": f.grid.prefix if f.grid else None, "default": f.default}
            for f in found], indent=2))
        return
    width = max([len("address")] + [len(f.address) for f in found])
    click.echo(f"{'address':<{width}}  shape")
    for f in found:
        shape = "x".join("?" if d is None else str(d) for d in f.shape[1:])
        if len(f.shape) == 3:
            shape += (f"  tokens: {f.grid.prefix} + {f.grid.height}x{f.grid.width}" if f.grid
                      else "  tokens: give --token-grid / --prefix-tokens")
        click.echo(f"{f.address:<{width}}  {shape}{'  (default)' if f.default else ''}")


@main.command()
@verbosity_options
def methods():
    """List the CAM methods: paper, cost per image, when to use each (Markdown)."""
    from camcli.compute.methods import methods_table

    click.echo(methods_table())
