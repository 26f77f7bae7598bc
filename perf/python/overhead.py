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
    # The Python layer's own cost per call: the same tiny compressed allreduce through
    # comm.compressed_all_reduce and through the raw ctypes function, alternated.
    from obccl import _lib
    small = torch.randn(8)
    small_ef = obccl.ErrorFeedback(8, comm)
    raw = _lib.lib.obcclCompressedAllReduce
    wrapped_t, raw_t = [], []
    for _ in range(200):
        comm.barrier()
        start = time.perf_counter()
        comm.compressed_all_reduce(small, small_ef)
        wrapped_t.append(time.perf_counter() - start)
        comm.barrier()
        start = time.perf_counter()
        rc = raw(small.data_ptr(), small.data_ptr(), 8, _lib.FLOAT32, small_ef.worker.data_ptr(),
                 small_ef.server.data_ptr(), comm.handle, None)
        raw_t.append(time.perf_counter() - start)
        assert rc == 0
    overhead = statistics.median(wrapped_t) - statistics.median(raw_t)
    if comm.rank == 0:
        print(f"python layer cost per call: {overhead * 1e6:.1f} us (median wrapped "
              f"{statistics.median(wrapped_t) * 1e6:.1f} us, raw ctypes "
              f"{statistics.median(raw_t) * 1e6:.1f} us, 8 elements)")
        print(f"python compressed_all_reduce {args.bytes} bytes: median {statistics.median(times) * 1e6:.0f} us "
              f"over {args.n} calls")
    comm.destroy()


if __name__ == "__main__":
    main()
