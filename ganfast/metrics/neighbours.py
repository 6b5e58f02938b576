"""Exact nearest neighbours by blocked matrix products: no N×M distance matrix is ever held in memory.

Squared distances of a block of queries Q to a block of references R come from one matrix product,
‖q − r‖² = ‖q‖² + ‖r‖² − 2 q·r, in float64 (exact for integer pixel values, which are small integers in
float64), clamped at 0. Queries and references may be any real dtype (uint8 images flattened to rows, or
features) on the host; blocks are converted on ``device`` (a GPU when given), only the results come back.
"""
from __future__ import annotations

import torch

BLOCK = 2048
BOUNDARY_RTOL = 1e-9  # balls are closed: the point defining a radius lies on it, whatever the rounding of blocks
_RESIDENT_BYTES = 2 << 30  # references up to 2 GiB (float64) are moved to the device once, larger ones per block


def _rows(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be (N, ...) with N >= 1 rows; got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _blocks(refs: torch.Tensor, device: torch.device, block: int):
    """(start, float64 block on device, squared norms) for consecutive row blocks of ``refs``."""
    resident = refs.numel() * 8 <= _RESIDENT_BYTES
    whole = refs.to(device, torch.float64) if resident else None
    for start in range(0, refs.shape[0], block):
        r = whole[start:start + block] if resident else refs[start:start + block].to(device, torch.float64)
        yield start, r, (r * r).sum(1)


def _squared(q: torch.Tensor, q2: torch.Tensor, r: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    return (q2[:, None] + r2[None, :] - 2 * (q @ r.T)).clamp_min_(0)


def nearest_neighbours(queries: torch.Tensor, refs: torch.Tensor, k: int = 1, exclude_self: bool = False,
                       block: int = BLOCK, device: str | torch.device | None = None,
                       progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances (float64, on the host) and indices into ``refs`` of each query's ``k`` nearest
    references, nearest first: two ``(Nq, k)`` tensors.

    ``exclude_self``: ``queries`` and ``refs`` are the same set and row i is not its own neighbour (the k-th
    nearest *other* row, as for k-NN radii). ``progress``: a tqdm bar advanced by the query rows done.
    """
    q_all, r_all = _rows(queries, "queries"), _rows(refs, "refs")
    if q_all.shape[1] != r_all.shape[1]:
        raise ValueError(f"queries and refs differ in dimension: {q_all.shape[1]} vs {r_all.shape[1]}")
    available = r_all.shape[0] - (1 if exclude_self else 0)
    if not 1 <= k <= available:
        raise ValueError(f"k must be in [1, {available}] for {r_all.shape[0]} references; got {k}")
    device = torch.device(device) if device is not None else q_all.device
    best_d, best_i = [], []
    for q_start in range(0, q_all.shape[0], block):
        q = q_all[q_start:q_start + block].to(device, torch.float64)
        q2 = (q * q).sum(1)
        top_d = torch.full((q.shape[0], k), float("inf"), dtype=torch.float64, device=device)
        top_i = torch.zeros((q.shape[0], k), dtype=torch.long, device=device)
        for r_start, r, r2 in _blocks(r_all, device, block):
            d = _squared(q, q2, r, r2)
            if exclude_self:
                rows = torch.arange(q.shape[0], device=device)
                cols = rows + q_start - r_start
                inside = (cols >= 0) & (cols < r.shape[0])
                d[rows[inside], cols[inside]] = float("inf")
            kk = min(k, d.shape[1])
            d, i = d.topk(kk, dim=1, largest=False)
            top_d, order = torch.cat([top_d, d], 1).topk(k, dim=1, largest=False)
            top_i = torch.cat([top_i, i + r_start], 1).gather(1, order)
        best_d.append(top_d.sqrt().cpu())
        best_i.append(top_i.cpu())
        if progress is not None:
            progress.update(q.shape[0])
    return torch.cat(best_d), torch.cat(best_i)


def within(distances: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """``distances <= radii`` for closed balls, with the tolerance of :func:`ball_counts`."""
    return distances.square() <= radii.square() * (1 + BOUNDARY_RTOL)


def knn_radii(points: torch.Tensor, k: int, **kw) -> torch.Tensor:
    """Distance from each row of ``points`` to its k-th nearest other row (the radius of its k-NN ball)."""
    return nearest_neighbours(points, points, k=k, exclude_self=True, **kw)[0][:, -1]


def ball_counts(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int = BLOCK,
                device: str | torch.device | None = None) -> torch.Tensor:
    """For each query, how many of the balls B(centres[i], radii[i]) contain it: int64 ``(Nq,)``.

    Balls are closed, with a relative tolerance of ``BOUNDARY_RTOL`` on the squared radius: distances of one pair
    computed in blocks of other shapes can differ in the last bits, and a point on the boundary (such as the k-th
    neighbour that defines a k-NN radius) must count as inside."""
    q_all, c_all = _rows(queries, "queries"), _rows(centres, "centres")
    if q_all.shape[1] != c_all.shape[1]:
        raise ValueError(f"queries and centres differ in dimension: {q_all.shape[1]} vs {c_all.shape[1]}")
    if radii.shape != (c_all.shape[0],):
        raise ValueError(f"radii must be ({c_all.shape[0]},); got {tuple(radii.shape)}")
    device = torch.device(device) if device is not None else q_all.device
    r2_all = radii.to(device, torch.float64).square() * (1 + BOUNDARY_RTOL)
    counts = []
    for q_start in range(0, q_all.shape[0], block):
        q = q_all[q_start:q_start + block].to(device, torch.float64)
        q2 = (q * q).sum(1)
        n = torch.zeros(q.shape[0], dtype=torch.long, device=device)
        for c_start, c, c2 in _blocks(c_all, device, block):
            n += (_squared(q, q2, c, c2) <= r2_all[c_start:c_start + c.shape[0]][None, :]).sum(1)
        counts.append(n.cpu())
    return torch.cat(counts)
