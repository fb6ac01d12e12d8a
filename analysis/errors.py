"""The typed error the analysis library raises; the CLI turns it into one line and exit code 2."""

from __future__ import annotations


class ResultsError(ValueError):
    """A results set is missing or unusable; the message names the file and the problem."""
