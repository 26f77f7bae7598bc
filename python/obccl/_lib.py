"""Loads libobccl and declares the C signatures.

ctypes rather than a compiled extension: the package installs with pip and no compiler, it
loads whichever libobccl the user installed (so Python and C callers share one library), and a
call costs about a microsecond, which is nothing next to a collective on megabytes.
"""
import ctypes
import ctypes.util
import os
from pathlib import Path

UNIQUE_ID_BYTES = 128

# obcclResult_t
SUCCESS = 0
IN_PROGRESS = 7
RESULT_NAMES = {
    0: "obcclSuccess", 1: "obcclUnhandledCudaError", 2: "obcclSystemError",
    3: "obcclInternalError", 4: "obcclInvalidArgument", 5: "obcclInvalidUsage",
    6: "obcclRemoteError", 7: "obcclInProgress", 8: "obcclTimeout",
}

# obcclDataType_t
FLOAT32, FLOAT16, BFLOAT16, FLOAT64, INT32, INT64, UINT8 = range(7)
# obcclRedOp_t
OPS = {"sum": 0, "prod": 1, "max": 2, "min": 3, "avg": 4}

CONFIG_MAGIC = 0x0BCC1C0F
CONFIG_UNDEF_INT = -2147483648
ADAM_CONFIG_MAGIC = 0x0BADA111
VERSION_CODE = 0 * 10000 + 1 * 100 + 0


class UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_char * UNIQUE_ID_BYTES)]


class Config(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t), ("magic", ctypes.c_uint), ("version", ctypes.c_uint),
        ("blocking", ctypes.c_int), ("timeoutMs", ctypes.c_int),
        ("transports", ctypes.c_char_p), ("compressBlock", ctypes.c_int),
        ("hierarchical", ctypes.c_int),
    ]

    @classmethod
    def make(cls, timeout_ms=None, transports=None, compress_block=None, hierarchical=None):
        c = cls(ctypes.sizeof(cls), CONFIG_MAGIC, VERSION_CODE, CONFIG_UNDEF_INT,
                CONFIG_UNDEF_INT, None, CONFIG_UNDEF_INT, CONFIG_UNDEF_INT)
        if timeout_ms is not None:
            c.timeoutMs = int(timeout_ms)
        if transports is not None:
            c.transports = transports.encode()
        if compress_block is not None:
            c.compressBlock = int(compress_block)
        if hierarchical is not None:
            c.hierarchical = int(hierarchical)
        return c


class CommStats(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("bytesSent", ctypes.c_ulonglong),
                ("bytesReceived", ctypes.c_ulonglong), ("collectives", ctypes.c_ulonglong)]


class AdamConfig(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t), ("magic", ctypes.c_uint), ("version", ctypes.c_uint),
        ("lr", ctypes.c_float), ("beta1", ctypes.c_float), ("beta2", ctypes.c_float),
        ("eps", ctypes.c_float), ("weightDecay", ctypes.c_float),
        ("freezeStep", ctypes.c_longlong),
    ]


def _candidates():
    env = os.environ.get("OBCCL_LIBRARY")
    if env:
        yield env
    here = Path(__file__).resolve()
    # A source checkout: python/obccl/_lib.py -> <repo>/build/src/api/libobccl.so
    for parent in here.parents:
        lib = parent / "build" / "src" / "api" / "libobccl.so"
        if lib.exists():
            yield str(lib)
            break
    found = ctypes.util.find_library("obccl")
    if found:
        yield found
    yield "libobccl.so"
    yield "libobccl.so.0.1"


def _load():
    # A CUDA build of libobccl links the system's libnccl.so.2. PyTorch's CUDA wheels ship their
    # own, newer NCCL under the same soname; whichever is loaded first serves both, and torch
    # needs its own (its import fails on symbols an older NCCL lacks). So when torch is installed
    # it is imported before libobccl is loaded.
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    errors = []
    for cand in _candidates():
        try:
            return ctypes.CDLL(cand)
        except OSError as e:  # try the next location
            errors.append(f"{cand}: {e}")
    raise ImportError("cannot load libobccl (set OBCCL_LIBRARY to its path): " + "; ".join(errors))


lib = _load()

_P = ctypes.c_void_p
_R = ctypes.c_int
_SIGNATURES = {
    "obcclGetErrorString": (ctypes.c_char_p, [ctypes.c_int]),
    "obcclGetLastError": (ctypes.c_char_p, [_P]),
    "obcclGetVersion": (_R, [ctypes.POINTER(ctypes.c_int)]),
    "obcclGetUniqueId": (_R, [ctypes.POINTER(UniqueId)]),
    "obcclCommInitRankConfig": (_R, [ctypes.POINTER(_P), ctypes.c_int, UniqueId, ctypes.c_int,
                                     ctypes.POINTER(Config)]),
    "obcclCommInitFromEnv": (_R, [ctypes.POINTER(_P), ctypes.POINTER(Config)]),
    "obcclCommDestroy": (_R, [_P]),
    "obcclCommAbort": (_R, [_P]),
    "obcclCommGetAsyncError": (_R, [_P, ctypes.POINTER(ctypes.c_int)]),
    "obcclCommCount": (_R, [_P, ctypes.POINTER(ctypes.c_int)]),
    "obcclCommUserRank": (_R, [_P, ctypes.POINTER(ctypes.c_int)]),
    "obcclCommGetStats": (_R, [_P, ctypes.POINTER(CommStats)]),
    "obcclAllReduce": (_R, [_P, _P, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, _P, _P]),
    "obcclBroadcast": (_R, [_P, _P, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, _P, _P]),
    "obcclAllGather": (_R, [_P, _P, ctypes.c_size_t, ctypes.c_int, _P, _P]),
    "obcclReduceScatter": (_R, [_P, _P, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, _P, _P]),
    "obcclAlltoAll": (_R, [_P, _P, ctypes.c_size_t, ctypes.c_int, _P, _P]),
    "obcclBarrier": (_R, [_P]),
    "obcclCompressedAllReduceErrorCounts": (_R, [ctypes.c_size_t, _P,
                                                 ctypes.POINTER(ctypes.c_size_t),
                                                 ctypes.POINTER(ctypes.c_size_t)]),
    "obcclCompressedAllReduce": (_R, [_P, _P, ctypes.c_size_t, ctypes.c_int, _P, _P, _P, _P]),
    "obcclOnebitAdamCreate": (_R, [_P, ctypes.c_size_t, ctypes.POINTER(AdamConfig),
                                   ctypes.POINTER(_P)]),
    "obcclOnebitAdamSetMomentumMask": (_R, [_P, _P]),
    "obcclOnebitAdamStep": (_R, [_P, _P, _P, ctypes.c_float, _P]),
    "obcclOnebitAdamGetInfo": (_R, [_P, ctypes.POINTER(ctypes.c_longlong),
                                    ctypes.POINTER(ctypes.c_int),
                                    ctypes.POINTER(ctypes.c_longlong)]),
    "obcclOnebitAdamStateSize": (_R, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "obcclOnebitAdamSaveState": (_R, [_P, _P, ctypes.c_size_t]),
    "obcclOnebitAdamLoadState": (_R, [_P, _P, ctypes.c_size_t]),
    "obcclOnebitAdamDestroy": (_R, [_P]),
}
for _name, (_res, _args) in _SIGNATURES.items():
    _fn = getattr(lib, _name, None)
    if _fn is not None:
        _fn.restype = _res
        _fn.argtypes = _args


class ObcclError(RuntimeError):
    """A failed obccl call: `code` is the obcclResult_t, the message obccl's own."""

    def __init__(self, code, message):
        self.code = code
        self.code_name = RESULT_NAMES.get(code, str(code))
        super().__init__(f"{self.code_name}: {message}")


def check(result, comm_handle=None, what=""):
    if result == SUCCESS:
        return
    msg = lib.obcclGetLastError(comm_handle)
    text = msg.decode(errors="replace") if msg else lib.obcclGetErrorString(result).decode()
    raise ObcclError(result, f"{what}: {text}" if what else text)


def call(name, *args, comm_handle=None):
    fn = getattr(lib, name, None)
    if fn is None:
        raise ObcclError(5, f"{name} is not in this libobccl build")
    check(fn(*args), comm_handle, name)
