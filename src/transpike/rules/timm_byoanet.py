"""Rules for timm's attention ResNets built by ``ByobNet`` (``byoanet``): BoTNet (Srinivas et al.
2021, "Bottleneck Transformers for Visual Recognition"; ``botnet*``, ``sebotnet*``,
``eca_botnext*``), HaloNet (Vaswani et al. 2021, "Scaling Local Self-Attention for Parameter
Efficient Visual Backbones"; ``halonet*``, ``sehalonet*``, ``eca_halonext*``, ``haloregnetz_b``)
and LambdaNet (Bello 2021, "LambdaNetworks"; ``lambda_resnet*``), and their mixes.

Their last stages replace the 3×3 convolution of a ResNet bottleneck by self-attention over the
map (BoTNet), over blocks with a halo of neighbours (HaloNet), or by lambda layers. The twins make
the products of two activations and the softmaxes modules: for BoTNet and HaloNet Q·Kᵀ, the
softmax and attn·V, the relative position logits a Linear of q by parameters (linear:
``passthrough``, added to the scores); for lambda layers the softmax of k over positions, the
content lambda K·V, and q times the content and the position lambdas (the latter a 3-D
convolution of v, a weight layer, or the relative embedding times v, linear). The rest is a
ResNet's: the stem's first convolution reads the image, and one rate link runs from it to the
head's classifier.
"""

from __future__ import annotations

import torch
from timm.layers.bottleneck_attn import BottleneckAttn
from timm.layers.bottleneck_attn import PosEmbedRel as BottleneckPosEmbed
from timm.layers.halo_attn import HaloAttn
from timm.layers.halo_attn import PosEmbedRel as HaloPosEmbed
from timm.layers.lambda_layer import LambdaLayer
from timm.models.byobnet import SelfAttnBlock, Stem
from torch import Tensor, nn

from ..sites import Product
from . import Role, register


def _scores(attn: nn.Module, qk: Tensor, q: Tensor) -> Tensor:
    """q·kᵀ·s + P(q), or (q·kᵀ + P(q))·s with ``scale_pos_embed``: P the relative position logits."""
    pos = attn.pos_embed(q)
    return (qk + pos) * attn.scale if attn.scale_pos_embed else qk * attn.scale + pos


class ExplicitBottleneckAttn(BottleneckAttn):
    """timm's ``BottleneckAttn`` (BoTNet) with Q·Kᵀ, the softmax and attn·V as modules: per head,
    softmax(q·kᵀ·s + P(q))·v over the map's pixels, then the pool."""

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        q, k, v = torch.split(self.qkv(x), [self.dim_out_qk, self.dim_out_qk, self.dim_out_v], dim=1)
        q = q.reshape(batch * self.num_heads, self.dim_head_qk, -1).transpose(-1, -2)
        k = k.reshape(batch * self.num_heads, self.dim_head_qk, -1)
        v = v.reshape(batch * self.num_heads, self.dim_head_v, -1).transpose(-1, -2)
        attn = self.softmax(_scores(self, self.qk(q, k), q))
        return self.pool(self.av(attn, v).transpose(-1, -2).reshape(batch, self.dim_out_v, height, width))


class ExplicitHaloAttn(HaloAttn):
    """timm's ``HaloAttn`` (HaloNet) with Q·Kᵀ, the softmax and attn·V as modules: each block of
    queries attends to its window (the block and a halo of neighbours, zero-padded at the map's
    edges), per head softmax(q·kᵀ·s + P(q))·v, then the blocks folded back and the pool."""

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        rows, cols, size = height // self.block_size, width // self.block_size, self.block_size_ds
        q = self.q(x).reshape(-1, self.dim_head_qk, rows, size, cols, size).permute(0, 1, 3, 5, 2, 4)
        q = q.reshape(batch * self.num_heads, self.dim_head_qk, -1, rows * cols).transpose(1, 3)
        kv = torch.nn.functional.pad(self.kv(x), [self.halo_size] * 4)
        kv = kv.unfold(2, self.win_size, self.block_size).unfold(3, self.win_size, self.block_size)
        kv = kv.reshape(batch * self.num_heads, self.dim_head_qk + self.dim_head_v, rows * cols, -1)
        k, v = torch.split(kv.permute(0, 2, 3, 1), [self.dim_head_qk, self.dim_head_v], dim=-1)
        attn = self.softmax(_scores(self, self.qk(q, k.transpose(-1, -2)), q))
        out = self.av(attn, v).transpose(1, 3).reshape(-1, size, size, rows, cols)
        out = out.permute(0, 3, 1, 4, 2).reshape(batch, self.dim_out_v, height // self.block_stride, -1)
        return self.pool(out)


class ExplicitLambdaLayer(LambdaLayer):
    """timm's ``LambdaLayer`` with its softmax and products as modules: k's softmax over the
    positions, the content lambda λc = softmax(k)·v, and q·λc + q·λp, the position lambda λp a
    3-D convolution of v (or, with relative embeddings E, E·v)."""

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        positions = height * width
        q, k, v = torch.split(self.qkv(x), [self.num_heads * self.dim_qk, self.dim_qk, self.dim_v], dim=1)
        q = self.norm_q(q).reshape(batch, self.num_heads, self.dim_qk, positions).transpose(-1, -2)
        v = self.norm_v(v).reshape(batch, self.dim_v, positions).transpose(-1, -2)
        k = self.softmax(k.reshape(batch, self.dim_qk, positions))
        content = self.q_content(q, self.content_lambda(k, v).unsqueeze(1))  # [B, heads, M, V]
        if self.pos_emb is None:
            lam = self.conv_lambda(v.reshape(batch, 1, height, width, self.dim_v))
            lam = lam.reshape(batch, 1, self.dim_qk, positions, self.dim_v).transpose(2, 3)
        else:
            rel = self.pos_emb[self.rel_pos_indices[0], self.rel_pos_indices[1]].expand(batch, -1, -1, -1)
            lam = (rel.transpose(-1, -2) @ v.unsqueeze(1)).unsqueeze(1)
        position = self.q_position(q.unsqueeze(-2), lam).squeeze(-2)
        return self.pool((content + position).transpose(-1, -2).reshape(batch, channels, height, width))


def _attention_twin(attn: BottleneckAttn | HaloAttn) -> nn.Module:
    """The attention itself as its explicit class, with Q·Kᵀ ([.., queries, d] by [.., d, keys]),
    the softmax and attn·V ([.., queries, keys] by [.., keys, d]) added."""
    attn.__class__ = ExplicitBottleneckAttn if isinstance(attn, BottleneckAttn) else ExplicitHaloAttn
    attn.qk = Product("matmul", channels_a=(-1,), channels_b=(-2,))
    attn.softmax = nn.Softmax(dim=-1)
    attn.av = Product("matmul", channels_b=(-1,))
    return attn


def _lambda_twin(layer: LambdaLayer) -> nn.Module:
    """The layer itself as :class:`ExplicitLambdaLayer`, with its softmax and three products."""
    layer.__class__ = ExplicitLambdaLayer
    layer.softmax = nn.Softmax(dim=-1)
    layer.content_lambda = Product("matmul", channels_a=(-2,), channels_b=(-1,))  # [B, K, M]·[B, M, V]
    layer.q_content = Product("matmul", channels_a=(-1,), channels_b=(-1,))  # [.., M, K]·[.., K, V]
    layer.q_position = Product("matmul", channels_a=(-1,), channels_b=(-1,))  # [.., 1, K]·[.., K, V]
    return layer


for cls in (BottleneckAttn, HaloAttn):
    register(cls, Role.CONTAINER, twin=_attention_twin)
register(LambdaLayer, Role.CONTAINER, twin=_lambda_twin)
for cls in (ExplicitBottleneckAttn, ExplicitHaloAttn, ExplicitLambdaLayer, SelfAttnBlock, Stem):
    register(cls, Role.CONTAINER)
for cls in (BottleneckPosEmbed, HaloPosEmbed):
    register(cls, Role.PASSTHROUGH)  # q times parameters, padded and reshaped: linear in q
