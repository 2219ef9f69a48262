"""VisionRunner: a Hugging Face vision tower run block by block with token merging.

Batched images may end with different token counts: they stay in one padded tensor with a
validity mask, compacted after each block, and give the same tokens as one-by-one runs.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..merge import NoMerge, Policy, TokenState, r_for_level
from ..merge.select import SelectionInput, Selector
from .block import Probe, run_block
from .family import FamilyAdapter
from .towers import encoder_key, resolve_tower


@dataclass
class EncoderOutput:
    """tokens (B,T,D) padded; valid (B,T); sizes (B,T) patches per token;
    patch_to_token (B,N0): for every ORIGINAL token (CLS at 0 if present) the index of the token
    holding it, -1 for a patch a selection dropped; counts (B, layers_run+1): valid tokens after
    the embedding and after each block (what each block ran with: a selection after the last
    block shows in ``valid``, not here);
    cls_row: the selection keeps the CLS row for the language model (VisionZip)."""

    tokens: torch.Tensor
    valid: torch.Tensor
    sizes: torch.Tensor
    patch_to_token: torch.Tensor
    counts: torch.Tensor
    has_cls: bool
    cls_row: bool = False

    def num_tokens(self, b: int) -> int:
        """Tokens image ``b`` ends with (CLS included when the encoder has one)."""
        return int(self.valid[b].sum())

    def visual_counts(self) -> list[int]:
        """Visual tokens each image ends with, CLS excluded: what a VLM hands its LLM."""
        return [int(c) - int(self.has_cls) for c in self.counts[:, -1].tolist()]

    def unique(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens_b (T_b,D), patch_to_token_b (N0,)) for image ``b``, padding removed."""
        n = self.num_tokens(b)
        return self.tokens[b, :n], self.patch_to_token[b]

    def patch_groups(self, b: int) -> torch.Tensor:
        """(N_patches,) for every patch (CLS excluded) the index of its group among the patch
        tokens (CLS excluded too), i.e. what a VLM that drops CLS sees."""
        p2t = self.patch_to_token[b]
        return p2t[1:] - 1 if self.has_cls else p2t


def run_counts(out: EncoderOutput, policy: Policy) -> tuple[list[list[int]], list[bool]]:
    """For FLOP accounting: per image, the tokens entering each block run (and leaving the last),
    and per block whether the policy ran the matcher there."""
    layers = out.counts.shape[1] - 1
    return out.counts.tolist(), [bool(policy.merges_at(i)) for i in range(layers)]


class VisionRunner:
    """Runs an encoder with a merging policy up to the layer its consumer reads."""

    def __init__(self, adapter: FamilyAdapter, layers_run: int | None = None, feature_layer: int | None = None):
        self.adapter = adapter
        self.default_layers_run = adapter.num_layers if layers_run is None else layers_run
        self.feature_layer = feature_layer

    @classmethod
    def from_model(cls, model: nn.Module, layers_run: int | None = None) -> VisionRunner:
        """CLIPVisionModel, SiglipVisionModel, Dinov2Model, or a LLaVA holding one (ConfigError otherwise).

        The default number of blocks run is what a LLaVA reads (its vision_feature_layer), or
        every block of a bare vision model; ``layers_run`` overrides it.
        """
        tower = resolve_tower(model)
        runner = cls(tower.adapter, tower.layers_run, tower.feature_layer)
        if layers_run is not None:
            runner._check_layers(layers_run)
            runner.default_layers_run = layers_run
        return runner

    # -- facts about the encoder ------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self.adapter.model

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def has_cls(self) -> bool:
        return self.adapter.has_cls

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    @property
    def image_size(self) -> int:
        return self.adapter.image_size

    @property
    def encoder_key(self) -> str:
        return encoder_key(self.adapter)

    def num_patches(self, image_size: int | None = None) -> int:
        rows, cols = self.adapter.grid(image_size or self.image_size, image_size or self.image_size)
        return rows * cols

    def r_for_level(self, level: str, image_size: int | None = None) -> int:
        """Merges per layer for low/mid/high on this encoder (see merge.levels)."""
        return r_for_level(self.encoder_key, level, self.num_patches(image_size), self.default_layers_run)

    # -- running ------------------------------------------------------------------------------
    def _check_layers(self, layers_run: int) -> None:
        if isinstance(layers_run, bool) or not isinstance(layers_run, int) or not 0 <= layers_run <= self.num_layers:
            raise ConfigError(f"layers_run must be an integer in 0..{self.num_layers}, got {layers_run!r}")

    def _check(self, pixel_values: torch.Tensor, policy: Policy, layers_run: int) -> None:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ConfigError(f"pixel_values must be a (B,3,H,W) tensor, got {shape}")
        self._check_layers(layers_run)
        n = policy.num_layers
        if n is not None and not layers_run <= n <= self.num_layers:
            raise ConfigError(
                f"{type(policy).__name__} has settings for {n} layers, but this {self.family} encoder has "
                f"{self.num_layers} layers and {layers_run} of them run; give one value per encoder layer"
            )

    def check_selector(self, selector: Selector, image_size: int | None = None) -> None:
        """ConfigError when ``selector``'s settings cannot apply to this encoder's images."""
        size = image_size or self.image_size
        selector.check(self.num_patches(size), self.adapter.grid(size, size), self.has_cls)

    def _reading_projections(self, out: torch.Tensor, last_input: torch.Tensor,
                             layers_run: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-width (query, key) projections of the block that reads ``out``: the next block when
        there is one (LLaVA reads layer -2: the tower's last block), else the last block run, of its input."""
        layer, h = (layers_run, out) if layers_run < self.num_layers else (layers_run - 1, last_input)
        parts = self.adapter.layer(layer)
        h = parts.ln1(h)
        return parts.q(h), parts.k(h)

    @torch.no_grad()
    def __call__(
        self, pixel_values: torch.Tensor, policy: Policy | None = None, layers_run: int | None = None,
        selector: Selector | None = None,
    ) -> EncoderOutput:
        """Run the blocks with ``policy`` merging; then ``selector`` (if any) picks the output tokens
        from the last block's output, reading that block's attention when it needs to."""
        policy = NoMerge() if policy is None else policy
        layers_run = self.default_layers_run if layers_run is None else layers_run
        self._check(pixel_values, policy, layers_run)
        if selector is not None and layers_run == 0:
            raise ConfigError(f"{type(selector).__name__} selects from a block's output: layers_run must be >= 1")
        param = next(self.model.parameters())
        x = self.adapter.embed(pixel_values.to(device=param.device, dtype=param.dtype))
        state = TokenState.initial(x)
        counts = [state.counts]
        probe = Probe(self.has_cls) if selector is not None and selector.needs_attention else None
        last_input = state.x
        for i in range(layers_run):
            last = i == layers_run - 1
            last_input = state.x
            state = run_block(self.adapter.layer(i), state, i, policy, self.has_cls, probe if last else None)
            counts.append(state.counts)
        if selector is not None:
            grid = self.adapter.grid(pixel_values.shape[-2], pixel_values.shape[-1])
            ids = ([zlib.crc32(img.detach().float().cpu().numpy().tobytes()) for img in pixel_values]
                   if selector.needs_image_ids else None)
            keys, importance = (probe.keys, probe.importance) if probe is not None else (None, None)
            queries, projected = (self._reading_projections(state.x, last_input, layers_run)
                                  if selector.needs_projections else (None, None))
            state = selector(state, SelectionInput(self.has_cls, grid, keys, importance, ids, queries, projected))
        return EncoderOutput(
            tokens=state.x,
            valid=state.valid,
            sizes=state.sizes,
            patch_to_token=state.patch_to_token,
            counts=torch.stack(counts, dim=1),
            has_cls=self.has_cls,
            cls_row=bool(selector is not None and selector.cls_row and self.has_cls),
        )
