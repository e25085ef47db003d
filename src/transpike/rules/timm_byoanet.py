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
convolution of v, a weight layer, or the relative embedding times v, linear). BAT's bilinear
attention (Chi et al. 2020, "Non-Local Neural Networks With Grouped Bilinear Attentional
Transforms"; ``bat_resnext26ts``) maps each channel group by P·X·Q, where P and Q come from the
map's row and column max pools (EC modules) by a convolution, a sigmoid and a normalization over
rows or columns (one EC module each), and are spread over the map's blocks (a Kronecker product
with the identity: linear); its twin makes the two products modules. The rest is a ResNet's: the
stem's first convolution reads the image, and one rate link runs from it to the head's classifier.
"""

from __future__ import annotations

import torch
from timm.layers.bottleneck_attn import BottleneckAttn
from timm.layers.bottleneck_attn import PosEmbedRel as BottleneckPosEmbed
from timm.layers.halo_attn import HaloAttn
from timm.layers.halo_attn import PosEmbedRel as HaloPosEmbed
from timm.layers.lambda_layer import LambdaLayer
from timm.layers.non_local_attn import BatNonLocalAttn, BilinearAttnTransform
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


class NormalizedSigmoid(nn.Module):
    """σ(x) / Σ σ(x) over ``dim``: BAT's transform weights, each row (or column) summing to 1."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        gates = x.sigmoid()
        return gates / gates.sum(self.dim, keepdim=True)


def spread(weights: Tensor, times: int) -> Tensor:
    """[.., n, n] weights as [.., n·t, n·t]: each weight w times the t × t identity (timm's
    ``resize_mat``, a Kronecker product)."""
    *batch, n, _ = weights.shape
    eye = torch.eye(times, dtype=weights.dtype, device=weights.device)
    return (weights[..., :, None, :, None] * eye[:, None, :]).reshape(*batch, n * times, n * times)


class ExplicitBilinearAttnTransform(nn.Module):
    """timm's ``BilinearAttnTransform`` (BAT): per channel group, Y = P·X·Q with P = N(conv_p(
    rowmax(conv1(X)))) over rows and Q likewise over columns (N the normalized sigmoid), spread
    over the map's blocks, then conv2; the pools, the normalizations and both products modules.
    Shares the original's convolutions under their names."""

    def __init__(self, ba: BilinearAttnTransform) -> None:
        super().__init__()
        self.conv1, self.conv_p, self.conv_q, self.conv2 = ba.conv1, ba.conv_p, ba.conv_q, ba.conv2
        self.block_size, self.groups = ba.block_size, ba.groups
        self.row_pool = nn.AdaptiveMaxPool2d((ba.block_size, 1))
        self.col_pool = nn.AdaptiveMaxPool2d((1, ba.block_size))
        self.row_weights, self.col_weights = NormalizedSigmoid(-1), NormalizedSigmoid(-2)
        # P [B, groups, 1, H, H] · X [B, groups, C / groups, H, W] · Q [B, groups, 1, W, W]
        self.rows = Product("matmul", channels_a=(-4,), channels_b=(-4, -3))
        self.cols = Product("matmul", channels_a=(-4, -3), channels_b=(-4,))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        if height % self.block_size or width % self.block_size:
            size = f"{height}×{width}"
            raise ValueError(
                f"BAT's transform takes maps whose sides its block size {self.block_size} divides, got {size}"
            )
        out, shape = self.conv1(x), (batch, self.groups, self.block_size, self.block_size)
        p = self.row_weights(self.conv_p(self.row_pool(out)).view(shape))
        q = self.col_weights(self.conv_q(self.col_pool(out)).view(shape))
        p, q = spread(p, height // self.block_size), spread(q, width // self.block_size)
        grouped = x.view(batch, self.groups, channels // self.groups, height, width)
        y = self.cols(self.rows(p.unsqueeze(2), grouped), q.unsqueeze(2))
        return self.conv2(y.view(batch, channels, height, width))


for cls in (BottleneckAttn, HaloAttn):
    register(cls, Role.CONTAINER, twin=_attention_twin)
register(BilinearAttnTransform, Role.CONTAINER, twin=ExplicitBilinearAttnTransform)
register(NormalizedSigmoid, Role.NONLINEAR)
register(LambdaLayer, Role.CONTAINER, twin=_lambda_twin)
for cls in (
    ExplicitBottleneckAttn,
    ExplicitHaloAttn,
    ExplicitLambdaLayer,
    ExplicitBilinearAttnTransform,
    BatNonLocalAttn,
    SelfAttnBlock,
    Stem,
):
    register(cls, Role.CONTAINER)
for cls in (BottleneckPosEmbed, HaloPosEmbed):
    register(cls, Role.PASSTHROUGH)  # q times parameters, padded and reshaped: linear in q
