#!/usr/bin/env python3
"""Judge a kosoku (Autobahn testsuite) fuzzingclient report.

Usage: check_report.py REPORT_DIR_OR_INDEX_JSON [--min-cases N]

kosoku writes ``index.json`` into its output directory, shaped as Autobahn's:

    {"<agent>": {"<case id>": {"behavior": "OK", "behaviorClose": "OK",
                               "duration": 1, "remoteCloseCode": 1000,
                               "reportfile": "<agent>_case_1_1_1.json"}, ...}}

``<agent>`` is the server's ``Server`` response header, or ``host:port`` when
the server sends none. Each case also has a detail file (``reportfile``) with
the prose reasons (``result`` / ``resultClose``) printed here for bad cases.

A case passes when (this is exactly kosoku's own ``CaseResult.passed``):
  * ``behavior``      is OK, NON-STRICT or INFORMATIONAL, and
  * ``behaviorClose`` is OK or INFORMATIONAL
    (not FAILED, UNCLEAN, WRONG CODE or FAILED BY CLIENT).
The single exception: UNIMPLEMENTED is tolerated for the permessage-deflate
families 12.* and 13.*, should they ever be run (the harness excludes them).

Exit status: 0 all cases passed; 1 some case did not pass, or too few cases
ran; 2 the report is missing, unreadable or empty.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

OK_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
OK_CLOSE = {"OK", "INFORMATIONAL"}
# Display order; anything else kosoku reports (ERROR, NO_CLOSE, ...) follows.
BEHAVIOR_ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]
CLOSE_ORDER = ["OK", "INFORMATIONAL", "WRONG CODE", "FAILED BY CLIENT", "UNCLEAN", "FAILED"]


def case_key(case_id: str) -> list[int]:
    try:
        return [int(p) for p in case_id.split(".")]
    except ValueError:
        return [1 << 30]


def counts_line(counter: Counter[str], order: list[str]) -> str:
    keys = order + sorted(k for k in counter if k not in order)
    return " ".join(f"{k}={counter.get(k, 0)}" for k in keys)


def detail(report_dir: Path, entry: dict) -> dict:
    try:
        return json.loads((report_dir / entry["reportfile"]).read_text())
    except (OSError, KeyError, ValueError):
        return {}


def main() -> int:
    ap = argparse.ArgumentParser(description="Judge a kosoku/Autobahn index.json")
    ap.add_argument("report", help="report directory (containing index.json) or the index.json itself")
    ap.add_argument("--min-cases", type=int, default=200,
                    help="fail if fewer cases than this were run (default: %(default)s)")
    args = ap.parse_args()

    index_path = Path(args.report)
    if index_path.is_dir():
        index_path = index_path / "index.json"
    report_dir = index_path.parent

    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        print(f"autobahn: FAIL: no report at {index_path} (kosoku did not finish?)")
        return 2
    except (OSError, ValueError) as exc:
        print(f"autobahn: FAIL: unreadable report {index_path}: {exc}")
        return 2
    if not isinstance(index, dict) or not index:
        print(f"autobahn: FAIL: empty report {index_path}")
        return 2

    behavior: Counter[str] = Counter()
    close: Counter[str] = Counter()
    family_ms: dict[str, int] = defaultdict(int)
    bad: list[tuple[str, str, dict]] = []
    total = 0
    for agent, cases in index.items():
        if not isinstance(cases, dict):
            print(f"autobahn: FAIL: malformed report entry for agent {agent!r}")
            return 2
        for case_id, entry in cases.items():
            total += 1
            b = entry.get("behavior", "<missing>")
            c = entry.get("behaviorClose", "<missing>")
            behavior[b] += 1
            close[c] += 1
            family_ms[case_id.split(".")[0]] += int(entry.get("duration") or 0)
            family = case_id.split(".")[0]
            b_ok = b in OK_BEHAVIOR or (b == "UNIMPLEMENTED" and family in ("12", "13"))
            c_ok = c in OK_CLOSE or (b == "UNIMPLEMENTED" and b_ok)
            if not (b_ok and c_ok):
                bad.append((agent, case_id, entry))

    agents = ", ".join(repr(a) for a in index)
    print(f"autobahn: {total} cases (agent {agents})")
    print(f"autobahn: behavior      {counts_line(behavior, BEHAVIOR_ORDER)}")
    print(f"autobahn: behaviorClose {counts_line(close, CLOSE_ORDER)}")
    fams = sorted(family_ms, key=lambda f: case_key(f))
    print("autobahn: case time per family (s) "
          + " ".join(f"{f}.*={family_ms[f] / 1000:.1f}" for f in fams)
          + f" total={sum(family_ms.values()) / 1000:.1f}")

    for agent, case_id, entry in sorted(bad, key=lambda t: case_key(t[1])):
        d = detail(report_dir, entry)
        reason = d.get("result") or "?"
        close_reason = d.get("resultClose") or ""
        remote = entry.get("remoteCloseCode")
        print(f"  {entry.get('behavior')} {case_id}: {reason}"
              f" | close={entry.get('behaviorClose')} remoteCloseCode={remote}"
              + (f" ({close_reason})" if close_reason else "")
              + f" | {report_dir / entry.get('reportfile', '?')}")

    failed = len(bad)
    rc = 0
    if failed:
        rc = 1
    if total < args.min_cases:
        print(f"autobahn: FAIL: only {total} cases ran, expected at least {args.min_cases}")
        rc = 1
    # Plain closing line ("N passed, N failed") for CI log readers.
    print(f"autobahn: {total - failed} passed, {failed} failed")
    return rc


if __name__ == "__main__":
    sys.exit(main())
