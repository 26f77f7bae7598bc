"""Plots test accuracy against bytes sent for the CSVs train.py wrote (matplotlib)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out, *csvs):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for path in csvs:
        with open(path) as f:
            rows = list(csv.DictReader(f))
        label = path.rsplit("/", 1)[-1].removesuffix(".csv")
        ep = [int(r["epoch"]) for r in rows]
        acc = [float(r["test_acc"]) for r in rows]
        mib = [int(r["bytes_sent"]) / 2**20 for r in rows]
        a1.plot(ep, acc, marker="o", label=label)
        a2.plot(mib, acc, marker="o", label=label)
    a1.set_xlabel("epoch")
    a2.set_xlabel("MiB sent per rank")
    for a in (a1, a2):
        a.set_ylabel("test accuracy (%)")
        a.grid(True)
        a.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
