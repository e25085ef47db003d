"""A head of learned queries (nn.TransformerDecoder) against a pooled head, on one encoder.

A ViT of torch's own layers (ViT-Tiny's shape by default: 16 px patches, width 192, 3 heads, MLP
768, 12 pre-norm encoder layers) with one of two heads on the same encoder weights: "pooled", the
mean token's LayerNorm and a Linear to the classes; "queries", one learned query per class read by
an nn.TransformerDecoder (post-norm, ReLU, as ML-Decoder and Query2Label build it: self-attention
over the queries, cross-attention from them to the image's tokens, FF) and a Linear from each
query to its class's logit. Random init (seed 0), random images; per configuration of
``fidelity.py``, the error of the SNN's mean logits against the ANN's and the energy, for each head.

    python benchmarks/query_head.py [--img-size 224] [--classes 20] [--decoder-layers 1]
        [--configs default mse+nearest ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from fidelity import CONFIGS, measure, print_table
from torch import nn

from transpike.rules import Role, register


class TorchViT(nn.Module):
    """The encoder and one of the two heads (``queries``: the decoder; else the pooled head)."""

    def __init__(self, img_size: int, classes: int, decoder_layers: int, queries: bool) -> None:
        super().__init__()
        width, heads, depth = 192, 3, 12
        self.patch = nn.Conv2d(3, width, 16, 16)
        self.pos = nn.Parameter(torch.randn(1, (img_size // 16) ** 2, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, nn.LayerNorm(width), enable_nested_tensor=False)
        self.queries = queries
        if queries:
            self.query_embed = nn.Parameter(torch.randn(classes, width))
            decoder = nn.TransformerDecoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
            self.decoder = nn.TransformerDecoder(decoder, decoder_layers)
            self.head = nn.Linear(width, 1)
        else:
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.encoder(self.patch(x).flatten(2).transpose(1, 2) + self.pos)
        if not self.queries:
            return self.head(self.norm(memory.mean(1)))
        return self.head(self.decoder(self.query_embed.expand(len(x), -1, -1), memory)).squeeze(-1)


register(TorchViT, Role.INPUT)  # the patch convolution reads the image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--decoder-layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calib-batches", type=int, default=4)
    choices = ["default", "mse+nearest", "mse+nearest+octave4", "burst+mse", "sit+burst+mse"]
    parser.add_argument("--configs", nargs="+", default=choices, choices=list(CONFIGS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/query_head.json"))
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(1)
    shape = (args.batch, 3, args.img_size, args.img_size)
    calibration = [torch.randn(shape, generator=gen) for _ in range(args.calib_batches)]
    x = torch.randn(shape, generator=gen)
    result = dict(vars(args), out=str(args.out), heads={})
    for head in ("pooled", "queries"):
        torch.manual_seed(0)  # the same encoder for both heads: it is built first
        model = TorchViT(args.img_size, args.classes, args.decoder_layers, head == "queries").eval()
        rows = [measure(model, calibration, x, name)[0] for name in args.configs]
        result["heads"][head] = rows
        print_table(f"{head} head", rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
