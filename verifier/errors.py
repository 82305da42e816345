"""One exception root for everything lineage reports to a user.

Every error a user can cause (bad paths, broken files, unknown layouts, absent devices, bad
signatures) is a ``LineageError`` with a one-line message and the exit code the CLI contract
assigns to it. The CLI catches this root in one place; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes: a contract with QA scripts (see docs/exit-codes.md)."""

    OK = 0
    EXPECTATION_FAILED = 1
    USAGE = 2
    INCONCLUSIVE = 3
    INVALID_INPUT = 4
    INTEGRITY = 5
    #: a failure lineage did not foresee (a bug): never 1, which a QA gate reads as a verdict
    #: that contradicts --expect (70: EX_SOFTWARE in sysexits.h)
    INTERNAL = 70


class LineageError(Exception):
    """Root of all user-facing errors: ``message`` is one line, ``hint`` says what to do."""

    exit_code: ExitCode = ExitCode.INVALID_INPUT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class InputError(LineageError):
    """A model path, file or tensor that cannot be read as what it claims to be."""


class NonFiniteError(InputError):
    """A probe's similarities hold NaN or Inf: non-finite weights (or weights so large that
    float32 products overflow) reached a comparison, where no statistic means anything."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} hold NaN or Inf values: a model has non-finite weights where the probes "
            "compare them (or weights so large that float32 products overflow)",
            hint="`lineage inspect MODEL --scan` names the tensors that hold NaN or Inf",
        )


class ArchitectureError(InputError):
    """Tensors were read but their layout is not one lineage knows."""


class BackendError(LineageError):
    """A compute backend was requested that is absent or broken on this host."""


class UnknownBackendError(BackendError):
    """A backend name lineage does not know (``--backend CPU``): a mistake in the command line,
    not something absent from this host."""

    exit_code = ExitCode.USAGE


class UsageError(LineageError):
    """Options that contradict each other or name things that do not exist."""

    exit_code = ExitCode.USAGE


class IntegrityError(LineageError):
    """A signature, digest or file set that does not verify."""

    exit_code = ExitCode.INTEGRITY
