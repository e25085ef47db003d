"""Rules for timm's iFormer (Zheng 2025, "iFormer: Integrating ConvNet and Transformer for Mobile
Application"; ``iformer_t`` to ``iformer_h``, distilled or not, in training form or fused).

Its single-head modulation attention (SHMA) computes q and k by 1×1 convolutions with BatchNorm,
and v and a gate together through one convolution and a sigmoid; the attention over the map's
pixels is gated: proj(softmax(q·kᵀ/√d)·v ⊙ gate), optionally in zero-padded windows. The twin makes
Q·Kᵀ, attn·V and the gating products of spiking operands with their EC, the sigmoid and the
softmax EC modules. Everything else is a ConvNet's: convolutions with BatchNorm (affine), GELU as
EC modules, residual sums with LayerScale and a conditional position encoding (linear). The stem's
first convolution reads the image; the head is BatchNorm then a Linear (one, or two averaged when
distilled), and one rate link runs from the stem to the head's Linears.
"""

from __future__ import annotations

import torch.nn.functional as F
from timm.models import iformer
from torch import Tensor, nn

from ..sites import Product
from . import Link, Role, register
from .links import link_all
from .timm_twins import SoftmaxHeads


class ExplicitSHMA(SoftmaxHeads):
    """timm's iFormer ``SHMA`` with Q·Kᵀ, softmax, attn·V and the gating as modules, on one head of
    [B, 1, pixels, channels]. Shares the original's submodules under their names."""

    def __init__(self, attn: iformer.SHMA) -> None:
        super().__init__()
        self.window_size = attn.window_size
        self.q, self.k, self.v_gate, self.gate_act = attn.q, attn.k, attn.v_gate, attn.gate_act
        self.proj = attn.proj
        self._init_heads(attn)
        self.gating = Product("mul", 1.0, channels_a=(-3,), channels_b=(-3,))

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if self.window_size:  # zero-padded to whole windows, as timm does
            x = F.pad(x, (0, -width % self.window_size, 0, -height % self.window_size))
            padded = x.shape[-2:]
            x = iformer.SHMA._window_partition(x, self.window_size)
        v, gate = self.gate_act(self.v_gate(x)).chunk(2, dim=1)
        q, k, v = (t.flatten(2).transpose(-1, -2).unsqueeze(1) for t in (self.q(x), self.k(x), v))
        out = self.heads(q, k, v).squeeze(1).transpose(-1, -2).reshape(gate.shape)
        out = self.proj(self.gating(out, gate))
        if self.window_size:
            out = iformer.SHMA._window_reverse(out, self.window_size, *padded)[..., :height, :width]
        return out


def _links(model: iformer.IFormer) -> list[Link]:
    """One link from the stem to the head's Linears (``l`` after each NormLinear's BatchNorm), or
    to the head itself when it is one layer (fused) or left analog by ``blocks=k``; none without a
    head."""
    head = model.head
    if isinstance(head, iformer.RepVitClassifier):
        outputs = [
            f"head.{name}.l"
            for name in ("head", "head_dist")
            if isinstance(getattr(head, name), iformer.NormLinear)
        ]
    else:
        outputs = [] if isinstance(head, nn.Identity) else ["head"]
    return link_all(model, *outputs) if outputs else []


register(iformer.SHMA, Role.CONTAINER, twin=ExplicitSHMA)
register(iformer.IFormer, Role.INPUT, links=_links)  # the stem's first convolution reads the image
for cls in (
    ExplicitSHMA,
    iformer.ConvNorm,
    iformer.NormLinear,
    iformer.RepVitClassifier,
    iformer.Residual,
    iformer.SHMABlock,
    iformer.FFN,
    iformer.ConvBlock,
    iformer.RepCPE,
    iformer.StageBlock,
    iformer.Stem,
):
    register(cls, Role.CONTAINER)
