"""What watching a run costs, per installed backend (TensorBoard, W&B offline, MLflow's folder store): seconds to
import its package and to open and close it, milliseconds per tick record (the scalars of a digits
``stats.jsonl`` record) and per sample grid (StyleGAN2-ADA-sized 8x8 grid of 64 px RGB images); and the time and
size of ``ganfast report`` on the run written. Rerun: ``PYTHONPATH=. python benchmarks/logger_overhead.py``."""
import importlib
import importlib.util
import json
import os
import tempfile
import time

import numpy as np


def main(repeats: int = 50) -> None:
    from ganfast.train.loggers import open_loggers, stat_scalars
    from ganfast.train.run_report import write_report
    load = os.getloadavg()
    record = {"tick": 1, "step": 250, "kimg": 16.0, "time": time.time(), "sec_per_tick": 9.1, "sec_per_kimg": 0.57,
              "img_per_s": 1750.0, "peak_rss_mib": 700.0, "loss_g": 0.9, "loss_d": 1.2, "r1": 0.02,
              "d_real_acc": 0.6, "d_fake_acc": 0.7, "grad_norm_g": 0.3, "grad_norm_d": 0.8, "skipped_steps": 0,
              "aug_p": 0.1, "lr_g": 2e-4, "lr_d": 2e-4, "rt": 0.5, "diversity": 5.0, "diversity_real": 9.4,
              "fd": 30.0, "precision": 0.7, "recall": 0.4, "class_coverage": [1.0] * 10, "classes_dropped": [],
              "collapse_alarm": False}
    grid = np.random.default_rng(0).integers(0, 256, (8 * 65 + 1, 8 * 65 + 1, 3), dtype=np.uint8)
    os.environ.setdefault("WANDB_SILENT", "true")
    results = {}
    with tempfile.TemporaryDirectory() as run:
        for name in [n for n in ("tensorboard", "wandb", "mlflow") if importlib.util.find_spec(n)]:
            start = time.perf_counter()
            importlib.import_module("torch.utils.tensorboard" if name == "tensorboard" else name)
            imported = time.perf_counter() - start
            start = time.perf_counter()
            logger = open_loggers([name], os.path.join(run, name))
            opened = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(repeats):
                logger.scalars(stat_scalars(record), 1000 * (i + 1))
            per_record = (time.perf_counter() - start) / repeats
            start = time.perf_counter()
            for i in range(repeats):
                logger.image("samples", grid, 1000 * (i + 1))
            per_grid = (time.perf_counter() - start) / repeats
            start = time.perf_counter()
            logger.close()
            results[name] = {"import_s": round(imported, 2), "open_s": round(opened, 2),
                             "close_s": round(time.perf_counter() - start, 2),
                             "ms_per_tick_record": round(per_record * 1e3, 2), "ms_per_grid": round(per_grid * 1e3, 2)}
        for i in range(repeats):
            with open(os.path.join(run, "stats.jsonl"), "a") as f:
                f.write(json.dumps({**record, "tick": i + 1, "kimg": i + 1.0}) + "\n")
        from PIL import Image
        Image.fromarray(grid).save(os.path.join(run, f"samples-{repeats:07d}.png"))
        start = time.perf_counter()
        page = write_report(run)
        report_s = time.perf_counter() - start
        size = os.path.getsize(page)
    print(json.dumps({**results, "scalars_per_record": len(stat_scalars(record)), "grid_px": list(grid.shape),
                      "report_s": round(report_s, 2), "report_kib": round(size / 1024), "ticks": repeats,
                      "loadavg_before": load, "loadavg_after": os.getloadavg()}))

if __name__ == "__main__":
    main()
