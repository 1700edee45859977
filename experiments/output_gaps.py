"""How long a command leaves its user staring at nothing: ``python experiments/output_gaps.py [--json PATH] -- CMD ...``

Starts ``CMD`` with stdout and stderr merged, stamps every line it prints (a status line redrawn
with ``\\r`` counts as a line) with the seconds since the start and the gap since the previous
line, echoes the stamped output, and ends with a summary: when the first line came, the longest
silent gap and the line that ended it, the total. ``--json PATH`` also writes the summary and
every stamped line. Measured with it: ``experiments/results/first_contact_cpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def stamped_lines(command: list[str]) -> tuple[list[dict], int, float]:
    """``(lines, exit status, total seconds)``; each line ``{"t", "gap", "text"}`` in seconds."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines, pending, last = [], b"", start
    while chunk := os.read(child.stdout.fileno(), 65536):
        pending += chunk
        *complete, pending = pending.replace(b"\r", b"\n").split(b"\n")
        now = time.perf_counter()
        for raw in complete:
            text = raw.decode(errors="replace").rstrip()
            if text:
                lines.append({"t": now - start, "gap": now - last, "text": text})
                print(f"{now - start:7.1f} +{now - last:5.1f} | {text}", flush=True)
                last = now
    status = child.wait()
    end = time.perf_counter()
    lines.append({"t": end - start, "gap": end - last, "text": "<exit>"})
    return lines, status, end - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the summary and the stamped lines here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    lines, status, total = stamped_lines(command)
    longest = max(lines, key=lambda line: line["gap"])
    summary = {"command": command, "exit_status": status, "total_s": round(total, 1),
               "first_line_s": round(lines[0]["t"], 2), "longest_gap_s": round(longest["gap"], 1),
               "longest_gap_ended_by": longest["text"], "lines": len(lines) - 1}
    print(f"exit {status}; first line after {summary['first_line_s']} s; longest gap {summary['longest_gap_s']} s, "
          f"ended by: {longest['text'][:100]}; total {summary['total_s']} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**summary, "stamped": lines}, f, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
