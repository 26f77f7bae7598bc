"""Maps torch tensors (and numpy arrays) to (pointer, count, obccl datatype, stream)."""
from . import _lib

_TORCH_TYPES = None


def _torch_types():
    global _TORCH_TYPES
    if _TORCH_TYPES is None:
        import torch
        _TORCH_TYPES = {
            torch.float32: _lib.FLOAT32, torch.float16: _lib.FLOAT16,
            torch.bfloat16: _lib.BFLOAT16, torch.float64: _lib.FLOAT64,
            torch.int32: _lib.INT32, torch.int64: _lib.INT64, torch.uint8: _lib.UINT8,
        }
    return _TORCH_TYPES


_NUMPY_TYPES = {"float32": _lib.FLOAT32, "float16": _lib.FLOAT16, "float64": _lib.FLOAT64,
                "int32": _lib.INT32, "int64": _lib.INT64, "uint8": _lib.UINT8}


class Buffer:
    __slots__ = ("ptr", "count", "dtype", "stream", "device", "obj")

    def __init__(self, ptr, count, dtype, stream, device, obj):
        self.ptr, self.count, self.dtype = ptr, count, dtype
        self.stream, self.device, self.obj = stream, device, obj


def as_buffer(t, name="tensor"):
    """Validates `t` and describes its memory; raises TypeError/ValueError, changes nothing."""
    mod = type(t).__module__
    if mod.startswith("torch"):
        types = _torch_types()
        if t.dtype not in types:
            raise TypeError(f"{name}: dtype {t.dtype} is not supported by obccl")
        if not t.is_contiguous():
            raise ValueError(f"{name}: tensor must be contiguous")
        stream = None
        if t.is_cuda:
            import torch
            stream = torch.cuda.current_stream(t.device).cuda_stream
        elif t.device.type != "cpu":
            raise ValueError(f"{name}: device {t.device} is not supported (cpu or cuda)")
        return Buffer(t.data_ptr(), t.numel(), types[t.dtype], stream, str(t.device), t)
    if mod.startswith("numpy"):
        code = _NUMPY_TYPES.get(str(t.dtype))
        if code is None:
            raise TypeError(f"{name}: dtype {t.dtype} is not supported by obccl")
        if not t.flags["C_CONTIGUOUS"]:
            raise ValueError(f"{name}: array must be C-contiguous")
        return Buffer(t.ctypes.data, t.size, code, None, "cpu", t)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(t).__name__}")


def same_device(a, b, what):
    if a.device != b.device:
        raise ValueError(f"{what}: tensors are on different devices ({a.device} and {b.device})")
    if a.dtype != b.dtype:
        raise TypeError(f"{what}: dtypes differ ({a.dtype} and {b.dtype})")
