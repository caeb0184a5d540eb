"""The one table `gpu_all.sh` prints: every headline figure of the GPU benchmarks against its goal.

Reads the JSON lines the benchmark scripts append (`--json FILE`) and prints a markdown table
(figure, measured, goal, met) ready for `benchmarks/README.md`, headed by the card and the date.

    python benchmarks/gpu_table.py FIGURES.jsonl
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

WIDE, THIN = "wrn34-10", "wrn34-0.5"
GOALS = {WIDE: (1040.0, 2.5), THIN: (5000.0, 5.0)}  # img/s, and the speed-up over the fp32 reference loop


def rows(figures: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, measured, goal, met) for every figure the scripts produced."""
    out: list[tuple[str, str, str, bool | None]] = []
    step = figures.get("gpu_step", {})
    for model, ips in step.items():
        if not isinstance(ips, dict):
            continue
        goal_ips, goal_x = GOALS.get(model, (None, None))
        best = max(ips["graph bf16+cl"], ips["graph fp32"])
        out.append((f"{model} step, best graph side (img/s)", f"{best:,.0f}", f">= {goal_ips:,.0f}" if goal_ips else "",
                    best >= goal_ips if goal_ips else None))  # fmt: skip
        speedup = best / ips["ref fp32"]
        out.append((f"{model} step / fp32 reference loop", f"{speedup:.2f}x", f">= {goal_x}x" if goal_x else "",
                    speedup >= goal_x if goal_x else None))  # fmt: skip
        out.append((f"{model} graph / eager (bf16+cl)", f"{ips['graph bf16+cl'] / ips['eager bf16+cl']:.2f}x", "(what graphs give)", None))
        out.append((f"{model} fused / foreach SGD (eager)", f"{ips['eager bf16+cl'] / ips['eager bf16+cl foreach']:.2f}x", "(what the fused optimizer gives)", None))
        if "graph bf16+cl+compile" in ips:
            out.append((f"{model} compile / graph (bf16+cl)", f"{ips['graph bf16+cl+compile'] / ips['graph bf16+cl']:.2f}x", "(what fused BN + ReLU gives)", None))
        out.append((f"{model} bf16 / fp32 (graphs); auto picks", f"{ips['graph bf16+cl'] / ips['graph fp32']:.2f}x; {ips['auto']}", "auto picks the faster", (ips["graph bf16+cl"] >= ips["graph fp32"]) == (ips["auto"] == "bf16")))
        if model == WIDE:
            ratio = ips["floor"] / ips["graph bf16+cl"]
            out.append((f"{model} time / floor of its passes", f"{ratio:.2f}", "<= 1.15", ratio <= 1.15))
    if (epoch := figures.get("epoch_time")) is not None:
        share = epoch["eval_seconds"] / epoch["epoch_seconds"]
        wide = epoch["model"] == WIDE
        out.append((f"{epoch['model']} CIFAR-10-sized epoch (evaluation's share)", f"{epoch['epoch_seconds']:.1f} s ({share:.1%})",
                    "<= 50 s" if wide else "", epoch["epoch_seconds"] <= 50 if wide else None))  # fmt: skip
    if (packing := figures.get("gpu_packing")) is not None:
        for key in sorted(k for k in packing if k.startswith("P")):
            p = packing[key]
            met = p["search_ips"] >= 15_000 if key == "P8" else None
            out.append((f"{packing['model']} {key[1:]} trials per GPU, search (plain) img/s", f"{p['search_ips']:,.0f} ({p['plain_ips']:,.0f}); Ray {1 - p['plain_s'] / p['search_s']:.0%}", ">= 15,000 at 8" if key == "P8" else "", met))
    if (stack := figures.get("stack_speed")) is not None:
        for key, k in sorted(((key, int(key.split("K=")[1])) for key in stack if "K=" in key), key=lambda item: item[1]):
            f = stack[key]
            met = f["stacked_ips"] >= 15_000 if key.startswith(THIN) and k >= 8 else None
            memory = f"; peak {f['peak_mib'][1]:,} MiB" if "peak_mib" in f else ""
            out.append((f"{key} stacked img/s (x over one after another)", f"{f['stacked_ips']:,} ({f['speedup']:.2f}x){memory}",
                        ">= 15,000" if met is not None else "", met))  # fmt: skip
    if (cost := figures.get("war_cost")) is not None:
        out.append(("WAR / grid GPU-hours, CIFAR-10 (unpacked)", f"{cost['ratio']:.3f} ({cost['ratio_unpacked']:.3f})", "<= 0.22", cost["ratio"] <= 0.22))
    return out


def main() -> None:
    lines = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
    figures = {line["script"]: line for line in lines}
    devices = sorted({line["device"] for line in lines})
    smoke = any(line.get("smoke") for line in lines)
    print(f"\nGPU benchmarks on {', '.join(devices)}, {datetime.date.today()}{' (SMOKE SIZES: say nothing about speed)' if smoke else ''}\n")
    print("| figure | measured | goal | met |\n|---|---|---|---|")
    for figure, measured, goal, met in rows(figures):
        print(f"| {figure} | {measured} | {goal} | {'' if met is None else ('yes' if met else 'NO')} |")


if __name__ == "__main__":
    main()
