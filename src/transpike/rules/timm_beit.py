"""Rules for timm's BEiT (``Beit``: BEiT and BEiT v2, base and large, at every size).

A BEiT is a pre-norm ViT whose attention adds a relative position bias to its scores, per block
(``use_rel_pos_bias``) or one table shared by all blocks (``use_shared_rel_pos_bias``), and whose
q and v projections have their own biases. The bias is a function of parameters alone, the same at
every step: added to the scores, it shifts their rate by itself, as Swin's does, and the shared
table's module is a constant. Its blocks scale their branches by LayerScale vectors (``gamma_1``,
``gamma_2``), linear. So the attention gets an explicit twin, and the blocks and the model are
those of a ViT: they hand rates along the same links, the residual stream and the head included.
"""

from __future__ import annotations

from timm.models.beit import Attention, Beit, Block, RelativePositionBias
from torch import Tensor

from . import Role, register
from .timm_twins import ExplicitAttention, packed_qkv
from .timm_vit import attention_links, block_links, model_links


class ExplicitBeitAttention(ExplicitAttention):
    """timm's BEiT ``Attention`` with Q·Kᵀ, softmax and attn·V as modules (timm may call one fused
    kernel): q, k, v = x·W_qkvᵀ + (b_q, 0, b_v), the scores plus the relative position bias of this
    block and the shared one, attn·V, the projection. Shares the original's parameters and buffers
    under their names."""

    def __init__(self, attn: Attention) -> None:
        super().__init__(attn)
        self.q_bias, self.v_bias = attn.q_bias, attn.v_bias
        self.register_buffer("k_bias", attn.k_bias, persistent=False)  # zeros in timm
        self.window_size, self.relative_position_bias_table = (
            attn.window_size,
            attn.relative_position_bias_table,
        )
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)

    def forward(self, x: Tensor, shared_rel_pos_bias: Tensor | None = None) -> Tensor:
        q, k, v = packed_qkv(self, x)
        bias = shared_rel_pos_bias
        if self.relative_position_bias_table is not None:
            own = Attention._get_rel_pos_bias(self)  # timm's own formula, on the shared parameters
            bias = own if bias is None else own + bias
        return self._attend(x, q, k, v, bias)


register(Attention, Role.CONTAINER, twin=ExplicitBeitAttention)
register(ExplicitBeitAttention, Role.CONTAINER, links=attention_links)
register(Block, Role.CONTAINER, links=block_links)
register(Beit, Role.CONTAINER, links=model_links)
register(RelativePositionBias, Role.CONSTANT)
