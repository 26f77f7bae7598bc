"""obccl: the One-Bit Collective Communication Library for Python and PyTorch."""
import ctypes

from ._lib import ObcclError, call
from .comm import Comm, ErrorFeedback, unique_id


def version():
    v = ctypes.c_int()
    call("obcclGetVersion", ctypes.byref(v))
    return v.value


__all__ = ["Comm", "ErrorFeedback", "ObcclError", "unique_id", "version"]
