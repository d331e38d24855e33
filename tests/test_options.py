"""Every command-line option reaches the field it sets, by name: a renamed field or option
fails here instead of silently leaving a field at its default."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from camcli import options as options_module
from camcli.cli import main
from camcli.cli.params import Location
from camcli.options import Given

# -- the mechanism ------------------------------------------------------------------------


def test_a_renamed_field_is_an_error_not_a_default():
    @dataclasses.dataclass(frozen=True)
    class Style:
        alpha: float = 0.4

    @dataclasses.dataclass(frozen=True)
    class Renamed:  # the same object after someone renamed its field
        opacity: float = 0.4

    given = Given({"alpha": 0.9})
    assert given.build(Style).alpha == 0.9
    given.close()

    given = Given({"alpha": 0.9})
    assert given.build(Renamed).opacity == 0.4  # the value found no field...
    with pytest.raises(TypeError, match="options that configure nothing: alpha"):
        given.close()  # ...and that is an error


def test_a_value_is_taken_once():
    given = Given({"alpha": 0.9, "ray_address": "h:1"})
    assert given.take("ray_address") == "h:1"
    with pytest.raises(KeyError):
        given.take("ray_address")
    given.build(options_module.RenderStyle)
    given.close()


# -- every option of every command ----------------------------------------------------------

#: Options given but not looked for: the command uses them itself, with no field to reach
#: (checked by the command's own tests).
USED_BY_THE_COMMAND = {
    "predict": {"top_k", "fmt"},
    "batch": {"metrics", "engine"},
    "audit": {"fmt"},
    "score": {"fmt"},
}

#: Options not given: they exclude another option given here (-o with --out), are the old
#: name of one (train --out), or are refused with a reason (train --labels).
NOT_GIVEN = {"cam": {"output"}, "gradcam": {"output"}, "explain": {"output"},
             "train": {"legacy_out", "labels_file"}}

#: Options whose field has another name: option -> (object, field).
RENAMED = {"ray_address": ("RayOptions", "address"), "layer": ("train", "layers")}

#: Options given once whose field holds a tuple.
TUPLED = {"layer"}

#: A valid value that differs from the default, for options a callback parses; the value
#: the field then holds.
PARSED = {"shard": ("2/3", (2, 3)), "actors": ("2:3", (2, 3)), "token_grid": ("3x4", (3, 4)),
          "colormap": ("viridis", "viridis"), "class_from": ("folder", "folder"),
          "clusters": ("3", 3)}


class Stop(Exception):
    """Raised where a command would start working: everything is configured by then."""


@pytest.fixture
def built(monkeypatch):
    """What a command builds: every request object (`Given.build`), and the arguments of
    the library calls the commands make, which do nothing here."""
    import camcli.analysis.audit
    import camcli.analysis.score
    import camcli.run.batch
    import camcli.run.session
    import camcli.run.single
    import camcli.run.train

    made: dict[str, object] = {}
    real_build = Given.build

    def build(self, cls, **more):
        made[cls.__name__] = real_build(self, cls, **more)
        return made[cls.__name__]

    class Session:  # what open_session would return, for the commands that go on
        def stream(self, items, batch_size, workers=None):
            made["stream"] = {"batch_size": batch_size}
            return iter(())

    def open_session(model, explain, progress=None, storage=None):
        return Session()

    def explain_images(items, session, output, out_dir, style, batch_size):
        made["explain_images"] = {"out_dir": out_dir, "batch_size": batch_size}
        return iter(())

    def batch(inputs, model, explain, options, ray, *args, **kwargs):
        assert ray is made["RayOptions"]  # --engine ray: the options go to the engine
        raise Stop

    def train(tree, model, settings, reporter, layers, command, storage):
        made["train"] = {"layers": layers}
        raise Stop

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(Given, "build", build)
    monkeypatch.setattr(camcli.run.session, "open_session", open_session)
    monkeypatch.setattr(camcli.run.single, "explain_images", explain_images)
    monkeypatch.setattr(camcli.run.batch, "run", batch)
    monkeypatch.setattr(camcli.run.train, "train", train)
    monkeypatch.setattr(camcli.analysis.audit, "run", stop)
    monkeypatch.setattr(camcli.analysis.score, "score", stop)
    return made


def value_for(param: click.Option, context: click.Context, tmp_path):
    """A valid command-line value of ``param`` other than its default, and the value its
    field should then hold."""
    if param.name in PARSED:
        return PARSED[param.name]
    kind = param.type
    if param.is_flag:
        return None, not param.get_default(context)
    if isinstance(kind, click.Choice):
        default = param.get_default(context)
        choice = next(c for c in kind.choices if c != default)
        return choice, choice
    if isinstance(kind, Location):  # a file or folder that exists (or a URL)
        kind = kind._local
    if isinstance(kind, click.Path):
        if kind.file_okay:
            path = tmp_path / f"{param.name}.txt"
            path.write_text("a\nb\nc\n")
        else:
            path = tmp_path / f"{param.name}-folder"
        return str(path), str(path)
    if isinstance(kind, (click.IntRange, click.FloatRange)):
        low = kind.min if kind.min is not None else 0
        value = low + 3 if isinstance(kind, click.IntRange) else round((low + (
            kind.max if kind.max is not None else low + 1)) / 2 + 0.05, 3)
        if kind.max is not None and value > kind.max:
            value = kind.max
        return str(value), value
    if kind == click.INT:
        return "7", 7
    if kind == click.FLOAT:
        return "0.25", 0.25
    return f"value-of-{param.name}", f"value-of-{param.name}"


COMMANDS = {"predict": "IMAGE", "cam": "IMAGE", "gradcam": "IMAGE", "explain": "IMAGE",
            "batch": "IMAGE", "train": "TREE", "audit": "TREE", "score": "IMAGE"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_reaches_its_field(name, built, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    (tmp_path / "tree").mkdir()
    command = main.commands[name]
    context = click.Context(command)
    args = [str(tmp_path / "tree") if COMMANDS[name] == "TREE" else str(image)]
    expected = {}
    for param in command.params:
        if not isinstance(param, click.Option) or not param.expose_value \
                or param.name in NOT_GIVEN.get(name, ()):
            continue
        given, want = value_for(param, context, tmp_path)
        on = param.is_flag and param.get_default(context)  # --report/--no-report: give --no-...
        flag = max(param.secondary_opts if on else param.opts, key=len)
        args += [flag] if given is None else [flag, given]
        if param.name not in USED_BY_THE_COMMAND.get(name, ()):
            expected[param.name] = (want,) if param.multiple or param.name in TUPLED else want
    result = CliRunner().invoke(main, [name, *args])
    assert isinstance(result.exception, Stop) or result.exit_code == 0, result.output
    reached = {}
    for option, want in expected.items():
        holder, field = RENAMED.get(option, (None, option))
        places = [(kind, values) for kind, values in _fields(built).items()
                  if (holder is None or kind == holder) and field in values]
        assert places, f"{name} {option}: reaches no field (objects: {sorted(built)})"
        for kind, values in places:
            reached[option] = kind
            got = values[field]
            if option in ("layers", "layer", "patterns"):
                got = tuple(got)
            assert got == want, f"{name} {option} -> {kind}.{field}: {got!r} != {want!r}"
    assert set(reached) == set(expected)


def _fields(built: dict) -> dict[str, dict]:
    found = {}
    for kind, value in built.items():
        found[kind] = value if isinstance(value, dict) else {
            item.name: getattr(value, item.name) for item in dataclasses.fields(value)}
    return found
