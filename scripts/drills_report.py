#!/usr/bin/env python3
"""Turns a drills report (bench/results/drills-*.json) into the markdown table of
docs/reliability.md: prints it, and rewrites the section between the drills markers of the
file given as the third argument (`-`: print only)."""
import json
import platform
import re
import subprocess
import sys

report_path, build, target = sys.argv[1], sys.argv[2], sys.argv[3]
with open(report_path, encoding="utf-8") as f:
    report = json.load(f)


def cpu():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = re.search(r"Model name:\s*(.+)", out)
        return model.group(1).strip() if model else platform.processor()
    except OSError:
        return platform.processor()


def pct(x):
    return f"{x * 100:.1f} %"


s = report["settings"]
lines = [
    f"Measured {report['date'][:10]} on {platform.machine()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, {cpu()}; "
    f"`{build}` build, profile `{report['profile']}`: {s['users']} simulated members (half browsing, half "
    f"checking out and paying), {s['warmup_s']} s before the fault, {s['fault_s']} s of fault "
    f"({s['broker_outage_s']} s for the broker), {s['recovery_s']} s after; request deadline "
    f"{report['deadline_ms']} ms. Raw numbers: `{report_path}`.",
    "",
    "| drill | load before | success during | checkouts during | success after | first checkout after healing | outbox drained | unknown outcomes | orders | violations |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for d in report["drills"]:
    rec = d["recovery_s"]
    drain = d["drain_s"]
    lines.append(
        f"| {d['drill']} | {d['before']['per_sec']:.0f} req/s | {pct(d['during']['success'])} | "
        f"{pct(d['during']['checkout_success'])} | {pct(d['after']['success'])} | "
        f"{'—' if rec is None else f'{rec:.2f} s'} | {'no' if drain is None else f'{drain:.1f} s'} | "
        f"{d['unknown_outcomes']} | {d['orders']} | {len(d['violations'])} |"
    )
violations = [f"- {d['drill']}: {v}" for d in report["drills"] for v in d["violations"]]
lines.append("")
lines.append("Violations: none." if not violations else "Violations:\n" + "\n".join(violations))
table = "\n".join(lines)
print(table)

if target != "-":
    with open(target, encoding="utf-8") as f:
        doc = f.read()
    start, end = "<!-- drills:start -->", "<!-- drills:end -->"
    i, j = doc.index(start) + len(start), doc.index(end)
    with open(target, "w", encoding="utf-8") as f:
        f.write(doc[:i] + "\n" + table + "\n" + doc[j:])
