"""Errors a user can act on: each renders as one line naming the problem and the fix."""

from __future__ import annotations

__all__ = [
    "first_line",
    "OnnxsmithError",
    "InputError",
    "RecipeError",
    "DataError",
    "PassFailure",
    "AccuracyBudgetExceeded",
]


class OnnxsmithError(Exception):
    """Base of every error the CLI shows as a single line instead of a traceback.

    ``problem`` says what is wrong, ``fix`` says what to do about it; ``exit_code`` is what
    the CLI exits with (2 for bad input, as command-line tools conventionally do).
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


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


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
