"""The typer app: global flags, command registration, and errors rendered as one line.

Commands import the library inside their functions, so ``onnxsmith --help`` never loads
onnx, onnxruntime or torch.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from typer.core import TyperOption

from onnxsmith.cli import backends_cmd, batch_cmd, inspect_cmd, optimize_cmd, passes_cmd, profile_cmd, recipe_cmd, target_cmd

_type_label = getattr(TyperOption, "display_type_rich", None)


def _flag_without_type(self: TyperOption, ctx) -> str | None:
    """typer labels every flag's column ``<bool>``, its own --help and --install-completion
    included, though a flag takes no value: show nothing there, as click does."""
    return None if self.is_flag and self.metavar is None else _type_label(self, ctx)


if _type_label is not None:  # typer 0.29 has no setting for it; tests/test_cli.py checks the help of every command
    TyperOption.display_type_rich = _flag_without_type

app = typer.Typer(
    name="onnxsmith",
    help="Optimize ONNX models for the runtime you deploy on: fuse, prune, quantize, verify, profile.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("inspect")(inspect_cmd.inspect)
app.command("passes")(passes_cmd.passes)
app.command("optimize")(optimize_cmd.optimize)
app.command("profile")(profile_cmd.profile)
app.command("backends")(backends_cmd.backends)
app.command("batch")(batch_cmd.batch)
app.command("target")(target_cmd.target)
app.add_typer(recipe_cmd.app, name="recipe")


def _version(value: bool) -> None:
    if value:
        from onnxsmith import __version__

        typer.echo(f"onnxsmith {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    """onnxsmith: load a model, run a pass pipeline, write a verified artifact and a report."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        for handler in logging.getLogger().handlers:
            handler.addFilter(OneLineLogs())


class OneLineLogs(logging.Filter):
    """Library warnings as one line on stderr, their tracebacks only with --debug: onnx_ir logs
    a failed shape inference (which the run survives) as a WARNING with the whole traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from onnxsmith.cli.console import clean
        from onnxsmith.errors import first_line

        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message} ({type(error).__name__}: {first_line(error)})"
        record.msg, record.args = clean(message.splitlines()[0] if message else message), ()
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def run() -> None:
    """Console entry point: known errors become one line on stderr and a non-zero exit code.

    typer's standalone mode handles usage errors (exit 2) and ``--help``; what escapes it
    is ours to render.
    """
    from onnxsmith.cli.console import clean
    from onnxsmith.errors import OnnxsmithError, elide

    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except OnnxsmithError as e:
        if debug:
            raise
        sys.stderr.write(f"error: {clean(e.one_line())}\n")  # names in it may come from the model
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; nothing was written\n")
        sys.exit(130)
    except Exception as e:
        if debug:
            raise
        sys.stderr.write(f"internal error: {type(e).__name__}: {clean(elide(str(e), 600))} (rerun with --debug for the traceback, and report it)\n")
        sys.exit(1)
