import numpy as np
import pytest
import torch

import obccl
from conftest import run_ranks
from reference import simulate

N = 1001
CALLS = 3


def _data(rank, call):
    g = torch.Generator().manual_seed(1000 * call + rank)
    return torch.randn(N, generator=g)


def _compressed(comm):
    ef = obccl.ErrorFeedback(N, comm)
    outs = []
    for call in range(CALLS):
        t = _data(comm.rank, call)
        comm.compressed_all_reduce(t, ef)
        outs.append(t.numpy().copy())
    return outs, ef.state_dict()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_compressed_matches_reference(n):
    res = run_ranks(n, _compressed)
    # Every rank gets bitwise the same output.
    for r in range(1, n):
        for call in range(CALLS):
            assert np.array_equal(res[r][0][call], res[0][0][call])
    Np = -(-N // (8 * n)) * 8 * n
    w = [np.zeros(Np, np.float32) for _ in range(n)]
    s = [np.zeros(Np // n, np.float32) for _ in range(n)]
    for call in range(CALLS):
        xs = [_data(r, call).numpy() for r in range(n)]
        y, w, s = simulate(xs, w, s)
        got = res[0][0][call]
        # Differences only where the server value is within rounding of zero.
        close = np.isclose(got, y, rtol=1e-5, atol=1e-6)
        assert close.mean() > 0.995, f"call {call}: {np.count_nonzero(~close)} elements differ"
    for r in range(n):
        assert res[r][1]["rank"] == r and res[r][1]["worker"].numel() == Np


def _ef_state(comm):
    ef = obccl.ErrorFeedback(64, comm)
    comm.compressed_all_reduce(torch.randn(64), ef)
    sd = ef.state_dict()
    other = obccl.ErrorFeedback(64, comm)
    other.load_state_dict(sd)
    same = torch.equal(other.worker, ef.worker) and torch.equal(other.server, ef.server)
    foreign = dict(sd, rank=sd["rank"] + 1)
    other.load_state_dict(foreign)
    zeroed = bool((other.worker == 0).all() and (other.server == 0).all())
    try:
        comm.compressed_all_reduce(torch.randn(65), ef)
        wrong = None
    except ValueError as e:
        wrong = str(e)
    return same, zeroed, wrong


def test_error_feedback_state_dict():
    for same, zeroed, wrong in run_ranks(2, _ef_state):
        assert same and zeroed
        assert wrong and "65" in wrong
