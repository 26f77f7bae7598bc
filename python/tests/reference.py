"""A plain simulation of DESIGN.md section 4 (all ranks in one process), in numpy."""
import numpy as np


def sign(y):
    return np.where(y < 0, -1.0, 1.0).astype(np.float32)


def simulate(xs, worker_errors, server_errors):
    """xs: list of n fp32 arrays (N); errors: lists of fp32 arrays (Np and c). Returns y and the
    new errors; does not modify its inputs."""
    n, N = len(xs), xs[0].size
    Np = -(-N // (8 * n)) * 8 * n
    c = Np // n
    signs, scales, new_w = [], [], []
    for r in range(n):
        u = worker_errors[r].astype(np.float32).copy()
        u[:N] += xs[r].astype(np.float32)
        a = np.float32(np.sqrt(np.sum(u.astype(np.float64) ** 2) / Np))
        s = sign(u)
        signs.append(s)
        scales.append(a)
        new_w.append((u - a * s).astype(np.float32))
    y = np.zeros(Np, dtype=np.float32)
    new_s = []
    for j in range(n):
        acc = np.zeros(c, dtype=np.float32)
        for i in range(n):
            acc += scales[i] * signs[i][j * c:(j + 1) * c]
        z = (acc * np.float32(1.0 / n) + server_errors[j]).astype(np.float32)
        b = np.float32(np.sqrt(np.sum(z.astype(np.float64) ** 2) / c))
        sz = sign(z)
        new_s.append((z - b * sz).astype(np.float32))
        y[j * c:(j + 1) * c] = b * sz
    return y[:N], new_w, new_s
