"""Native LLaDA: a bidirectional Llama-style transformer that loads the official state dict as is.

Facts implemented here are in docs/llada.md ("LLaDA-8B-Instruct"): module names and shapes
(`model.transformer.{wte,blocks.i.*,ln_f,ff_out}`), pre-norm blocks, RMSNorm computed in float32,
RoPE in the half-split layout with q/k rotated in float32, bidirectional SDPA with the default
scale, SwiGLU with `ff_proj` as the activated gate, untied LM head, no logit shift (docs/method.md §1).

Beyond the original remote code, this implementation
- honours `attention_mask` as a key-padding mask (docs/method.md §2 item 4, docs/method.md §8 "No attention masks"):
  never a causal part; an all-ones mask gives exactly the unmasked result;
- derives RoPE positions from the mask (cumsum - 1) so a left-padded prompt sees the positions it
  would see alone, which makes batched sampling independent of batch composition;
- supports `position_ids`, `inputs_embeds`, GQA, HF gradient checkpointing and peft;
- offers an optional block KV cache (`use_cache` / `cache` / `cache_position`,
  `LLaDAKVCache`) for Fast-dLLM-style approximate caching in diffusion sampling
  (docs/llada.md "Fast-dLLM's cache", `d1.sampling_fast`), and `logits_to_keep`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from d1.core.models.configuration_llada import LLaDAConfig


@dataclass
class LLaDAOutput(ModelOutput):
    """Output of `LLaDAModelLM.forward`.

    logits: [B, L, embedding_size], position i scores the token at position i (no shift).
    hidden_states: per-layer inputs plus the final (pre-`ln_f`) state, when requested.
    cache: the `LLaDAKVCache` filled or updated by this call (with `use_cache` or a `cache`).
    """

    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    cache: LLaDAKVCache | None = None


class LLaDAKVCache:
    """Keys and values of every layer for a whole sequence, for block-wise approximate caching.

    Fast-dLLM's cache (docs/llada.md "Fast-dLLM's cache"), batched: a full forward with
    `use_cache=True` fills it (the "refresh"); a later forward of a contiguous chunk of the same
    sequence (`cache=cache, cache_position=start`) writes the chunk's new keys/values
    into the cache at its positions, **in place**, and attends over the whole cached sequence:
    positions outside the chunk use their keys/values from the refresh (stale by design).
    Prefix cache = chunk from the block start to the end; dual cache = the block only.

    Keys are stored after RoPE: a position's rotation depends only on its position, which never
    changes between refreshes, so this equals re-rotating cached pre-RoPE keys on every call.
    The key-padding mask and position ids of the refresh are kept, so chunk calls need neither.
    Inference only: the in-place writes are not meant for autograd.

    Attributes:
        keys, values: per layer [B, n_kv_heads, L, head_dim] (None until the refresh fills them).
        attn_mask: the refresh's boolean key mask [B, 1, 1, L] (or a 4-D mask), None = no padding.
        position_ids: the refresh's RoPE positions, [B, L] or [L]; None = 0..L-1.
        position_bound: an exclusive upper bound of `position_ids` known without reading them
            (L when they were derived from the mask), None = unknown.
    """

    def __init__(
        self,
        n_layers: int,
        attn_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        position_bound: int | None = None,
    ) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.attn_mask = attn_mask
        self.position_ids = position_ids
        self.position_bound = position_bound

    @property
    def seq_length(self) -> int:
        """L, the length of the cached sequence (0 before the refresh)."""
        return 0 if self.keys[0] is None else int(self.keys[0].shape[2])

    @property
    def batch_size(self) -> int:
        """B, the number of cached rows (0 before the refresh)."""
        return 0 if self.keys[0] is None else int(self.keys[0].shape[0])

    def update(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, start: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer `layer_idx`'s k, v [B, H_kv, n, hd] at positions [start, start + n).

        The first call per layer (the refresh, start 0) stores the tensors as they are; later
        calls overwrite the chunk's positions in place. Returns the layer's full keys/values.
        """
        if self.keys[layer_idx] is None:
            if start != 0:
                raise ValueError("An empty LLaDAKVCache is filled by a full forward (start 0).")
            self.keys[layer_idx], self.values[layer_idx] = k, v
            return k, v
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[:, :, start : start + k.shape[2]] = k
        values[:, :, start : start + v.shape[2]] = v
        return keys, values


class LLaDARMSNorm(nn.Module):
    """RMSNorm with an affine weight and no bias, computed in float32 (docs/llada.md "Forward").

    `y = (x * rsqrt(mean(x^2) + eps)).to(x.dtype) * weight`, as HF's LlamaRMSNorm.
    """

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def _inv_freq(head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    return 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    )


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 RoPE tables for `position_ids` [B, L] (or [L]) -> cos, sin [B, 1, L, head_dim].

    NeoX / HF-Llama half-split layout: inv_freq = theta^(-arange(0, hd, 2)/hd), angles =
    position x inv_freq in float32, emb = cat(angles, angles) (docs/llada.md "Forward").
    The model itself reads these values from `RopeTable` (computed once per device, sliced or
    gathered per call); this direct computation is the definition it is tested against, and
    the path for explicit position ids that the table cannot index (negative or fractional).
    """
    inv_freq = _inv_freq(head_dim, theta, position_ids.device)
    pos = position_ids.to(torch.float32)
    if pos.dim() == 1:
        pos = pos[None]
    freqs = pos[..., None] * inv_freq  # [B, L, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, L, hd]
    return emb.cos(), emb.sin()


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """cat(-s1, s2) of sin's two halves: `rotate_half(x) * sin == swap_halves(x) * signed_sin`
    exactly ((-a) * b and a * (-b) are the same float), one negation per table instead of
    one per call."""
    s1, s2 = sin.chunk(2, dim=-1)
    return torch.cat((-s1, s2), dim=-1)


class RopeTable:
    """RoPE cos / signed sin for positions 0..n-1, computed once per device and grown on demand.

    Recomputing the tables on every forward cost ~2.5 % of a tiny model's sampler step (and a
    [B, L, hd] allocation per call). The values for position p are computed by exactly the
    operations of `rope_cos_sin` (float32 product with inv_freq, cat, cos / sin), elementwise,
    so a slice or a gather of the table is bit for bit the recomputed table (tested); the table
    length never changes a value. A contiguous run of positions [offset, offset + L) is a
    zero-copy slice; per-row positions (left padding) are gathered. Tables are float32 whatever
    the model dtype (LLaDA rotates q and k in float32), so one table per device serves every
    dtype. Not a buffer: not in the state dict, rebuilt lazily on a new device.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        self.head_dim = head_dim
        self.theta = theta
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, device: torch.device, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin) [n, head_dim] float32 on `device` with n >= `length`."""
        have = self._tables.get(device)
        if have is None or have[0].shape[0] < length:
            n = max(length, 256, 2 * (have[0].shape[0] if have is not None else 0))
            # Ordinary tensors even when first built under inference_mode (an inference tensor
            # could not be saved for a later training step's backward).
            with torch.inference_mode(False), torch.no_grad():
                cos, sin = rope_cos_sin(torch.arange(n, device=device), self.head_dim, self.theta)
                have = (cos[0, 0], signed_sin(sin[0, 0]))
            self._tables[device] = have
        return have

    def lookup(
        self,
        position_ids: torch.Tensor | None,
        offset: int,
        length: int,
        device: torch.device,
        bound: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin broadcastable to [B, 1, L, head_dim].

        `position_ids` None: positions offset .. offset + length - 1 (a slice of the table).
        A [B, L] or [L] integer tensor of non-negative positions is gathered from the table;
        `bound` (positions known to lie in [0, bound), e.g. derived from a mask) spares the one
        host sync that otherwise reads their range (on a GPU a sync per forward stops the host
        from queueing the next kernels while the device works). Other position ids (floating,
        negative) are computed directly.
        """
        if position_ids is None:
            cos, sin = self.tables(device, offset + length)
            return cos[None, None, offset : offset + length], sin[
                None, None, offset : offset + length
            ]
        pos = position_ids.to(device)
        if bound is not None and not pos.is_floating_point():
            hi, lo = bound - 1, 0
        else:
            lo = hi = 0
            if not pos.is_floating_point() and pos.numel() > 0:
                lo, hi = torch.stack(torch.aminmax(pos)).tolist()  # one host sync for both
        if pos.is_floating_point() or pos.numel() == 0 or lo < 0:
            cos, sin = rope_cos_sin(pos, self.head_dim, self.theta)
            return cos, signed_sin(sin)
        cos, sin = self.tables(device, hi + 1)
        if pos.dim() == 1:
            return cos[pos][None, None], sin[pos][None, None]
        return cos[pos][:, None], sin[pos][:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """cat(-x2, x1) on the two contiguous halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, L, hd] in float32 and cast back (LLaDA's rope_full_precision)."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def apply_rope_signed(x: torch.Tensor, cos: torch.Tensor, ssin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` with the signed sin of `signed_sin`: the same values bit for bit, one kernel
    fewer (no negation of x's half on every call)."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat((x2, x1), dim=-1) * ssin).to(x.dtype)


class LLaDABlock(GradientCheckpointingLayer):
    """One pre-norm LLaDA "llama" block: attention then SwiGLU MLP, each with a residual."""

    def __init__(self, config: LLaDAConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        d, kv = config.d_model, config.n_kv_heads * config.head_dim
        self.attn_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv, bias=False)
        self.v_proj = nn.Linear(d, kv, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)  # gate (activated)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)  # linear branch
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Bidirectional SDPA over q [B, H, Lq, hd] and k, v [B, H_kv, Lk, hd] (already rotated).

        Kept separate so a KV cache can later feed cached keys/values here.
        `attn_mask`: None, or boolean (True = attend) / additive float, broadcastable to
        [B, H, Lq, Lk]. Default scale 1/sqrt(head_dim), no causal part.
        """
        if self.n_kv_heads != self.n_heads:
            # Query head h reads KV head h // (H / H_kv), as LLaDA's repeat_interleave.
            rep = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: LLaDAKVCache | None = None,
        cache_position: int = 0,
    ) -> torch.Tensor:
        """x [B, L, d] -> [B, L, d]. Arguments are positional so gradient checkpointing works.

        `cos`, `sin`: the RoPE tables of x's positions, sin signed (`signed_sin`).

        With `cache`, x holds positions [cache_position, cache_position + L) of the cached
        sequence: its keys/values go into the cache there and queries attend over all of it.
        """
        b, t, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rope_signed(q, cos, sin)
        k = apply_rope_signed(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, cache_position)
        att = self.attention(q, k, v, attn_mask)
        x = x + self.attn_out(att.transpose(1, 2).reshape(b, t, -1))
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDAModel(nn.Module):
    """Holds `transformer = ModuleDict(wte, blocks, ln_f[, ff_out])`, the official layout."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        modules = {
            "wte": nn.Embedding(config.effective_embedding_size, config.d_model),
            "blocks": nn.ModuleList(LLaDABlock(config, i) for i in range(config.n_layers)),
            "ln_f": LLaDARMSNorm(config.d_model, config.rms_norm_eps),
        }
        if not config.weight_tying:
            modules["ff_out"] = nn.Linear(
                config.d_model, config.effective_embedding_size, bias=False
            )
        self.transformer = nn.ModuleDict(modules)


def _check_supported(config: LLaDAConfig) -> None:
    """Reject LLaDA options this native implementation does not implement, naming them."""
    expected = {
        "block_type": ("llama",),
        "activation_type": ("silu", "swiglu"),
        "layer_norm_type": ("rms",),
        "alibi": (False,),
        "rope": (True,),
        "include_bias": (False,),
        "include_qkv_bias": (False, None),
        "attention_layer_norm": (False,),
        "input_emb_norm": (False,),
        "scale_logits": (False,),
        "block_group_size": (1,),
        "layer_norm_with_affine": (True,),
        "bias_for_layer_norm": (False, None),
    }
    bad = {k: getattr(config, k) for k, ok in expected.items() if getattr(config, k) not in ok}
    for k in ("attention_dropout", "residual_dropout", "embedding_dropout"):
        if getattr(config, k):
            bad[k] = getattr(config, k)
    if bad:
        raise ValueError(
            f"LLaDAModelLM implements the released LLaDA architecture only; unsupported config "
            f"values: {bad}. Use the official remote code (trust_remote_code=True) for these."
        )
    if config.d_model % config.n_heads or config.n_heads % config.n_kv_heads:
        raise ValueError(
            f"d_model ({config.d_model}) must be divisible by n_heads ({config.n_heads}) and "
            f"n_heads by n_kv_heads ({config.n_kv_heads})."
        )
    if config.head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {config.head_dim}.")


class LLaDAPreTrainedModel(PreTrainedModel):
    """HF plumbing shared by LLaDA models (init, checkpointing, device-map hints)."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["LLaDABlock"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, init_std = 0.02) for linears and embeddings, ones for RMSNorm weights."""
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LLaDARMSNorm):
            init.ones_(module.weight)


def key_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """[B, L] (1 real, 0 pad) -> boolean [B, 1, 1, L] key mask (True = attend), or None.

    None when nothing is padded, so a mask without zeros gives exactly the unmasked result.
    A row with no real token at all attends everywhere (its output is meaningless but finite).
    """
    valid = attention_mask.bool()
    if bool(valid.all()):
        return None
    valid = valid | ~valid.any(dim=-1, keepdim=True)
    return valid[:, None, None, :]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids cumsum(mask) - 1 clamped at 0: a left-padded row counts from its first token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class LLaDAModelLM(LLaDAPreTrainedModel):
    """LLaDA masked diffusion LM with the official state-dict layout (`model.transformer.*`)."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__(config)
        _check_supported(config)
        self.model = LLaDAModel(config)
        # Not a module or buffer: float32 tables per device, outside the state dict.
        self._rope = RopeTable(config.head_dim, config.rope_theta)
        self.post_init()

    # --- embeddings -------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear | None:
        """The untied LM head `model.transformer.ff_out` (None when weight_tying)."""
        tr = self.model.transformer
        return tr["ff_out"] if "ff_out" in tr else None  # noqa: SIM401 (ModuleDict has no .get)

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.model.transformer["ff_out"] = value

    # --- forward ----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = True,
        output_hidden_states: bool | None = None,
        cache: LLaDAKVCache | None = None,
        use_cache: bool | None = None,
        cache_position: int | torch.Tensor | None = None,
        logits_to_keep: int | slice | torch.Tensor = 0,
        **kwargs,
    ) -> LLaDAOutput | tuple[torch.Tensor, ...]:
        """Logits [B, L, V] of a bidirectional pass; position i scores token i (no shift).

        Args:
            input_ids: [B, L] token ids (or give `inputs_embeds` [B, L, d]).
            attention_mask: [B, L] with 1 = real, 0 = padding, used as a key-padding mask only
                (padded queries still attend to real keys, so no NaN); or a ready 4-D mask
                (boolean True = attend, or additive float) broadcastable to [B, H, L, L].
            position_ids: [B, L] or [L] RoPE positions. Default: cumsum(mask) - 1 clamped at 0
                when a 2-D mask is given, else 0..L-1.
            return_dict: False returns a tuple `(logits,)` (plus hidden states, then the cache,
                when requested).
            output_hidden_states: also return the hidden states.
            cache: a filled `LLaDAKVCache`: the input is then the contiguous chunk
                [cache_position, cache_position + L) of the cached sequence; its keys/values are
                written into the cache in place and it attends over the whole cached sequence
                (approximate block caching, docs/llada.md "Fast-dLLM's cache"). The mask and
                positions default to the cache's (an `attention_mask` given here must be the
                [B, L_cache] one of the whole sequence).
            use_cache: True (without `cache`) returns a new `LLaDAKVCache` of this full
                forward in the output's `cache`. Default: off (`config.use_cache` is ignored:
                a diffusion model has no generic incremental decoding).
            cache_position: start of the chunk in the cached sequence (int, or HF-style 1-D
                tensor of its consecutive positions). Required with `cache`.
            logits_to_keep: compute logits only for some positions (HF semantics): 0 = all,
                N > 0 = the last N, a slice or a 1-D index tensor = those positions.
            kwargs: `past_key_values` is read as `cache` (transformers' old name); the rest
                are accepted and ignored (from generic callers).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        tr = self.model.transformer
        x = tr.wte(input_ids) if inputs_embeds is None else inputs_embeds
        b, t = x.shape[:2]

        if cache is None:
            cache = kwargs.get("past_key_values")
        if cache is not None:
            return self._forward_chunk(
                x,
                cache,
                cache_position,
                attention_mask,
                position_ids,
                return_dict,
                output_hidden_states,
                logits_to_keep,
            )

        attn_mask = None
        bound = None  # of position ids derived here (no host sync to read their range)
        if attention_mask is not None:
            if attention_mask.dim() == 2:
                if attention_mask.shape != (b, t):
                    raise ValueError(
                        f"attention_mask shape {tuple(attention_mask.shape)} != input {(b, t)}."
                    )
                attn_mask = key_padding_mask(attention_mask)
                if position_ids is None and attn_mask is not None:
                    position_ids = positions_from_mask(attention_mask)
                    bound = t
            elif attention_mask.dim() in (3, 4):
                attn_mask = attention_mask if attention_mask.dim() == 4 else attention_mask[:, None]
                if attn_mask.is_floating_point():
                    attn_mask = attn_mask.to(x.dtype)
            else:
                raise ValueError("attention_mask must be [B, L] or a [B, (1,) L, L] mask.")
        # position_ids None from here on means 0..t-1 (a slice of the RoPE table, no tensor).
        if position_ids is not None:
            position_ids = position_ids.to(x.device)
        if use_cache:
            cache = LLaDAKVCache(len(tr.blocks), attn_mask, position_ids, bound)
        return self._run_blocks(
            x,
            position_ids,
            attn_mask,
            cache,
            0,
            return_dict,
            output_hidden_states,
            logits_to_keep,
            bound,
        )

    def _forward_chunk(
        self,
        x: torch.Tensor,
        cache: LLaDAKVCache,
        cache_position: int | torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        return_dict: bool | None,
        output_hidden_states: bool | None,
        logits_to_keep: int | slice | torch.Tensor,
    ) -> LLaDAOutput | tuple[torch.Tensor, ...]:
        """A chunk of a cached sequence: see `forward`'s `cache`."""
        if not isinstance(cache, LLaDAKVCache) or cache.seq_length == 0:
            raise ValueError(
                "cache must be an LLaDAKVCache filled by a full forward with use_cache=True."
            )
        if cache_position is None:
            raise ValueError("cache_position (the chunk's start) is required with a cache.")
        if isinstance(cache_position, torch.Tensor):
            cache_position = int(cache_position.reshape(-1)[0])
        b, t = x.shape[:2]
        start, end = int(cache_position), int(cache_position) + t
        if start < 0 or end > cache.seq_length or b != cache.batch_size:
            raise ValueError(
                f"Chunk [{start}, {end}) of batch {b} does not fit the cache (length "
                f"{cache.seq_length}, batch {cache.batch_size})."
            )
        attn_mask = cache.attn_mask
        if attention_mask is not None:
            if attention_mask.shape != (b, cache.seq_length):
                raise ValueError(
                    f"With a cache, attention_mask must be the whole sequence's [B, L] mask "
                    f"{(b, cache.seq_length)}; got {tuple(attention_mask.shape)}."
                )
            attn_mask = key_padding_mask(attention_mask)
        if attn_mask is not None and attn_mask.shape[-2] != 1:
            attn_mask = attn_mask[..., start:end, :]  # a 4-D mask: the chunk's query rows
        bound = None
        if position_ids is None and cache.position_ids is not None:
            position_ids = cache.position_ids[..., start:end]
            bound = cache.position_bound
        return self._run_blocks(
            x,
            None if position_ids is None else position_ids.to(x.device),
            attn_mask,
            cache,
            start,
            return_dict,
            output_hidden_states,
            logits_to_keep,
            bound,
        )

    def _run_blocks(
        self,
        x: torch.Tensor,
        position_ids: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        cache: LLaDAKVCache | None,
        cache_position: int,
        return_dict: bool | None,
        output_hidden_states: bool | None,
        logits_to_keep: int | slice | torch.Tensor,
        position_bound: int | None = None,
    ) -> LLaDAOutput | tuple[torch.Tensor, ...]:
        """Blocks, final norm and LM head (the shared tail of full and cached forwards).

        `position_ids` None: x holds positions cache_position .. cache_position + L - 1.
        `position_bound`: see `RopeTable.lookup`.
        """
        tr = self.model.transformer
        cos, sin = self._rope.lookup(
            position_ids, cache_position, x.shape[1], x.device, position_bound
        )
        hidden = [] if output_hidden_states else None
        for block in tr.blocks:
            if hidden is not None:
                hidden.append(x)
            if cache is None:
                x = block(x, cos, sin, attn_mask)
            else:
                x = block(x, cos, sin, attn_mask, cache=cache, cache_position=cache_position)
        if hidden is not None:
            hidden.append(x)
        x = _keep_positions(x, logits_to_keep)
        x = tr.ln_f(x)
        logits = tr.ff_out(x) if "ff_out" in tr else F.linear(x, tr.wte.weight)
        hs = tuple(hidden) if hidden is not None else None
        if return_dict is False:
            out: tuple[torch.Tensor, ...] = (logits,) if hs is None else (logits, hs)
            return out if cache is None else (*out, cache)
        return LLaDAOutput(logits=logits, hidden_states=hs, cache=cache)


def _keep_positions(x: torch.Tensor, keep: int | slice | torch.Tensor) -> torch.Tensor:
    """x [B, L, d] restricted to `logits_to_keep` (0 = all, N = the last N, slice, indices)."""
    if isinstance(keep, slice):
        return x[:, keep]
    if isinstance(keep, torch.Tensor):
        return x.index_select(1, keep.to(x.device))
    if keep < 0:
        raise ValueError(f"logits_to_keep must be >= 0; got {keep}.")
    return x if keep == 0 else x[:, -keep:]


__all__ = [
    "LLaDABlock",
    "LLaDAKVCache",
    "LLaDAModel",
    "LLaDAModelLM",
    "LLaDAOutput",
    "LLaDAPreTrainedModel",
    "LLaDARMSNorm",
    "RopeTable",
    "apply_rope",
    "apply_rope_signed",
    "key_padding_mask",
    "positions_from_mask",
    "rope_cos_sin",
    "signed_sin",
]
