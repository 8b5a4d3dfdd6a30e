"""The one error type that library code raises for bad input, and the entry points' parser.

Library code never exits the process: it raises ``InputError`` naming the flag or the file the
problem is about, and only the command-line entry points turn it into a one-line message and
exit status 2 (a caller's ``except ValueError`` still catches it). Their flags are parsed by a
``OneLineParser``, whose own errors (an unknown flag, a bad choice) read the same way.
"""

import argparse
from typing import Optional


class OneLineParser(argparse.ArgumentParser):
    """argparse for the entry points: a parsing error is one line, ``<prog>: error: <what>``, and
    exit status 2, without the usage argparse would print in front of it (dozens of lines)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists every flag)\n")


class InputError(ValueError):
    """Bad user input: a flag value or a file. ``subject`` is the flag (``--ratio``) or path."""

    def __init__(self, subject: str, message: Optional[str] = None):
        if message is None:
            # Rebuilt from its text alone: by pickle (its args: the text itself), or by torch
            # re-raising a DataLoader worker's error (the worker's traceback, which ends with
            # "...InputError: <subject>: <message>"; the message may span lines).
            text = subject.strip()
            at = text.rfind("InputError: ")
            text = text[at + len("InputError: ") :] if at >= 0 else text
            subject, _, message = text.partition(": ")
        self.subject = subject
        super().__init__(f"{subject}: {message}")
