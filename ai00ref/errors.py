"""Errors a user sees as one readable line."""
from __future__ import annotations

from os import PathLike


class ModelFileError(ValueError):
    """A model, state or LoRA file that cannot be used: the message names the file and the problem."""

    def __init__(self, path: str | PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
