"""Rules for timm's VOLO (Yuan et al. 2022, "VOLO: Vision Outlooker for Visual Recognition";
D1 to D5).

VOLO's first stage is outlookers: each pixel's attention over its k × k neighborhood comes from a
Linear of the (average-pooled) map, not from q·k (the softmax an EC module, the weights times the
unfolded values a product of two spiking operands; unfold and fold are linear). The unfolded
values repeat each value k² times, so that operand's MT neuron counts each copy: the spikes drive
real operations, but the neuron count and the firing-rate denominator include the copies. Then
ViT blocks on the downsampled map (channels last), then class-attention blocks (q from the class
token, as CaiT's). The head adds half the maximum over the tokens of an auxiliary head's logits
(token labeling), which timm computes in forward: the twin of the model makes that maximum a
module (an EC module). The stem's first convolution reads the image; one rate link runs from it
to both heads.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from timm.models import volo
from torch import Tensor, nn

from ..sites import Product
from . import Role, register
from .links import link_all
from .timm_twins import ExplicitAttention, SoftmaxHeads, TokenPool
from .timm_vit import attention_links


class ExplicitOutlookAttention(nn.Module):
    """timm's ``OutlookAttention`` on [B, H, W, C] with its softmax and product as modules: per
    head, softmax(W_a·pool(x) / √d) (k² × k² weights at each pooled pixel) times the k × k
    neighborhood of v = W_v·x, folded back onto the map, then the projection. Shares the
    original's submodules under their names."""

    def __init__(self, attn: volo.OutlookAttention) -> None:
        super().__init__()
        self.num_heads, self.kernel_size, self.padding, self.stride = (
            attn.num_heads,
            attn.kernel_size,
            attn.padding,
            attn.stride,
        )
        self.scale, self.v, self.attn = attn.scale, attn.v, attn.attn
        self.unfold, self.pool = attn.unfold, attn.pool
        self.softmax, self.attn_drop = nn.Softmax(dim=-1), attn.attn_drop
        # operands [B, heads, N, k², k²] (weights) and [B, heads, N, k², d] (neighborhoods)
        self.av = Product("matmul", channels_a=(-4,), channels_b=(-4, -1))
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        window = self.kernel_size * self.kernel_size
        pixels = math.ceil(height / self.stride) * math.ceil(width / self.stride)
        v = self.unfold(self.v(x).permute(0, 3, 1, 2))
        v = v.reshape(batch, self.num_heads, -1, window, pixels).permute(0, 1, 4, 3, 2)
        weights = self.attn(self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        weights = weights.reshape(batch, pixels, self.num_heads, window, window).transpose(1, 2)
        weights = self.attn_drop(self.softmax(weights * self.scale))
        out = self.av(weights, v).permute(0, 1, 4, 3, 2).reshape(batch, channels * window, pixels)
        out = F.fold(out, (height, width), self.kernel_size, padding=self.padding, stride=self.stride)
        return self.proj_drop(self.proj(out.permute(0, 2, 3, 1)))


class ExplicitVoloAttention(ExplicitAttention):
    """timm's VOLO ``Attention`` on a channels-last map [B, H, W, C]: a ViT's attention over its
    pixels."""

    def forward(self, x: Tensor) -> Tensor:
        _, height, width, _ = x.shape
        return super().forward(x.flatten(1, 2)).unflatten(1, (height, width))


class ExplicitVoloClassAttention(SoftmaxHeads):
    """timm's VOLO ``ClassAttention``: q from the class token, k and v from every token, with
    Q·Kᵀ, softmax and attn·V as modules; the class token's new embedding. Shares the original's
    submodules under their names."""

    def __init__(self, attn: volo.ClassAttention) -> None:
        super().__init__()
        self.num_heads, self.kv, self.q, self.proj, self.proj_drop = (
            attn.num_heads,
            attn.kv,
            attn.q,
            attn.proj,
            attn.proj_drop,
        )
        self._init_heads(attn)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        k, v = self.kv(x).reshape(batch, tokens, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q = self.q(x[:, :1]).reshape(batch, 1, self.num_heads, -1).transpose(1, 2)
        return self.proj_drop(self.proj(self.heads(q, k, v).transpose(1, 2).reshape(batch, 1, -1)))


class AuxPooledVolo(volo.VOLO):
    """A ``VOLO`` whose auxiliary head's maximum over the tokens is its ``aux_pool`` child (a
    :class:`TokenPool`) instead of timm's function: the same head otherwise."""

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = x
        if self.global_pool == "avg":
            pooled = x.mean(dim=1)
        elif self.global_pool == "token":
            pooled = x[:, 0]
        pooled = self.head_drop(pooled)
        if pre_logits:
            return pooled
        out = self.head(pooled)
        if self.global_pool:  # the class token's logits plus half the tokens' maximum
            out = out + 0.5 * self.aux_pool(self.aux_head(self.head_drop(x)[:, 1:]))
        return out


def _aux_pool_twin(model: volo.VOLO) -> volo.VOLO:
    """The model itself, its auxiliary head's maximum made a module when it has one (no
    parameters: the keys stay the ANN's)."""
    if model.aux_head is None:
        return model
    model.__class__ = AuxPooledVolo
    model.aux_pool = TokenPool("max", 0, False)
    return model


def _links(model: volo.VOLO) -> list:
    """One link from the stem to the outputs: the head, and the auxiliary head's maximum, which
    the head's output adds; none for a headless model (its output is a sum)."""
    if isinstance(model.head, nn.Identity):
        return []
    return link_all(model, "head", *(["aux_pool"] if isinstance(model, AuxPooledVolo) else []))


def _block_paths(model: volo.VOLO) -> list[str]:
    """The outlookers and ViT blocks of each stage in turn, then the class-attention blocks."""
    paths = [
        f"network.{s}.{b}"
        for s, stage in enumerate(model.network)
        if isinstance(stage, nn.Sequential)
        for b in range(len(stage))
    ]
    return paths + [f"post_network.{b}" for b in range(len(model.post_network or ()))]


register(volo.OutlookAttention, Role.CONTAINER, twin=ExplicitOutlookAttention)
register(volo.Attention, Role.CONTAINER, twin=ExplicitVoloAttention)
register(ExplicitVoloAttention, Role.CONTAINER, links=attention_links)
register(volo.ClassAttention, Role.CONTAINER, twin=ExplicitVoloClassAttention)
register(volo.VOLO, Role.CONTAINER, twin=_aux_pool_twin, links=_links, blocks=_block_paths)
register(AuxPooledVolo, Role.CONTAINER, links=_links, blocks=_block_paths)
register(volo.PatchEmbed, Role.INPUT)  # its stem's first convolution reads the image
for cls in (
    ExplicitOutlookAttention,
    ExplicitVoloClassAttention,
    volo.Outlooker,
    volo.Transformer,
    volo.ClassBlock,
    volo.Downsample,
):
    register(cls, Role.CONTAINER)
