"""The analysis commands' argument parser: a bad request is one line on stderr and exit 2,
like every other bad input of the platform."""

from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)
