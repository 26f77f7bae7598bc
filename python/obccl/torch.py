"""PyTorch front: OnebitAdam (a torch.optim.Optimizer over obccl's C helper) and a DDP hook."""
import ctypes

import torch

from . import _lib
from ._lib import ObcclError, check
from .comm import Comm, ErrorFeedback

FREEZE_AUTO = -1


class _Helper:
    """One obcclOnebitAdam over the flat fp32 buffer of one parameter group."""

    def __init__(self, comm, count, lr, betas, eps, weight_decay, freeze_step):
        cfg = _lib.AdamConfig(ctypes.sizeof(_lib.AdamConfig), _lib.ADAM_CONFIG_MAGIC,
                              _lib.VERSION_CODE, lr, betas[0], betas[1], eps, weight_decay,
                              int(freeze_step))
        self.comm = comm
        self.h = ctypes.c_void_p()
        check(_lib.lib.obcclOnebitAdamCreate(comm.handle, count, ctypes.byref(cfg),
                                             ctypes.byref(self.h)), comm.handle,
              "obcclOnebitAdamCreate")

    def _check(self, rc, what):
        check(rc, self.comm.handle, what)

    def step(self, params, grads, lr, stream):
        self._check(_lib.lib.obcclOnebitAdamStep(self.h, params.data_ptr(), grads.data_ptr(),
                                                 float(lr), stream), "obcclOnebitAdamStep")

    def info(self):
        step, stage, skipped = ctypes.c_longlong(), ctypes.c_int(), ctypes.c_longlong()
        self._check(_lib.lib.obcclOnebitAdamGetInfo(self.h, ctypes.byref(step), ctypes.byref(stage),
                                                    ctypes.byref(skipped)), "GetInfo")
        return {"step": step.value, "stage": "compressed" if stage.value == 1 else "warmup",
                "skipped_steps": skipped.value}

    def save(self):
        n = ctypes.c_size_t()
        self._check(_lib.lib.obcclOnebitAdamStateSize(self.h, ctypes.byref(n)), "StateSize")
        blob = torch.empty(n.value, dtype=torch.uint8)
        self._check(_lib.lib.obcclOnebitAdamSaveState(self.h, blob.data_ptr(), n.value),
                    "SaveState")
        return blob

    def load(self, blob):
        blob = blob.detach().to("cpu", torch.uint8).contiguous()
        self._check(_lib.lib.obcclOnebitAdamLoadState(self.h, blob.data_ptr(), blob.numel()),
                    "LoadState")

    def set_mask(self, mask):
        self._check(_lib.lib.obcclOnebitAdamSetMomentumMask(self.h, mask.data_ptr()), "SetMask")

    def close(self):
        if self.h:
            _lib.lib.obcclOnebitAdamDestroy(self.h)
            self.h = ctypes.c_void_p()


class OnebitAdam(torch.optim.Optimizer):
    """1-bit Adam: full-precision Adam for `freeze_step` steps, then frozen variance and 1-bit
    compressed momentum with error feedback. step() takes each rank's LOCAL gradients (no DDP
    wrapper): the optimizer does all the communication.

    Each parameter group's parameters are re-pointed into one flat fp32 buffer, so the C helper
    updates them in place; lr is read from param_group["lr"] every step, so torch's schedulers
    work.
    """

    def __init__(self, params, comm=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, freeze_step=FREEZE_AUTO):
        if comm is None:
            comm = Comm.from_env()
        if not isinstance(comm, Comm):
            raise TypeError("comm must be an obccl.Comm")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        freeze_step=freeze_step)
        super().__init__(params, defaults)
        self.comm = comm
        self._helpers = []
        self._flat = []
        for group in self.param_groups:
            ps = group["params"]
            for p in ps:
                if p.dtype != torch.float32:
                    raise TypeError(f"OnebitAdam needs float32 parameters, got {p.dtype}")
                if p.device != ps[0].device:
                    raise ValueError("all parameters of a group must be on one device")
            count = sum(p.numel() for p in ps)
            flat = torch.zeros(count, dtype=torch.float32, device=ps[0].device)
            offset = 0
            with torch.no_grad():
                for p in ps:
                    n = p.numel()
                    flat[offset:offset + n].copy_(p.reshape(-1))
                    p.data = flat[offset:offset + n].view_as(p)
                    offset += n
            self._flat.append(flat)
            self._helpers.append(_Helper(comm, count, group["lr"], group["betas"], group["eps"],
                                         group["weight_decay"], group["freeze_step"]))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, flat, helper in zip(self.param_groups, self._flat, self._helpers):
            grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                               for p in group["params"]]).to(torch.float32)
            stream = torch.cuda.current_stream(flat.device).cuda_stream if flat.is_cuda else None
            helper.step(flat, grads, group["lr"], stream)
        return loss

    def info(self, group=0):
        """{'step', 'stage', 'skipped_steps'} of one parameter group."""
        return self._helpers[group].info()

    def set_momentum_mask(self, mask, group=0):
        mask = mask.to(self._flat[group].device, torch.float32).contiguous()
        if mask.numel() != self._flat[group].numel():
            raise ValueError(f"mask has {mask.numel()} elements, the group {self._flat[group].numel()}")
        self._helpers[group].set_mask(mask)

    def state_dict(self):
        sd = super().state_dict()
        sd["obccl"] = [h.save() for h in self._helpers]
        return sd

    def load_state_dict(self, state_dict):
        blobs = state_dict.get("obccl")
        if blobs is None or len(blobs) != len(self._helpers):
            raise ValueError("state_dict was not made by obccl.torch.OnebitAdam with the same "
                             "parameter groups")
        rest = {k: v for k, v in state_dict.items() if k != "obccl"}
        super().load_state_dict(rest)
        for helper, blob in zip(self._helpers, blobs):
            helper.load(blob)

    def __del__(self):
        for h in getattr(self, "_helpers", []):
            h.close()


class OnebitHookState:
    """State of onebit_hook: the communicator and one ErrorFeedback per DDP gradient bucket."""

    def __init__(self, comm):
        self.comm = comm
        self.buffers = {}

    def error_feedback(self, index, numel, device):
        ef = self.buffers.get(index)
        if ef is None or ef.numel != numel or str(ef.worker.device) != str(device):
            # DDP rebuilds its buckets after the first iteration; errors of an old layout do not
            # carry over.
            ef = ErrorFeedback(numel, self.comm, device)
            self.buffers[index] = ef
        return ef


def onebit_hook(state, bucket):
    """DDP communication hook: averages the bucket's gradients with a 1-bit compressed allreduce
    with per-bucket error feedback (register with model.register_comm_hook(state, onebit_hook))."""
    tensor = bucket.buffer()
    fut = torch.futures.Future()
    try:
        if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            state.comm.all_reduce(tensor, op="avg")
        else:
            ef = state.error_feedback(bucket.index(), tensor.numel(), tensor.device)
            state.comm.compressed_all_reduce(tensor, ef)
        fut.set_result(tensor)
    except ObcclError as e:
        fut.set_exception(e)
    return fut


__all__ = ["OnebitAdam", "OnebitHookState", "onebit_hook", "FREEZE_AUTO"]
