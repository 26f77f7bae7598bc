import pytest
import torch

import obccl
from conftest import run_ranks


def _collectives(comm):
    r, n = comm.rank, comm.size
    out = {}
    t = torch.arange(10, dtype=torch.float32) + r
    out["sum"] = comm.all_reduce(t.clone()).tolist()
    out["avg"] = comm.all_reduce(t.clone(), op="avg").tolist()
    out["max"] = comm.all_reduce(torch.tensor([r, -r], dtype=torch.int64), op="max").tolist()
    b = torch.full((5,), float(r), dtype=torch.bfloat16)
    out["bf16"] = comm.all_reduce(b).float().tolist()
    out["bcast"] = comm.broadcast(torch.full((3,), float(r)), root=n - 1).tolist()
    out["gather"] = comm.all_gather(torch.tensor([r, r * 10], dtype=torch.int32)).tolist()
    out["rs"] = comm.reduce_scatter(torch.ones(2 * n) * (r + 1)).tolist()
    out["a2a"] = comm.all_to_all(torch.arange(n, dtype=torch.float64) + 100 * r).tolist()
    comm.barrier()
    out["stats"] = comm.stats()
    return out


@pytest.mark.parametrize("n", [1, 2, 3])
def test_collectives_match_reference(n):
    res = run_ranks(n, _collectives)
    ranks = range(n)
    for r, out in enumerate(res):
        assert out["sum"] == [n * i + sum(ranks) for i in range(10)]
        assert out["avg"] == pytest.approx([i + sum(ranks) / n for i in range(10)])
        assert out["max"] == [n - 1, 0]
        assert out["bf16"] == [float(sum(ranks))] * 5
        assert out["bcast"] == [float(n - 1)] * 3
        assert out["gather"] == [[q, q * 10] for q in ranks]
        assert out["rs"] == [float(sum(q + 1 for q in ranks))] * 2
        assert out["a2a"] == [float(r + 100 * q) for q in ranks]
        if n > 1:
            assert out["stats"]["bytes_sent"] > 0
        assert out["stats"]["collectives"] >= 8


def _bad_calls(comm):
    seen = []
    try:
        comm.all_reduce(torch.zeros(4, dtype=torch.complex64))
    except TypeError as e:
        seen.append(("dtype", str(e)))
    try:
        comm.all_reduce(torch.zeros(4, 4).t())
    except ValueError as e:
        seen.append(("contig", str(e)))
    try:
        comm.all_gather(torch.zeros(2), out=torch.zeros(2 * comm.size, dtype=torch.float64))
    except TypeError as e:
        seen.append(("mixed", str(e)))
    try:
        comm.broadcast(torch.zeros(2), root=comm.size + 3)
    except obccl.ObcclError as e:
        seen.append(("root", e.code_name, str(e)))
    try:
        comm.all_reduce(torch.zeros(2, dtype=torch.int32), op="avg")
    except obccl.ObcclError as e:
        seen.append(("avg-int", e.code_name, str(e)))
    # The communicator still works after every refusal.
    seen.append(("after", comm.all_reduce(torch.ones(3)).tolist()))
    return seen


def test_errors_are_clear_and_change_nothing():
    res = run_ranks(2, _bad_calls)
    for seen in res:
        kinds = [s[0] for s in seen]
        assert kinds == ["dtype", "contig", "mixed", "root", "avg-int", "after"]
        assert "contiguous" in seen[1][1]
        assert seen[3][1] == "obcclInvalidArgument" and "root" in seen[3][2]
        assert seen[4][1] == "obcclInvalidArgument"
        assert seen[5][1] == [2.0, 2.0, 2.0]


def test_bad_unique_id_is_rejected():
    with pytest.raises(ValueError):
        obccl.Comm(0, 1, b"short")
    with pytest.raises(obccl.ObcclError) as info:
        obccl.Comm(0, 1, bytes(128))
    assert info.value.code_name == "obcclInvalidArgument"
