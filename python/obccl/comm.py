"""obccl.Comm, obccl.ErrorFeedback and obccl.unique_id over the C API."""
import ctypes

from . import _lib
from ._lib import call
from ._tensors import as_buffer, same_device


def unique_id():
    """A fresh communicator id (128 bytes) from rank 0's process; share it with every rank."""
    uid = _lib.UniqueId()
    call("obcclGetUniqueId", ctypes.byref(uid))
    return ctypes.string_at(ctypes.addressof(uid), _lib.UNIQUE_ID_BYTES)


def _op_code(op):
    try:
        return _lib.OPS[op]
    except KeyError:
        raise ValueError(f"op must be one of {sorted(_lib.OPS)}, got {op!r}") from None


class Comm:
    """A communicator: `Comm(rank, world_size, unique_id)` or `Comm.from_env()`."""

    def __init__(self, rank, world_size, unique_id, timeout_ms=None, transports=None,
                 compress_block=None, _handle=None):
        self._h = ctypes.c_void_p()
        if _handle is not None:
            self._h = _handle
        else:
            if not isinstance(unique_id, (bytes, bytearray)) or len(unique_id) != \
                    _lib.UNIQUE_ID_BYTES:
                raise ValueError(f"unique_id must be {_lib.UNIQUE_ID_BYTES} bytes")
            uid = _lib.UniqueId()
            ctypes.memmove(ctypes.addressof(uid), bytes(unique_id), _lib.UNIQUE_ID_BYTES)
            cfg = _lib.Config.make(timeout_ms, transports, compress_block)
            call("obcclCommInitRankConfig", ctypes.byref(self._h), int(world_size), uid,
                 int(rank), ctypes.byref(cfg))
        r, n = ctypes.c_int(), ctypes.c_int()
        call("obcclCommUserRank", self._h, ctypes.byref(r), comm_handle=self._h)
        call("obcclCommCount", self._h, ctypes.byref(n), comm_handle=self._h)
        self.rank, self.size = r.value, n.value

    @classmethod
    def from_env(cls, timeout_ms=None, transports=None, compress_block=None):
        """Reads OBCCL_RANK/RANK/..., OBCCL_ROOT or MASTER_ADDR+MASTER_PORT, OBCCL_SECRET."""
        h = ctypes.c_void_p()
        cfg = _lib.Config.make(timeout_ms, transports, compress_block)
        call("obcclCommInitFromEnv", ctypes.byref(h), ctypes.byref(cfg))
        return cls(None, None, None, _handle=h)

    @property
    def handle(self):
        if not self._h:
            raise ValueError("communicator is destroyed")
        return self._h

    def _call(self, name, *args):
        call(name, *args, comm_handle=self.handle)

    def destroy(self):
        if self._h:
            h, self._h = self._h, ctypes.c_void_p()
            _lib.check(_lib.lib.obcclCommDestroy(h), None, "obcclCommDestroy")

    def abort(self):
        if self._h:
            h, self._h = self._h, ctypes.c_void_p()
            _lib.check(_lib.lib.obcclCommAbort(h), None, "obcclCommAbort")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __del__(self):
        try:
            self.destroy()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def all_reduce(self, tensor, op="sum"):
        """In place; returns tensor."""
        b = as_buffer(tensor)
        self._call("obcclAllReduce", b.ptr, b.ptr, b.count, b.dtype, _op_code(op), self.handle,
                   b.stream)
        return tensor

    def broadcast(self, tensor, root=0):
        """In place from `root`; returns tensor."""
        b = as_buffer(tensor)
        self._call("obcclBroadcast", b.ptr, b.ptr, b.count, b.dtype, int(root), self.handle,
                   b.stream)
        return tensor

    def all_gather(self, tensor, out=None):
        """Returns (or fills) a tensor of shape (size, *tensor.shape)."""
        if out is None:
            out = tensor.new_empty((self.size,) + tuple(tensor.shape))
        same_device(tensor, out, "all_gather")
        b, o = as_buffer(tensor), as_buffer(out, "out")
        if o.count != b.count * self.size:
            raise ValueError(f"all_gather: out has {o.count} elements, needs {b.count * self.size}")
        self._call("obcclAllGather", b.ptr, o.ptr, b.count, b.dtype, self.handle, b.stream)
        return out

    def reduce_scatter(self, tensor, op="sum", out=None):
        """tensor holds size * k elements; returns this rank's k reduced elements."""
        b = as_buffer(tensor)
        if b.count % self.size:
            raise ValueError(f"reduce_scatter: {b.count} elements is not a multiple of {self.size}")
        if out is None:
            out = tensor.new_empty((b.count // self.size,))
        same_device(tensor, out, "reduce_scatter")
        o = as_buffer(out, "out")
        if o.count != b.count // self.size:
            raise ValueError(f"reduce_scatter: out has {o.count} elements, needs "
                             f"{b.count // self.size}")
        self._call("obcclReduceScatter", b.ptr, o.ptr, o.count, b.dtype, _op_code(op),
                   self.handle, b.stream)
        return out

    def all_to_all(self, tensor, out=None):
        b = as_buffer(tensor)
        if b.count % self.size:
            raise ValueError(f"all_to_all: {b.count} elements is not a multiple of {self.size}")
        if out is None:
            out = tensor.new_empty(tensor.shape)
        same_device(tensor, out, "all_to_all")
        o = as_buffer(out, "out")
        if o.count != b.count:
            raise ValueError("all_to_all: out must have as many elements as tensor")
        self._call("obcclAlltoAll", b.ptr, o.ptr, b.count // self.size, b.dtype, self.handle,
                   b.stream)
        return out

    def barrier(self):
        self._call("obcclBarrier", self.handle)

    def stats(self):
        s = _lib.CommStats()
        s.size = ctypes.sizeof(s)
        self._call("obcclCommGetStats", self.handle, ctypes.byref(s))
        return {"bytes_sent": s.bytesSent, "bytes_received": s.bytesReceived,
                "collectives": s.collectives}

    def error_counts(self, numel):
        w, s = ctypes.c_size_t(), ctypes.c_size_t()
        self._call("obcclCompressedAllReduceErrorCounts", int(numel), self.handle,
                   ctypes.byref(w), ctypes.byref(s))
        return w.value, s.value

    def compressed_all_reduce(self, tensor, ef):
        """1-bit compressed AVERAGE with error feedback `ef` (an ErrorFeedback), in place."""
        if not isinstance(ef, ErrorFeedback):
            raise TypeError("ef must be an obccl.ErrorFeedback")
        b = as_buffer(tensor)
        if b.count != ef.numel:
            raise ValueError(f"compressed_all_reduce: tensor has {b.count} elements, the error "
                             f"feedback was made for {ef.numel}")
        if str(ef.worker.device) != b.device:
            raise ValueError(f"compressed_all_reduce: tensor on {b.device}, error buffers on "
                             f"{ef.worker.device}")
        self._call("obcclCompressedAllReduce", b.ptr, b.ptr, b.count, b.dtype,
                   ef.worker.data_ptr(), ef.server.data_ptr(), self.handle, b.stream)
        return tensor


class ErrorFeedback:
    """The worker and server error buffers of one compressed buffer (zeroed, fp32)."""

    def __init__(self, numel, comm, device="cpu"):
        import torch
        self.numel = int(numel)
        self.rank, self.size = comm.rank, comm.size
        w, s = comm.error_counts(self.numel)
        self.worker = torch.zeros(w, dtype=torch.float32, device=device)
        self.server = torch.zeros(s, dtype=torch.float32, device=device)

    def reset(self):
        self.worker.zero_()
        self.server.zero_()

    def state_dict(self):
        return {"numel": self.numel, "rank": self.rank, "world_size": self.size,
                "worker": self.worker.clone(), "server": self.server.clone()}

    def load_state_dict(self, state):
        """Errors belong to one rank of one world size; elsewhere they are zeroed."""
        if state["numel"] != self.numel:
            raise ValueError(f"state is for {state['numel']} elements, this buffer has "
                             f"{self.numel}")
        if state["rank"] != self.rank or state["world_size"] != self.size or \
                state["worker"].numel() != self.worker.numel():
            self.reset()
            return
        self.worker.copy_(state["worker"])
        self.server.copy_(state["server"])
