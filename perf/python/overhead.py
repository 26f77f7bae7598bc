"""Time of a compressed allreduce through obccl's Python layer (run under obcclrun -n N).

Prints, on rank 0, the median time per call of comm.compressed_all_reduce on a float32 tensor of
--bytes, for comparison with obccl_perf's C figure for the same size (perf/python/overhead.sh
runs both, alternating, and prints the ratio).
"""
import argparse
import statistics
import time

import torch

import obccl


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, default=64 << 20)
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("-w", type=int, default=2)
    args = ap.parse_args()
    comm = obccl.Comm.from_env()
    numel = args.bytes // 4
    t = torch.randn(numel, generator=torch.Generator().manual_seed(comm.rank))
    ef = obccl.ErrorFeedback(numel, comm)
    for _ in range(args.w):
        comm.compressed_all_reduce(t, ef)
    times = []
    for _ in range(args.n):
        comm.barrier()
        start = time.perf_counter()
        comm.compressed_all_reduce(t, ef)
        times.append(time.perf_counter() - start)
    if comm.rank == 0:
        print(f"python compressed_all_reduce {args.bytes} bytes: median {statistics.median(times) * 1e6:.0f} us "
              f"over {args.n} calls")
    comm.destroy()


if __name__ == "__main__":
    main()
