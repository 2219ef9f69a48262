"""The virtual layout: which unique rows make up each position of the unmodified model's sequence.

For every sample, virtual entry ``i`` (a position of the sequence the *unmodified* model would
feed its LLM) is the weighted mix ``sum_k weight[i, k] * unique[index[i, k]]`` of unique rows
(text tokens and merged visual tokens). LLaVA-1.5 needs one-hot entries (K = 1); pooled video
frames need weighted mixes (K > 1). Samples are left padded on both axes, like a tokenizer
with ``padding_side="left"``, and every valid entry carries its RoPE position.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError

__all__ = ["VirtualLayout", "mix_rows"]


def mix_rows(rows: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Expand ``rows`` (B, Nu, D) to (B, Nv, D): entry i = sum_k weight[:, i, k] * rows[index[:, i, k]]."""
    b, nv, k = index.shape
    flat = index.reshape(b, nv * k, 1).expand(b, nv * k, rows.shape[-1])
    picked = torch.gather(rows, 1, flat).view(b, nv, k, rows.shape[-1])
    if k == 1:
        return picked[:, :, 0] * weight.to(rows.dtype)
    return (picked * weight.to(rows.dtype).unsqueeze(-1)).sum(2)


@dataclass
class VirtualLayout:
    """Per batch: ``index`` (B,Nv,K) long into unique rows, ``weight`` (B,Nv,K), ``positions`` (B,Nv)
    long, ``valid`` (B,Nv) bool, ``unique_valid`` (B,Nu) bool. Validated on construction."""

    index: torch.Tensor
    weight: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor
    unique_valid: torch.Tensor
    _identity: bool | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_shapes()
        self._check_samples()

    # ---------------------------------------------------------------- constructors
    @classmethod
    def identity(cls, lengths: Sequence[int], device: torch.device | str | None = None) -> VirtualLayout:
        """Every unique row is its own virtual entry at positions 0..n-1 (the unmodified model)."""
        lengths = _check_lengths(lengths, "lengths")
        return cls.from_mappings([torch.arange(n) for n in lengths], lengths, device=device)

    @classmethod
    def consecutive(cls, unique_lengths: Sequence[int], device: torch.device | str | None = None) -> VirtualLayout:
        """The paper's "w/o VTU" ablation: the unique rows alone, at consecutive positions."""
        return cls.identity(unique_lengths, device=device)

    @classmethod
    def from_mappings(
        cls,
        mappings: Sequence[torch.Tensor | Sequence[int]],
        unique_lengths: Sequence[int],
        weights: Sequence[torch.Tensor] | None = None,
        positions: Sequence[torch.Tensor | Sequence[int]] | None = None,
        device: torch.device | str | None = None,
    ) -> VirtualLayout:
        """Build a left-padded batch from per-sample maps.

        ``mappings[b]`` is (Nv_b,) (one-hot) or (Nv_b, K) and indexes sample b's own unique rows
        (0..unique_lengths[b]-1); ``weights[b]`` has the same shape (default: ones);
        ``positions[b]`` is (Nv_b,) (default: 0..Nv_b-1).
        """
        unique_lengths = _check_lengths(unique_lengths, "unique_lengths")
        n = len(unique_lengths)
        for name, seq in (("mappings", mappings), ("weights", weights), ("positions", positions)):
            if seq is not None and len(seq) != n:
                raise ConfigError(f"virtual layout: {name} has {len(seq)} samples but unique_lengths has {n}")
        maps, wts, poss = [], [], []
        for b in range(n):
            m = torch.as_tensor(mappings[b], dtype=torch.long)
            if m.dim() == 1:
                m = m[:, None]
            if m.dim() != 2 or m.shape[0] == 0 or m.shape[1] == 0:
                raise ConfigError(f"virtual layout, sample {b}: mapping must be a non-empty (Nv,) or (Nv, K) "
                                  f"tensor, got shape {tuple(m.shape)}")
            w = torch.ones(m.shape, dtype=torch.float32) if weights is None else torch.as_tensor(weights[b])
            if w.dim() == 1 and m.shape[1] == 1:
                w = w[:, None]
            if tuple(w.shape) != tuple(m.shape):
                raise ConfigError(f"virtual layout, sample {b}: weights have shape {tuple(w.shape)} but the "
                                  f"mapping has {tuple(m.shape)}")
            p = torch.arange(m.shape[0]) if positions is None else torch.as_tensor(positions[b], dtype=torch.long)
            if tuple(p.shape) != (m.shape[0],):
                raise ConfigError(f"virtual layout, sample {b}: {p.numel()} positions for {m.shape[0]} virtual "
                                  f"entries (positions length mismatch)")
            bad = (m < 0) | (m >= unique_lengths[b])
            if bool(bad.any()):
                i = int(bad.any(1).nonzero()[0, 0])
                raise ConfigError(f"virtual layout, sample {b}: virtual entry {i} maps to unique row "
                                  f"{m[i].tolist()}, out of range for {unique_lengths[b]} unique rows")
            maps.append(m)
            wts.append(w.float())
            poss.append(p)
        k = max(m.shape[1] for m in maps)
        nv = max(m.shape[0] for m in maps)
        nu = max(unique_lengths)
        index = torch.zeros(n, nv, k, dtype=torch.long)
        weight = torch.zeros(n, nv, k)
        pos = torch.zeros(n, nv, dtype=torch.long)
        valid = torch.zeros(n, nv, dtype=torch.bool)
        unique_valid = torch.zeros(n, nu, dtype=torch.bool)
        for b in range(n):
            lv, kb, pad_u = maps[b].shape[0], maps[b].shape[1], nu - unique_lengths[b]
            index[b, nv - lv:, :kb] = maps[b] + pad_u
            index[b, nv - lv:, kb:] = pad_u  # unused slots point at a real row with weight 0
            index[b, : nv - lv] = pad_u
            weight[b, nv - lv:, :kb] = wts[b]
            pos[b, nv - lv:] = poss[b]
            valid[b, nv - lv:] = True
            unique_valid[b, pad_u:] = True
        return cls(index.to(device), weight.to(device), pos.to(device), valid.to(device), unique_valid.to(device))

    # ---------------------------------------------------------------- properties
    @property
    def batch_size(self) -> int:
        return self.index.shape[0]

    @property
    def virtual_len(self) -> int:
        return self.index.shape[1]

    @property
    def unique_len(self) -> int:
        return self.unique_valid.shape[1]

    @property
    def virtual_lengths(self) -> list[int]:
        return self.valid.sum(1).tolist()

    @property
    def unique_lengths(self) -> list[int]:
        return self.unique_valid.sum(1).tolist()

    @property
    def is_identity(self) -> bool:
        """True when every valid virtual entry i is exactly unique row i (no gather or re-merge needed)."""
        if self._identity is None:
            ar = torch.arange(self.virtual_len, device=self.index.device)
            self._identity = bool(
                self.virtual_len == self.unique_len
                and self.index.shape[2] == 1
                and torch.equal(self.valid, self.unique_valid)
                and bool((self.index[:, :, 0] == ar)[self.valid].all())
                and bool((self.weight[self.valid] == 1).all())
            )
        return self._identity

    def to(self, device: torch.device | str) -> VirtualLayout:
        return VirtualLayout(self.index.to(device), self.weight.to(device), self.positions.to(device),
                             self.valid.to(device), self.unique_valid.to(device), self._identity)

    def sample(self, b: int) -> VirtualLayout:
        """Sample ``b`` alone, with its padding removed (batched-equals-single checks)."""
        v, u = self.valid[b], self.unique_valid[b]
        pad_u = int((~u).sum())
        return VirtualLayout((self.index[b, v] - pad_u)[None], self.weight[b, v][None], self.positions[b, v][None],
                             self.valid[b, v][None], u[u][None])

    def expand(self, rows: torch.Tensor) -> torch.Tensor:
        """The explicit virtual sequence (B, Nv, D) built from unique rows (B, Nu, D)."""
        if rows.shape[:2] != self.unique_valid.shape:
            raise ConfigError(f"virtual layout: rows have shape {tuple(rows.shape)} but the layout has "
                              f"{self.batch_size} samples of {self.unique_len} unique rows")
        return mix_rows(rows, self.index, self.weight)

    # ---------------------------------------------------------------- validation
    def _check_shapes(self) -> None:
        if self.index.dim() != 3:
            raise ConfigError(f"virtual layout: index must be (B, Nv, K), got shape {tuple(self.index.shape)}")
        if self.index.dtype not in (torch.long, torch.int32, torch.int64):
            raise ConfigError(f"virtual layout: index must be an integer tensor, got {self.index.dtype}")
        b, nv, _ = self.index.shape
        if tuple(self.weight.shape) != tuple(self.index.shape):
            raise ConfigError(f"virtual layout: weight has shape {tuple(self.weight.shape)} but index has "
                              f"{tuple(self.index.shape)}")
        for name, t in (("positions", self.positions), ("valid", self.valid)):
            if t.dim() != 2 or t.shape[0] != b:
                raise ConfigError(f"virtual layout: {name} has shape {tuple(t.shape)}, expected ({b}, {nv}) "
                                  f"(sample count mismatch)" if t.dim() == 2 else
                                  f"virtual layout: {name} must be (B, Nv), got shape {tuple(t.shape)}")
            if t.shape[1] != nv:
                raise ConfigError(f"virtual layout: {name} has {t.shape[1]} virtual entries but index has {nv} "
                                  f"({name} length mismatch)")
        if self.unique_valid.dim() != 2 or self.unique_valid.shape[0] != b:
            raise ConfigError(f"virtual layout: unique_valid has shape {tuple(self.unique_valid.shape)} but the "
                              f"layout has {b} samples (sample count mismatch)")
        if self.valid.dtype != torch.bool or self.unique_valid.dtype != torch.bool:
            raise ConfigError("virtual layout: valid and unique_valid must be bool tensors")
        if not self.weight.is_floating_point():
            raise ConfigError(f"virtual layout: weight must be a float tensor, got {self.weight.dtype}")
        self.index = self.index.long()
        self.positions = self.positions.long()

    def _check_samples(self) -> None:
        nu, valid, used = self.unique_len, self.valid, self.weight != 0
        padded_row = ~torch.gather(self.unique_valid, 1, self.index.clamp(0, nu - 1).flatten(1)).view_as(self.index)
        checks = [
            (((self.index < 0) | (self.index >= nu)).any(2), f"maps to a unique row outside 0..{nu - 1}"),
            ((padded_row & used).any(2) & valid, "maps to a padding unique row"),
            (((self.weight < 0) | ~torch.isfinite(self.weight)).any(2) & valid, "has a negative or non-finite weight"),
            (((self.weight * used).sum(2) <= 0) & valid, "has weights summing to zero"),
            (valid & (self.positions < 0), "has a negative position"),
        ]
        for mask, problem in checks:
            if bool(mask.any()):
                b, i = (int(x) for x in mask.nonzero()[0])
                raise ConfigError(f"virtual layout, sample {b}: virtual entry {i} {problem} "
                                  f"(index {self.index[b, i].tolist()}, weight {self.weight[b, i].tolist()}, "
                                  f"position {int(self.positions[b, i])})")
        empty = ~valid.any(1)
        if bool(empty.any()):
            raise ConfigError(f"virtual layout, sample {int(empty.nonzero()[0, 0])}: no valid virtual entry")
        # positions must strictly increase along the valid entries (no duplicates, causal order = position order)
        big = torch.iinfo(torch.long).min
        prev = torch.cummax(torch.where(valid, self.positions, big), dim=1).values
        prev = torch.cat([torch.full_like(prev[:, :1], big), prev[:, :-1]], dim=1)
        bad = valid & (self.positions <= prev)
        if bool(bad.any()):
            b, i = (int(x) for x in bad.nonzero()[0])
            raise ConfigError(f"virtual layout, sample {b}: position {int(self.positions[b, i])} at virtual entry "
                              f"{i} does not increase over the previous valid entry (positions must be distinct "
                              f"and increasing)")


def _check_lengths(lengths: Sequence[int], name: str) -> list[int]:
    out = [int(n) for n in lengths]
    if not out:
        raise ConfigError(f"virtual layout: {name} is empty (no samples)")
    for b, n in enumerate(out):
        if n <= 0:
            raise ConfigError(f"virtual layout, sample {b}: {name} must be positive, got {n}")
    return out
