import io

import torch

import obccl
import obccl.torch as otorch
from conftest import run_ranks

B1, B2, EPS, LR = 0.9, 0.999, 1e-8, 0.01


def _grad(rank, step, shape):
    g = torch.Generator().manual_seed(7 * step + 1000 * rank)
    return torch.randn(shape, generator=g)


def _warmup(comm, steps):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(37))
    opt = otorch.OnebitAdam([w], comm=comm, lr=LR, freeze_step=100)
    for step in range(steps):
        w.grad = _grad(comm.rank, step, w.shape)
        opt.step()
    return w.detach().clone(), opt.info()


def test_warmup_matches_torch_arithmetic():
    n, steps = 2, 5
    res = run_ranks(n, _warmup, steps)
    torch.manual_seed(0)
    p = torch.randn(37)
    m, v = torch.zeros(37), torch.zeros(37)
    for step in range(steps):
        g = sum(_grad(r, step, p.shape) for r in range(n)) / n
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        p = p - LR * (m / (v.sqrt() + EPS))
    for w, info in res:
        assert torch.allclose(w, p, rtol=1e-5, atol=1e-6)
        assert info == {"step": steps, "stage": "warmup", "skipped_steps": 0}
    assert torch.equal(res[0][0], res[1][0])


def _switch_and_state(comm):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(100))
    opt = otorch.OnebitAdam([w], comm=comm, lr=LR, freeze_step=3)
    stages = []
    for step in range(6):
        w.grad = _grad(comm.rank, step, w.shape)
        opt.step()
        stages.append(opt.info()["stage"])
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    w_saved = w.detach().clone()
    # Continue two steps, then restore and replay: the same parameters come out.
    for step in range(6, 8):
        w.grad = _grad(comm.rank, step, w.shape)
        opt.step()
    w_after = w.detach().clone()
    buf.seek(0)
    opt.load_state_dict(torch.load(buf, weights_only=False))
    with torch.no_grad():
        w.copy_(w_saved)
    for step in range(6, 8):
        w.grad = _grad(comm.rank, step, w.shape)
        opt.step()
    return stages, torch.equal(w.detach(), w_after), w.detach().clone()


def test_switch_after_freeze_step_and_state_dict_round_trip():
    res = run_ranks(2, _switch_and_state)
    for stages, replay_equal, _ in res:
        assert stages == ["warmup"] * 2 + ["compressed"] * 4
        assert replay_equal
    assert torch.equal(res[0][2], res[1][2])


def _lr_scheduler(comm):
    w = torch.nn.Parameter(torch.ones(16))
    opt = otorch.OnebitAdam([w], comm=comm, lr=0.1, freeze_step=100)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.0 if s >= 1 else 1.0)
    w.grad = torch.ones(16)
    opt.step()
    sched.step()
    after_first = w.detach().clone()
    w.grad = torch.ones(16)
    opt.step()
    return torch.equal(after_first, w.detach()), bool((after_first < 1).all())


def test_lr_comes_from_param_group():
    for unchanged, moved in run_ranks(1, _lr_scheduler):
        assert moved and unchanged


def test_rejects_non_float32_params():
    def body(comm):
        try:
            otorch.OnebitAdam([torch.nn.Parameter(torch.ones(4, dtype=torch.float64))], comm=comm)
        except TypeError as e:
            return str(e)
        return None

    (msg,) = run_ranks(1, body)
    assert msg and "float32" in msg
