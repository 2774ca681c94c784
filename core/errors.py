"""Errors a user can act on: each renders as one line naming the problem and the fix."""

from __future__ import annotations

__all__ = [
    "BATCH_FAILURES_EXIT",
    "elide",
    "first_line",
    "OnnxsmithError",
    "InputError",
    "RecipeError",
    "DataError",
    "PassFailure",
    "AccuracyBudgetExceeded",
    "GateFailed",
]


class OnnxsmithError(Exception):
    """Base of every error the CLI shows as a single line instead of a traceback.

    ``problem`` says what is wrong, ``fix`` says what to do about it; ``exit_code`` is what
    the CLI exits with (2 for bad input, as command-line tools conventionally do).
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str = "", *, report: object | None = None) -> None:
        self.problem = problem
        self.fix = fix
        self.report = report  # the run's report where one was made (gates): the CLI prints it with --json
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """``problem; fix``, each cut in the middle past a few hundred characters: a message may
        echo a value from the input (a recipe's megabyte-long pass name, an expanded alias)."""
        problem = elide(self.problem, PROBLEM_LIMIT)
        return f"{problem}; {elide(self.fix, FIX_LIMIT)}" if self.fix else problem


class InputError(OnnxsmithError):
    """The model file (or PyTorch source) cannot be used as given."""


class RecipeError(OnnxsmithError):
    """The recipe or pipeline string is invalid: unknown pass, option or value."""


class DataError(OnnxsmithError):
    """Calibration or evaluation data does not match the model."""


class PassFailure(OnnxsmithError):
    """A pass raised or produced a model that failed verification."""

    exit_code = 3


class AccuracyBudgetExceeded(OnnxsmithError):
    """The optimized model drifted further from the original than the budget allows."""

    exit_code = 4


class GateFailed(OnnxsmithError):
    """The artifact was written but misses a CI gate (--min-speedup, --max-size)."""

    exit_code = 5


BATCH_FAILURES_EXIT = 6  # batch: some models failed, the others were converted (not 1: that is a bug of ours)


PROBLEM_LIMIT, FIX_LIMIT = 600, 300


def elide(text: str, limit: int) -> str:
    """``text`` whole up to ``limit`` characters, else its start and end around the number cut out."""
    if len(text) <= limit:
        return text
    keep = (limit - 30) // 2
    return f"{text[:keep]}...[{len(text) - 2 * keep} characters]...{text[-keep:]}"


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
