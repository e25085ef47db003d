"""Hugging Face transformers' ViT, DeiT (plain and distilled), DINOv2 (MLP or SwiGLU, with or without
registers), ViT-MSN, I-JEPA, CLIP, MetaCLIP 2, SigLIP, SigLIP 2, BEiT and Data2Vec-vision (relative
position bias per layer or shared), Swin, Donut's Swin and Swin V2 (windows that divide the grid or
not), PVT, PVT v2 (spatial-reduction or linear attention), SegFormer, CvT and LeViT (plain and
distilled) classifiers: the logits form and the twins against transformers, conversion, the one
rate link, ``blocks=k``, save/load from the model spec, ``hf:`` models on the command line (from a
class and its configuration, or a directory with safetensors weights and an image processor, SigLIP
2's NaFlex one included), and the errors for what is not converted. The classifiers of
architectures timm also builds: ``test_hf_from_timm.py``."""

import json

import numpy as np
import pytest
import torch
from conftest import (
    CONFIGURATIONS,
    assert_blocks_and_round_trip,
    assert_converts,
    assert_logits_form_matches,
    assert_rates_up_to,
    draw,
    random_images,
)
from PIL import Image
from transformers import (
    BeitForImageClassification,
    CLIPForImageClassification,
    CvtForImageClassification,
    Data2VecVisionForImageClassification,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Dinov2ForImageClassification,
    Dinov2WithRegistersForImageClassification,
    DonutSwinForImageClassification,
    IJepaForImageClassification,
    LevitConfig,
    LevitForImageClassification,
    LevitForImageClassificationWithTeacher,
    MetaClip2ForImageClassification,
    PvtForImageClassification,
    PvtV2ForImageClassification,
    SegformerForImageClassification,
    Siglip2ForImageClassification,
    Siglip2ImageProcessor,
    SiglipForImageClassification,
    SwinForImageClassification,
    Swinv2ForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTModel,
    ViTMSNForImageClassification,
)

import transpike
from transpike import ConversionError
from transpike.cli import main
from transpike.models import build_model, create_model, model_spec
from transpike.rules.hf_levit import ExplicitHFLevitAttention
from transpike.rules.hf_vit import ExplicitSwiGLUFFN, logits_model, patches
from transpike.rules.timm_twins import SoftmaxHeads

#: 16 px images, 16 patches of 4 px, two layers of 3 heads; weights drawn with std 0.3 (transformers'
#: 0.02 leaves the scores nearly equal over the keys)
VISION = dict(
    image_size=16,
    patch_size=4,
    hidden_size=24,
    num_hidden_layers=2,
    num_attention_heads=3,
    initializer_range=0.3,
)
SMALL = dict(**VISION, num_labels=5)
DINO = dict(mlp_ratio=2, layerscale_value=0.5)
#: CLIP's, MetaCLIP 2's, SigLIP's and SigLIP 2's configurations hold the vision model's as
#: vision_config (and a text model's)
DUAL = (
    CLIPForImageClassification,
    MetaClip2ForImageClassification,
    SiglipForImageClassification,
    Siglip2ForImageClassification,
)
#: Swin on 16 px: patches of 2 px, two stages of two layers (the second of each in shifted windows)
#: on grids of 8 and 4; windows of 4 divide them, windows of 3 need padding
SWIN = dict(
    image_size=16,
    patch_size=2,
    embed_dim=12,
    depths=[2, 2],
    num_heads=[2, 4],
    num_labels=5,
    initializer_range=0.3,
)
#: BEiT's relative position bias in each layer, or one shared by the layers with the class token read
BEIT = dict(intermediate_size=48, use_relative_position_bias=True)
BEIT_SHARED = dict(intermediate_size=48, use_shared_relative_position_bias=True, use_mean_pooling=False)
#: PVT v2 and SegFormer on 16 px: two stages of 1 and 2 layers on grids of 8 and 4, the first's keys
#: and values reduced to a grid of 4 (PVT v2's linear variant: pooled to 7×7)
PYRAMID = dict(
    image_size=16,
    num_encoder_blocks=2,
    depths=[1, 2],
    sr_ratios=[2, 1],
    hidden_sizes=[8, 16],
    patch_sizes=[3, 3],
    strides=[2, 2],
    num_attention_heads=[1, 2],
    mlp_ratios=[2, 2],
    num_labels=5,
    initializer_range=0.3,
)
#: PVT on 16 px: patches of 4 px, then of 2 px (its position embeddings are sized for those grids),
#: two stages of 1 and 2 layers, the first's keys and values reduced to a grid of 2
PVT = dict(
    image_size=16,
    num_encoder_blocks=2,
    depths=[1, 2],
    sequence_reduction_ratios=[2, 1],
    hidden_sizes=[8, 16],
    patch_sizes=[4, 2],
    strides=[4, 2],
    num_attention_heads=[1, 2],
    mlp_ratios=[2, 2],
    num_labels=5,
    initializer_range=0.3,
)
#: CvT on 16 px: two stages of 1 and 2 layers on grids of 8 and 4, k and v at stride 2, a class
#: token in the last stage (transformers' classifier reads only that)
CVT = dict(
    embed_dim=[8, 16],
    num_heads=[1, 2],
    depth=[1, 2],
    patch_sizes=[3, 3],
    patch_stride=[2, 2],
    patch_padding=[1, 1],
    cls_token=[False, True],
    mlp_ratio=[2.0, 2.0],
    drop_rate=[0.0, 0.0],
    attention_drop_rate=[0.0, 0.0],
    drop_path_rate=[0.0, 0.0],
    qkv_bias=[True, True],
    qkv_projection_method=["dw_bn", "dw_bn"],
    kernel_qkv=[3, 3],
    padding_kv=[1, 1],
    stride_kv=[2, 2],
    padding_q=[1, 1],
    stride_q=[1, 1],
    num_labels=5,
    initializer_range=0.3,
)
#: where their first stage's patch projection is
PYRAMID_PATCHES = {
    PvtForImageClassification: "encoder.patch_embeddings.0.projection",
    PvtV2ForImageClassification: "encoder.layers.0.patch_embedding.proj",
    SegformerForImageClassification: "stages.0.patch_embeddings.proj",
    CvtForImageClassification: "encoder.stages.0.embedding.convolution_embeddings.projection",
}
#: each class's base configuration where it is not SMALL
BASES = {
    SwinForImageClassification: SWIN,
    DonutSwinForImageClassification: SWIN,
    Swinv2ForImageClassification: SWIN,
    PvtForImageClassification: PVT,
    PvtV2ForImageClassification: PYRAMID,
    SegformerForImageClassification: PYRAMID,
    CvtForImageClassification: CVT,
}
#: the families in transformers' earlier layout, where set_attn_implementation does not apply:
#: Data2Vec's attention function is chosen by class when the model is built, Swin V2 and PVT v2
#: have one
BY_CLASS = ("data2vec", "data2vec-shared")
ONE_IMPLEMENTATION = ("swinv2", "swinv2-padded", "donut-swin", "pvt", "pvt_v2", "pvt_v2-linear", "cvt")
#: family: (class, configuration, products of two spiking operands, classifiers)
FAMILIES = {
    "vit": (ViTForImageClassification, dict(intermediate_size=48), 4, ("classifier",)),
    "deit": (DeiTForImageClassification, dict(intermediate_size=48), 4, ("classifier",)),
    "deit-distilled": (
        DeiTForImageClassificationWithTeacher,
        dict(intermediate_size=48),
        4,
        ("cls_classifier", "distillation_classifier"),
    ),
    "dinov2": (Dinov2ForImageClassification, DINO, 4, ("classifier",)),
    "dinov2-swiglu": (Dinov2ForImageClassification, dict(**DINO, use_swiglu_ffn=True), 6, ("classifier",)),
    "dinov2-registers": (
        Dinov2WithRegistersForImageClassification,
        dict(**DINO, num_register_tokens=2),
        4,
        ("classifier",),
    ),
    "vit-msn": (ViTMSNForImageClassification, dict(intermediate_size=48), 4, ("classifier",)),
    "ijepa": (IJepaForImageClassification, dict(intermediate_size=48), 4, ("classifier",)),
    "clip": (CLIPForImageClassification, dict(intermediate_size=48), 4, ("classifier",)),
    "metaclip2": (MetaClip2ForImageClassification, dict(intermediate_size=48), 4, ("classifier",)),
    "siglip": (SiglipForImageClassification, dict(intermediate_size=48), 4, ("classifier",)),
    # the position embeddings sized for a grid of 3×3, resized to the images' 4×4
    "siglip2": (Siglip2ForImageClassification, dict(intermediate_size=48, num_patches=9), 4, ("classifier",)),
    "swin": (SwinForImageClassification, dict(window_size=4), 8, ("classifier",)),
    "swin-padded": (SwinForImageClassification, dict(window_size=3), 8, ("classifier",)),
    "donut-swin": (DonutSwinForImageClassification, dict(window_size=3), 8, ("classifier",)),
    "beit": (BeitForImageClassification, BEIT, 4, ("classifier",)),
    "beit-shared": (
        BeitForImageClassification,
        dict(**BEIT_SHARED, use_absolute_position_embeddings=True, layer_scale_init_value=0.0),
        4,
        ("classifier",),
    ),
    "data2vec": (Data2VecVisionForImageClassification, BEIT, 4, ("classifier",)),
    "data2vec-shared": (Data2VecVisionForImageClassification, BEIT_SHARED, 4, ("classifier",)),
    "swinv2": (Swinv2ForImageClassification, dict(window_size=4), 8, ("classifier",)),
    "swinv2-padded": (Swinv2ForImageClassification, dict(window_size=3), 8, ("classifier",)),
    "pvt": (PvtForImageClassification, {}, 6, ("classifier",)),
    "pvt_v2": (PvtV2ForImageClassification, {}, 6, ("classifier",)),
    "pvt_v2-linear": (PvtV2ForImageClassification, dict(linear_attention=True), 6, ("classifier",)),
    "segformer": (SegformerForImageClassification, {}, 6, ("classifier",)),
    "cvt": (CvtForImageClassification, {}, 6, ("classifier",)),
}


def configuration(family: str) -> dict:
    """The keyword arguments of a family's configuration class."""
    cls, config, _, _ = FAMILIES[family]
    if cls in DUAL:
        return dict(vision_config={**VISION, **config}, num_labels=5)
    return {**BASES.get(cls, SMALL), **config}


def build(family: str, logits: bool = True, implementation: str = "sdpa") -> torch.nn.Module:
    """A small random-init transformers classifier running the attention ``implementation``, in its
    logits form unless ``logits`` is False; the relative position biases of Swin, BEiT and
    Data2Vec drawn (transformers starts them at zero)."""
    cls, kwargs = FAMILIES[family][0], configuration(family)
    if family in BY_CLASS:
        kwargs["attn_implementation"] = implementation
    torch.manual_seed(0)
    model = draw(cls(cls.config_class(**kwargs)).eval(), "relative_position_bias_table", 0.5)
    if family not in BY_CLASS + ONE_IMPLEMENTATION:
        model.set_attn_implementation(implementation)
    return logits_model(model) if logits else model


def transformers_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """transformers' logits for ``images``: SigLIP 2's from the images as its processor gives them
    (patches, a mask that keeps all, each image's grid), the others' from the images."""
    if not isinstance(model, Siglip2ForImageClassification):
        return model(pixel_values=images).logits
    size = model.config.vision_config.patch_size
    sequence, grid = patches(images, size), torch.tensor(images.shape[-2:]) // size
    mask, grids = torch.ones(sequence.shape[:2], dtype=torch.long), grid.expand(len(images), 2)
    return model(pixel_values=sequence, pixel_attention_mask=mask, spatial_shapes=grids).logits


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(16)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("implementation", "tolerance"), [("sdpa", 1e-12), ("eager", 1e-6)])
def test_the_logits_form_and_twins_compute_what_transformers_does(family, implementation, tolerance, inputs):
    """In float64, the prepared model (from the classifier itself) and the logits form give
    transformers' logits, whichever attention function transformers runs (its eager one takes the
    softmax in float32 whatever the dtype)."""
    model = build(family, logits=False, implementation=implementation).double()
    x = inputs[1].double()
    with torch.no_grad():
        reference = transformers_logits(model, x)
        prepared = assert_logits_form_matches(model, x, reference, tolerance)
        assert logits_model(logits_model(model))(x).equal(reference)
    twins = [m for m in prepared.modules() if isinstance(m, (SoftmaxHeads, ExplicitSwiGLUFFN))]
    originals = [m for m in model.modules() if type(m).__module__.startswith("transformers.")]
    hidden = [m for m in originals if type(m).__name__.endswith(("Attention", "SwiGLUFFN"))]
    # the innermost: the earlier layout's attention holds its self-attention
    assert len(twins) == sum(
        not any(type(c).__name__.endswith("Attention") for c in m.children()) for m in hidden
    )
    assert type(model) is FAMILIES[family][0]  # untouched


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_transformers_models_convert(family, options, inputs):
    """The patch projection reads the image; Q·Kᵀ and attn·V in every layer (and the SwiGLU gate)."""
    products = FAMILIES[family][2]
    model = build(family)
    patches = (
        "embeddings.patch_embedding" if isinstance(model, DUAL) else "embeddings.patch_embeddings.projection"
    )
    patches = PYRAMID_PATCHES.get(FAMILIES[family][0], patches)
    assert_converts(model, *inputs, options, direct=f"{model.backbone_name}.{patches}", products=products)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_module_passes_rates_like_increments(family, inputs):
    """One link from the patch projection to the classifiers (both of distilled DeiT)."""
    assert_rates_up_to(build(family), *inputs, outputs=FAMILIES[family][3])


@pytest.mark.parametrize(
    ("family", "analog"),
    [
        ("vit", ["vit.layers.1", "vit.layernorm"]),
        ("dinov2-registers", ["dinov2_with_registers.encoder.layer.1", "dinov2_with_registers.layernorm"]),
        # the attention-pooling head, never run by the classifier, is listed too
        ("siglip", ["vision_model.encoder.layers.1", "vision_model.post_layernorm", "vision_model.head"]),
        ("siglip2", ["vision_model.encoder.layers.1", "vision_model.post_layernorm", "vision_model.head"]),
        # stage by stage: the first stage's second layer and its patch merging, then the second stage
        (
            "swin",
            [*(f"swin.encoder.layers.{p}" for p in ("0.blocks.1", "0.downsample", "1")), "swin.layernorm"],
        ),
        # no LayerNorm after the last stage
        ("donut-swin", [f"donut.encoder.layers.{p}" for p in ("0.blocks.1", "0.downsample", "1")]),
        (
            "swinv2",
            [
                *(f"swinv2.encoder.layers.{p}" for p in ("0.blocks.1", "0.downsample", "1")),
                "swinv2.layernorm",
            ],
        ),
        # the shared relative position bias, a constant, is not listed; the final norm and the pooler
        # that takes the class token are
        ("beit-shared", ["beit.layers.1", "beit.layernorm", "beit.pooler"]),
        # the pooler's LayerNorm of the patch tokens' mean
        ("data2vec", ["data2vec_vision.encoder.layer.1", "data2vec_vision.pooler"]),
        # the first stage's only layer, its norm and the second stage's patch embedding, which run
        # before the second stage's first layer, converted
        (
            "pvt_v2-linear",
            [*(f"pvt_v2.encoder.layers.1.{p}" for p in ("blocks.0", "blocks.1", "layer_norm"))],
        ),
        ("segformer", [*(f"segformer.stages.1.{p}" for p in ("blocks.0", "blocks.1", "layer_norm"))]),
        # a stage is a list of layers; the second stage's patch embedding runs before its first layer
        ("pvt", ["pvt.encoder.block.1.0", "pvt.encoder.block.1.1", "pvt.encoder.layer_norm"]),
        # the classifier's LayerNorm of the class token
        ("cvt", ["cvt.encoder.stages.1.layers.0", "cvt.encoder.stages.1.layers.1", "layernorm"]),
    ],
)
def test_blocks_and_round_trip(family, analog, tmp_path, inputs):
    """blocks=k counts the layers; the network saved and loaded is rebuilt from its model spec
    (the class and its whole configuration)."""
    name, kwargs = f"hf:{FAMILIES[family][0].__name__}", configuration(family)
    analog = {1: [*analog, "classifier"]}
    spec = model_spec(name, kwargs, model=create_model(name, kwargs))
    assert spec["hf"] == FAMILIES[family][0].__name__
    assert_blocks_and_round_trip(lambda: build(family), inputs, analog, tmp_path / "net.safetensors", spec)


#: LeViT at 64 px: the stem's four stride-2 convolutions leave 4×4 tokens for two attention layers,
#: the subsampling attention leaves 2×2 for the last
LEVIT = dict(
    image_size=64,
    hidden_sizes=[16, 24],
    num_attention_heads=[2, 3],
    depths=[2, 1],
    key_dim=[4, 4],
    mlp_ratio=[2, 2],
    attention_ratio=[2, 2],
    down_ops=[["Subsample", 4, 2, 2, 2, 2]],
    num_labels=5,
)
#: kind: (class, the Linears that emit the logits)
LEVITS = {
    "levit": (LevitForImageClassification, ("classifier.linear",)),
    "levit-distilled": (
        LevitForImageClassificationWithTeacher,
        ("classifier.linear", "classifier_distill.linear"),
    ),
}


def build_levit(kind: str, logits: bool = True) -> torch.nn.Module:
    """A small LeViT with transformers' init (its BatchNorms' statistics are their defaults, so
    larger weights would only blow up the activations) and its attention biases drawn."""
    cls = LEVITS[kind][0]
    torch.manual_seed(0)
    model = draw(cls(LevitConfig(**LEVIT)).eval(), "attention_biases", 1.0)
    return logits_model(model) if logits else model


@pytest.fixture
def levit_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(64, (16, 4))


@pytest.mark.parametrize("kind", LEVITS)
def test_levit_twins_compute_what_transformers_does(kind, levit_inputs):
    """Also after a forward with gradients, which leaves tensors of the autograd graph in LeViT's
    attention-bias caches (a deep copy refuses those)."""
    model = build_levit(kind, logits=False).double()
    x = levit_inputs[1].double()
    model(pixel_values=x)
    with torch.no_grad():
        prepared = assert_logits_form_matches(model, x, model(pixel_values=x).logits)
    assert sum(isinstance(m, ExplicitHFLevitAttention) for m in prepared.modules()) == 4


@pytest.mark.parametrize("kind", LEVITS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_levit_converts(kind, options, levit_inputs):
    """The stem's first convolution reads the image; Q·Kᵀ and attn·V in the three attention layers
    and the subsampling one; Hardswish before each projection is an EC module."""
    direct = "levit.patch_embeddings.embedding_layer_1.convolution"
    snn = assert_converts(build_levit(kind), *levit_inputs, options, direct=direct, products=4 * 2)
    ec = {row.path for row in snn.report().by_role("ec")}
    assert "levit.encoder.stages.0.layers.4.activation" in ec  # the subsampling attention's


@pytest.mark.parametrize("kind", LEVITS)
def test_levit_passes_rates_like_increments(kind, levit_inputs):
    """One link from the stem to the classifiers' Linears (after their BatchNorms)."""
    assert_rates_up_to(build_levit(kind), *levit_inputs, outputs=LEVITS[kind][1])


def test_levit_blocks_and_round_trip(tmp_path, levit_inputs):
    """blocks=k counts the attention layers but the subsampling one, each with the MLP after it;
    the distilled network saved and loaded is rebuilt from its model spec."""
    name = "hf:LevitForImageClassificationWithTeacher"
    spec = model_spec(name, LEVIT, model=create_model(name, LEVIT))
    stage = "levit.encoder.stages"
    analog = {
        1: [
            *(f"{stage}.0.layers.{i}" for i in (2, 3, 4, 5)),
            f"{stage}.1",
            "classifier",
            "classifier_distill",
        ],
        2: [f"{stage}.1.layers.0", f"{stage}.1.layers.1", "classifier", "classifier_distill"],
        3: [],
    }
    path = tmp_path / "net.safetensors"
    assert_blocks_and_round_trip(lambda: build_levit("levit-distilled"), levit_inputs, analog, path, spec)


def _image_folder(root, size: int = 20, width: int | None = None) -> str:
    """Two classes of three random RGB images each, as PNG files, size × size pixels or size high
    and ``width`` wide."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for index in range(3):
            pixels = rng.integers(0, 256, (size, width or size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index}.png")
    return f"imagefolder:{root}"


def test_a_saved_transformers_model_converts_from_the_command_line(tmp_path, inputs):
    """hf:DIR reads the directory's configuration and safetensors weights, and preprocesses image
    folders with its image processor; the ANN and the converted network are the saved model's."""
    model = build("vit", logits=False)
    model.save_pretrained(tmp_path / "vit")
    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.2] * 3)
    processor.save_pretrained(tmp_path / "vit")
    built = create_model(f"hf:{tmp_path / 'vit'}")
    with torch.no_grad():
        assert torch.equal(built(inputs[1]), model(pixel_values=inputs[1]).logits)
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "results"
    args = ["eval", "--model", f"hf:{tmp_path / 'vit'}", "--calib", data, "--data", data]
    assert main([*args, "--time-steps", "3", "--neuron", "burst", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["num_samples"] == 6 and len(results["snn_top1"]) == 3
    # the processor's size, mean and std are the ones used (up to its rounding of the resized image)
    image = Image.open(tmp_path / "images" / "a" / "0.png").convert("RGB").resize((16, 16), Image.BILINEAR)
    expected = (torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255 - 0.2) / 0.5
    loaded = transpike.data.load_dataset(data, model=built)[0][0]
    assert torch.allclose(loaded, expected, atol=0.01)
    # a network saved from it keeps the directory in its spec: eval --snn preprocesses the same way
    rebuilt = build_model(model_spec(f"hf:{tmp_path / 'vit'}", model=built))
    assert torch.equal(transpike.data.load_dataset(data, model=rebuilt)[0][0], loaded)


def test_a_saved_siglip2_classifier_reads_images_through_its_naflex_processor(tmp_path):
    """SigLIP 2's processor cuts each image into a padded sequence of patches at its own aspect
    ratio; transpike gives it the image's central square and puts the patches back together, so
    the logits form computes on those pixels what transformers computes on the processor's output."""
    model = build("siglip2", logits=False)
    model.config.architectures = ["Siglip2ForImageClassification"]
    model.save_pretrained(tmp_path / "siglip2")
    processor = Siglip2ImageProcessor(patch_size=4, max_num_patches=16)
    processor.save_pretrained(tmp_path / "siglip2")
    built = create_model(f"hf:{tmp_path / 'siglip2'}")
    assert built.image_size == 12  # 3×3 position embeddings of 4 px patches
    data = _image_folder(tmp_path / "images", size=24, width=40)
    loaded = transpike.data.load_dataset(data, model=built)[0][0]
    assert loaded.shape == (3, 16, 16)  # the processor's 16 patches, a 4×4 grid
    square = Image.open(tmp_path / "images" / "a" / "0.png").convert("RGB").crop((8, 0, 32, 24))
    inputs = processor(images=square, return_tensors="pt")
    assert inputs["spatial_shapes"].tolist() == [[4, 4]]
    with torch.no_grad():
        assert torch.allclose(built(loaded[None]), model(**inputs).logits, atol=1e-5)
    out = tmp_path / "results"
    args = ["eval", "--model", f"hf:{tmp_path / 'siglip2'}", "--calib", data, "--data", data]
    assert main([*args, "--time-steps", "2", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["num_samples"] == 6


def test_a_transformers_model_from_its_class_converts_from_the_command_line(tmp_path):
    """hf:CLASS builds the classifier from --model-kwargs (its configuration); the network saved
    by convert evaluates from the file alone."""
    kwargs = ["image_size=16", "patch_size=4", "hidden_size=24", "num_hidden_layers=2"]
    kwargs += ["num_attention_heads=3", "intermediate_size=48", "num_labels=10"]
    snn = tmp_path / "net.safetensors"
    build_args = ["--model", "hf:DeiTForImageClassificationWithTeacher", "--model-kwargs", *kwargs]
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.normal(size=(8, 3, 16, 16)).astype(np.float32), y=rng.integers(0, 10, 8))
    assert main(["convert", *build_args, "--calib", f"npz:{data}", "--out", str(snn)]) == 0
    out = tmp_path / "results"
    args = ["eval", "--snn", str(snn), "--data", f"npz:{data}", "--time-steps", "2", "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["num_samples"] == 8


def test_what_is_not_converted_is_refused_by_name(tmp_path):
    config = ViTConfig(**SMALL, intermediate_size=48)
    with pytest.raises(ConversionError, match="backbone without its classifier"):
        transpike.convert(ViTModel(config, add_pooling_layer=False).eval(), torch.randn(4, 3, 16, 16))
    with pytest.raises(ValueError, match="not a supported transformers image classifier"):
        logits_model(ViTModel(config))
    with pytest.raises(
        ValueError,
        match=r"'ViTModel' .*supported: BeitForImageClassification, CLIPFor.*, Data2Vec",
    ):
        create_model("hf:ViTModel")
    with pytest.raises(ValueError, match=r"holds no config\.json"):
        create_model(f"hf:{tmp_path}")
    config.save_pretrained(tmp_path / "pickled")  # no architectures: which class is not known
    with pytest.raises(ValueError, match=r"'\(none\)' \(architectures in"):
        create_model(f"hf:{tmp_path / 'pickled'}")
    config.architectures = ["ViTForImageClassification"]
    config.save_pretrained(tmp_path / "pickled")  # with the pickled weights transformers 4 wrote
    torch.save(ViTForImageClassification(config).state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled weights"):
        create_model(f"hf:{tmp_path / 'pickled'}")
