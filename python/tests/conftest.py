"""Multi-process test helpers: each test body runs once per rank in a forked process."""
import multiprocessing as mp
import os
import pickle
import traceback

import pytest

import obccl

DEADLINE_S = 120


def _child(rank, n, uid, fn, args, queue):
    try:
        os.environ["OBCCL_TIMEOUT_MS"] = "30000"
        comm = obccl.Comm(rank, n, uid)
        result = fn(comm, *args)
        comm.destroy()
        # Plain pickle copies tensors; the queue's own pickler would share them through file
        # descriptors that vanish when this process exits.
        queue.put((rank, "ok", pickle.dumps(result)))
    except BaseException:  # noqa: BLE001 - report everything to the parent
        queue.put((rank, "error", traceback.format_exc()))


def run_ranks(n, fn, *args, timeout=DEADLINE_S):
    """Runs fn(comm, *args) on n ranks (forked processes); returns the results by rank."""
    ctx = mp.get_context("fork")
    uid = obccl.unique_id()
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(r, n, uid, fn, args, queue)) for r in range(n)]
    for p in procs:
        p.start()
    results, errors = {}, []
    try:
        for _ in range(n):
            rank, status, value = queue.get(timeout=timeout)
            if status == "ok":
                results[rank] = pickle.loads(value)
            else:
                errors.append(f"rank {rank}:\n{value}")
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    if errors:
        pytest.fail("\n".join(errors))
    return [results[r] for r in range(n)]
