"""The model zoo's names, tasks and descriptions as plain data: `latentstore models` lists them without torch.

latentstore.models builds its REGISTRY from this table (a name without a builder,
or a builder without a name, fails tests/test_startup.py).
"""
from __future__ import annotations

#: registry pattern -> (task, description), in the order `resolve` tries them
NAMES = {
    "pspnet50": ("segmentation", "PSPNet-50 (deep-stem dilated ResNet-50, OS 8, PPM, aux head) on pixels"),
    "pspnet50-aa": ("segmentation", "PSPNet-50 with the -aa backbone, on ŷ"),
    "cresnet51": ("classification",
                  "cResNet-51 (Torfason et al.): ResNet-50 minus root and conv2_x, conv4_x ×10, on ŷ"),
    "cresnet39": ("classification", "Deng & Karam style cResNet-39 on ŷ and σ̂"),
    "reshape+resnet50": ("classification", "zero-pad ŷ channels, pixel-shuffle to 3 channels, ResNet-50"),
    "decode+{timm}": ("classification", "the coder's g_s (frozen), then the pixel model"),
    "{timm}-aa": ("classification", "architecture adaptation of a timm CNN (docs/method.md §4)"),
    "{timm}": ("classification", "the timm pixel model (teacher)"),
}

#: timm families with an architecture-adaptation rule (latentstore.models.adapt.AA_RULES)
AA_FAMILIES = ("EfficientNet", "MobileNetV3", "RegNet", "ResNet", "VGG")

#: pattern -> concrete names it stands for in the docs and tests (any timm CNN of an -aa family works)
INSTANCES = {"{timm}-aa": ["resnet18-aa", "resnet50-aa", "vgg11-aa", "vgg11_bn-aa", "efficientnet_b0-aa",
                           "mobilenetv3_large_100-aa"],
             "decode+{timm}": ["decode+resnet18", "decode+resnet50"],
             "{timm}": ["resnet18", "resnet50", "vgg11", "efficientnet_b0"]}

EXAMPLES = ["resnet50", "resnet50-aa", "vgg11-aa", "vgg11_bn-aa", "efficientnet_b0-aa", "cresnet51",
            "cresnet39", "reshape+resnet50", "decode+resnet50", "pspnet50", "pspnet50-aa"]


def name_listing() -> str:
    """Concrete model names, one per line with what each is, then the patterns they come from."""
    rows = []
    for pattern, (task, description) in NAMES.items():
        for name in INSTANCES.get(pattern, [pattern]):
            rows.append(f"  {name:<26} {task}: {description}")
    return ("Model names (for --model, create_model and `latentstore models NAME`):\n" + "\n".join(rows)
            + "\n\nPatterns: " + ", ".join(p for p in NAMES if "{timm}" in p)
            + f", where {{timm}} is any timm CNN of the families {', '.join(AA_FAMILIES)} "
            "(e.g. resnet101-aa, regnety_016-aa).")


def model_names() -> list[str]:
    """The registry's names, with {timm} patterns shown as such, and common instances."""
    patterns = list(NAMES)
    return patterns + [n for n in EXAMPLES if n not in patterns]
