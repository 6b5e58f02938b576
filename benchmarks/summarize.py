"""Turns a pytest-benchmark JSON file into the markdown tables committed under benchmarks/results/.

For each group (op, pass, shape, dtype): the median time of every variant, ganfast's speedup over each other
variant, and its throughput from extra_info: GB/s (``bytes``, with the copy-bandwidth floor where a "copy" group
was measured), TFLOP/s (``flops``) or images/s (``images``).
Usage: python benchmarks/summarize.py results.json [more.json ...] > SUMMARY.md (several files: one table)
"""
import json
import sys
from collections import defaultdict


def _throughput(info: dict, seconds: float) -> str:
    if "flops" in info:
        return f"{info['flops'] / seconds / 1e12:.1f} TFLOP/s"
    if "bytes" in info:
        return f"{info['bytes'] / seconds / 1e9:.0f} GB/s"
    if "images" in info:
        return f"{info['images'] / seconds:.0f} img/s"
    return ""


def summarize(*paths: str) -> str:
    data = {"benchmarks": []}
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        data = {**part, "benchmarks": data["benchmarks"] + part["benchmarks"]}
    groups: dict[str, dict[str, tuple[float, dict]]] = defaultdict(dict)
    copy_gbps = {}
    for bench in data["benchmarks"]:
        info, median = bench["extra_info"], bench["stats"]["median"]
        if info.get("variant") == "copy":  # group "<op> fwd <shape> <dtype>": keyed by "<shape> <dtype>"
            copy_gbps[bench["group"].split(" ", 2)[2]] = info["bytes"] / median / 1e9
            continue
        groups[bench["group"]][info.get("variant", bench["name"])] = (median, info)
    machine = data.get("machine_info", {})
    lines = [f"Machine: {machine.get('node', '?')} {machine.get('cpu', {}).get('brand_raw', '')}",
             f"Date: {data.get('datetime', '?')}", "",
             "| group | variant | median ms | ganfast speedup | throughput | floor |",
             "|---|---|---|---|---|---|"]
    for group, variants in sorted(groups.items()):
        base = variants.get("ganfast")
        for variant, (median, info) in sorted(variants.items(), key=lambda kv: kv[0] != "ganfast"):
            speedup = f"{median / base[0]:.2f}×" if base and variant != "ganfast" else ""
            floor = ""
            copy = copy_gbps.get(group.split(" ", 2)[-1]) if "bytes" in info else None
            if copy:
                floor = f"{info['bytes'] / copy / 1e6:.3f} ms at copy speed"
            lines.append(f"| {group} | {variant} | {median * 1e3:.3f} | {speedup} | {_throughput(info, median)} | "
                         f"{floor} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(*sys.argv[1:]))
