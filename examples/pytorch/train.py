"""Data-parallel Fashion-MNIST training with obccl's 1-bit Adam, against uncompressed Adam.

Run with 4 processes:  obcclrun -n 4 python examples/pytorch/train.py --mode onebit
Each rank trains on a disjoint shard of every global batch and passes its LOCAL gradients to
obccl.torch.OnebitAdam, which does all the communication (no DDP wrapper).
"""
import argparse
import csv
import gzip
import os
import struct
import time

import numpy as np
import torch

import obccl
import obccl.torch as otorch

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic, = struct.unpack(">I", f.read(4))
        dims = [struct.unpack(">I", f.read(4))[0] for _ in range(magic & 0xFF)]
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def load(split, data_dir):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)
    return (x - 0.2860) / 0.3530, torch.from_numpy(y.astype(np.int64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["adam", "onebit"], default="onebit")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256, help="global batch size")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=float, default=0.15, help="fraction of steps in warmup")
    ap.add_argument("--train-limit", type=int, default=0, help="use only this many examples")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--csv", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)

    comm = obccl.Comm.from_env()
    x, y = load("train", args.data)
    xt, yt = load("test", args.data)
    if args.train_limit:
        x, y = x[:args.train_limit], y[:args.train_limit]
    steps_per_epoch = len(x) // args.batch
    total = steps_per_epoch * args.epochs
    freeze = max(1, int(args.warmup * total)) if args.mode == "onebit" else total + 1

    torch.manual_seed(0)  # same initial weights on every rank
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    opt = otorch.OnebitAdam(model.parameters(), comm=comm, lr=args.lr, freeze_step=freeze)
    rows = []
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        total_loss = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch:(s + 1) * args.batch][comm.rank::comm.size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total_loss += loss.item()
        with torch.no_grad():
            acc = (model(xt).argmax(1) == yt).float().mean().item() * 100
        sent = comm.stats()["bytes_sent"]
        rows.append((epoch, total_loss / steps_per_epoch, acc, sent, opt.info()["stage"]))
        if comm.rank == 0:
            print(f"epoch {epoch} loss {rows[-1][1]:.4f} test_acc {acc:.2f}% "
                  f"bytes_sent {sent} stage {rows[-1][4]} time {time.time() - start:.1f}s",
                  flush=True)
    if comm.rank == 0 and args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "loss", "test_acc", "bytes_sent", "stage"])
            w.writerows(rows)
    comm.destroy()


if __name__ == "__main__":
    main()
