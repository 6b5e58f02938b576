"""The ``ganfast`` console script: ``info``, ``bench`` and ``demo`` (training and sampling land later)."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    import ganfast
    from ganfast.info import format_info
    report = ganfast.info()
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0


def _cmd_bench(args) -> int:
    from ganfast.bench import format_table, run_bias_act_bench
    rows = run_bias_act_bench(device=args.device, shapes=args.shape, dtypes=args.dtype, repeats=args.repeats)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"results written to {args.json}")
    return 0


def _cmd_demo(args) -> int:
    print("== ganfast info ==")
    _cmd_info(argparse.Namespace(json=False))
    print("\n== bias_act (lrelu, clamp=256): ganfast vs the eager PyTorch reference ==")
    return _cmd_bench(argparse.Namespace(device=args.device, shape=None, dtype=None, repeats=args.repeats, json=None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganfast", description="Fused kernels for GAN training and sampling.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="what was built and which kernel each op uses")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("bench", help="time bias_act: ganfast vs eager reference (vs torch.compile on CUDA)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--shape", action="append", help="NxCxHxW, repeatable (default: per-device StyleGAN shapes)")
    p.add_argument("--dtype", action="append", choices=["float32", "bfloat16", "float16"], help="repeatable")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("demo", help="the README's main job: info plus a bias_act benchmark")
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=20)
    p.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
