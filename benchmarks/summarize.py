"""Turns a pytest-benchmark JSON file into the markdown table committed under benchmarks/results/.

For each group (op, pass, shape, dtype): median time per variant, ganfast's speedup over the eager reference
and over torch.compile(reference), achieved GB/s, and the floor (copy bandwidth: bytes ÷ copy GB/s).
Usage: python benchmarks/summarize.py results.json > SUMMARY.md
"""
import json
import sys
from collections import defaultdict


def summarize(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    groups = defaultdict(dict)
    copy_gbps = {}
    for bench in data["benchmarks"]:
        info, median = bench["extra_info"], bench["stats"]["median"]
        if info.get("variant") == "copy":
            copy_gbps[bench["group"].split(" ", 2)[2]] = info["bytes"] / median / 1e9
            continue
        groups[bench["group"]][info["variant"]] = (median, info.get("bytes"))  # whole-step groups have no bytes
    machine = data.get("machine_info", {})
    lines = [f"Machine: {machine.get('node', '?')} {machine.get('cpu', {}).get('brand_raw', '')}",
             f"Date: {data.get('datetime', '?')}", "",
             "| group | ganfast ms | ref ms | compiled ms | × ref | × compiled | ganfast GB/s | copy GB/s | % of copy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group, variants in sorted(groups.items()):
        if "ganfast" not in variants:
            continue
        t, moved = variants["ganfast"]
        ref = variants.get("ref", (float("nan"),))[0]
        comp = variants.get("compiled_ref", (float("nan"),))[0]
        gbps = moved / t / 1e9 if moved else float("nan")
        copy = copy_gbps.get(group.split(" ", 2)[2], float("nan"))
        lines.append(f"| {group} | {t * 1e3:.3f} | {ref * 1e3:.3f} | {comp * 1e3:.3f} | {ref / t:.2f} | "
                     f"{comp / t:.2f} | {gbps:.0f} | {copy:.0f} | {100 * gbps / copy:.0f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1]))
