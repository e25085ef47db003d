"""Rules for timm Vision Transformers (VisionTransformer, DeiT and DeiT-distilled).

What is converted, following ECMT Algorithm 1:

- every Linear (qkv, proj, fc1, fc2, the heads, the attention gate) gets an MT neuron before it;
- Q·Kᵀ and attn·V get an MT neuron on each operand and the product EC; the attention scale is
  folded into the product;
- LayerNorm (block norms, qk-norm, final norm, fc_norm), GELU and softmax become EC modules;
- the patch embedding sees the image at every step (direct coding): its convolution stays analog,
  as in ECMT and most conversion work, and its output is the same at every step;
- class, register and distillation tokens, position embeddings, residual sums, LayerScale and
  class-token or average pooling are linear and need no change.

timm's ``Attention`` calls one fused ``scaled_dot_product_attention`` kernel whose internals no hook
can reach, so ``prepare`` swaps it for :class:`ExplicitAttention`, which computes the same function
with every product and nonlinearity as its own module (whether or not timm would fuse it).
"""

from __future__ import annotations

from timm.layers import Attention, DropPath, LayerScale, Mlp, PatchDropout, PatchEmbed
from timm.layers import activations as timm_act
from timm.layers import norm as timm_norm
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import Block, ResPostBlock, VisionTransformer
from torch import Tensor, nn

from ..sites import Product
from . import Role, register

LINEAR_POOLS = ("token", "avg", "")


class ExplicitAttention(nn.Module):
    """timm ``Attention`` with Q·Kᵀ, softmax, attn·V and the optional gate as separate modules.

    Shares the original's submodules (qkv, q_norm, k_norm, norm, gate, proj).
    """

    # Q·Kᵀ's output goes only to the softmax (through attn_drop, the identity in evaluation): once
    # converted, the product EC hands the softmax EC its rate (compensation.link_rates)
    rate_links = (("qk", "softmax"),)

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.qkv = attn.qkv
        self.q_norm = attn.q_norm
        self.k_norm = attn.k_norm
        # Operands are [B, heads, tokens, head_dim] (q, v), [B, heads, head_dim, tokens] (kᵀ) and
        # [B, heads, tokens, tokens] (attn); per-channel thresholds are per (head, head_dim) or per head.
        self.qk = Product("matmul", attn.scale, channels_a=(-3, -1), channels_b=(-3, -2))
        self.softmax = nn.Softmax(dim=-1)
        self.attn_drop = attn.attn_drop
        self.av = Product("matmul", 1.0, channels_a=(-3,), channels_b=(-3, -1))
        self.norm = getattr(attn, "norm", nn.Identity())
        self.gate = getattr(attn, "gate", None)
        if self.gate is not None:
            self.gate_act = nn.Sigmoid()
            self.gating = Product("mul", 1.0, channels_a=(-1,), channels_b=(-1,))
        self.proj = attn.proj
        self.proj_drop = attn.proj_drop

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("attention masks are not supported by the converted attention")
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        attn = self.attn_drop(self.softmax(self.qk(q, k.transpose(-2, -1))))
        out = self.av(attn, v).transpose(1, 2).reshape(batch, tokens, self.attn_dim)
        out = self.norm(out)
        if self.gate is not None:
            out = self.gating(out, self.gate_act(self.gate(x)))
        return self.proj_drop(self.proj(out))


def _check_pool(model: nn.Module) -> str | None:
    if getattr(model, "attn_pool", None) is not None or model.global_pool not in LINEAR_POOLS:
        return (
            f"global_pool={model.global_pool!r} is computed by a nonlinear function inside forward(); "
            f"supported pools are {LINEAR_POOLS}"
        )
    return None


register(Attention, Role.CONTAINER, twin=ExplicitAttention)
register(ExplicitAttention, Role.CONTAINER)
register(VisionTransformer, Role.CONTAINER, check=_check_pool)
register(VisionTransformerDistilled, Role.CONTAINER, check=_check_pool)
register(Block, Role.CONTAINER)
register(ResPostBlock, Role.CONTAINER)
register(Mlp, Role.CONTAINER)
register(PatchEmbed, Role.INPUT)
for cls in (LayerScale, DropPath, PatchDropout):
    register(cls, Role.PASSTHROUGH)
for cls in (timm_act.GELU, timm_act.GELUTanh, timm_act.QuickGELU, timm_norm.RmsNorm, timm_norm.LayerNorm):
    register(cls, Role.NONLINEAR)
