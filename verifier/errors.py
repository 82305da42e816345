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


class ArchitectureError(InputError):
    """Tensors were read but their layout is not one lineage knows."""


class BackendError(LineageError):
    """A compute backend was requested that is absent or broken on this host."""


class UsageError(LineageError):
    """Options that contradict each other or name things that do not exist."""

    exit_code = ExitCode.USAGE


class IntegrityError(LineageError):
    """A signature, digest or file set that does not verify."""

    exit_code = ExitCode.INTEGRITY
