"""The shared shell of the scripts in ``benchmarks/``: parse the arguments, echo the command,
run, print the markdown report, and write the JSON one when ``--json`` is given; the parser every
benchmark starts from, and the offline environment they run in.

It measures nothing itself and imports nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# nothing a benchmark runs may reach a model hub; set before transformers is imported
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def offline() -> None:
    """Set ``OFFLINE`` in the environment (values already set are kept)."""
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)


def versions(dists: Sequence[str], *, missing: str | None = "not installed") -> dict[str, str]:
    """Python's version and each distribution's (``missing`` for one not installed; ``None``:
    leave it out), for a report's environment section."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if missing is not None:
                out[dist] = missing
    return out


def bench_parser(description: str) -> argparse.ArgumentParser:
    """A benchmark's argument parser, with the ``--json`` option ``report_main`` reads."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


def report_main(
    argv: Sequence[str] | None,
    parse_args: Callable[[Sequence[str]], Any],
    run: Callable[[Any, Callable[[str], None]], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
    command_line: Callable[[Sequence[str]], str],
) -> dict[str, Any]:
    """``parse_args`` must give ``args.json`` (a ``Path`` or ``None``: ``bench_parser`` adds it);
    ``args.argv`` is set to the arguments as given; ``run(args, say)`` prints progress lines
    through ``say``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    vars(args).setdefault("argv", argv)  # the arguments as given, for the echoed command
    print(f"$ {command_line(args.argv)}", flush=True)
    result = run(args, lambda line: print(line, flush=True))
    print(markdown(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
