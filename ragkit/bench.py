"""The shared shell of the scripts in ``benchmarks/``: parse the arguments, echo the command,
run, print the markdown report, and write the JSON one when ``--json`` is given."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


def report_main(
    argv: Sequence[str] | None,
    parse_args: Callable[[Sequence[str]], Any],
    run: Callable[[Any, Callable[[str], None]], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
    command_line: Callable[[Sequence[str]], str],
) -> dict[str, Any]:
    """``parse_args`` must set ``args.argv`` (the arguments as given) and ``args.json`` (a
    ``Path`` or ``None``); ``run(args, say)`` prints progress lines through ``say``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print(f"$ {command_line(args.argv)}", flush=True)
    result = run(args, lambda line: print(line, flush=True))
    print(markdown(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
