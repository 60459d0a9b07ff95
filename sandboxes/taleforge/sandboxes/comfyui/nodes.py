"""The node classes the sandbox knows, described the way ComfyUI's /object_info does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_sde", "ddim", "lcm"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform"]
INPUT_FILES = ["example.png"]
MAX_SEED = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class NodeClass:
    name: str
    display_name: str
    category: str
    required: dict[str, Any]
    outputs: tuple[str, ...] = ()
    output_node: bool = False
    optional: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def info(self) -> dict[str, Any]:
        inputs: dict[str, Any] = {"required": self.required}
        if self.optional:
            inputs["optional"] = self.optional
        return {
            "input": inputs,
            "input_order": {key: list(value) for key, value in inputs.items()},
            "output": list(self.outputs),
            "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.outputs),
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": "nodes",
            "category": self.category,
            "output_node": self.output_node,
        }


def _int(default: int, low: int, high: int, step: int = 1) -> list[Any]:
    return ["INT", {"default": default, "min": low, "max": high, "step": step}]


def _float(default: float, low: float, high: float, step: float) -> list[Any]:
    return ["FLOAT", {"default": default, "min": low, "max": high, "step": step}]


def node_classes(
    checkpoints: list[str], input_files: list[str] | None = None
) -> dict[str, NodeClass]:
    # `input_files` is shared, not copied: uploads extend LoadImage's choices at run time.
    inputs = input_files if input_files is not None else list(INPUT_FILES)
    classes = [
        NodeClass(
            "CheckpointLoaderSimple",
            "Load Checkpoint",
            "loaders",
            {"ckpt_name": [list(checkpoints)]},
            ("MODEL", "CLIP", "VAE"),
        ),
        NodeClass(
            "CLIPTextEncode",
            "CLIP Text Encode (Prompt)",
            "conditioning",
            {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]},
            ("CONDITIONING",),
        ),
        NodeClass(
            "EmptyLatentImage",
            "Empty Latent Image",
            "latent",
            {
                "width": _int(512, 16, 16384, 8),
                "height": _int(512, 16, 16384, 8),
                "batch_size": _int(1, 1, 4096),
            },
            ("LATENT",),
        ),
        NodeClass(
            "KSampler",
            "KSampler",
            "sampling",
            {
                "model": ["MODEL"],
                "seed": _int(0, 0, MAX_SEED),
                "steps": _int(20, 1, 10000),
                "cfg": _float(8.0, 0.0, 100.0, 0.1),
                "sampler_name": [SAMPLERS],
                "scheduler": [SCHEDULERS],
                "positive": ["CONDITIONING"],
                "negative": ["CONDITIONING"],
                "latent_image": ["LATENT"],
                "denoise": _float(1.0, 0.0, 1.0, 0.01),
            },
            ("LATENT",),
        ),
        NodeClass(
            "VAEDecode",
            "VAE Decode",
            "latent",
            {"samples": ["LATENT"], "vae": ["VAE"]},
            ("IMAGE",),
        ),
        NodeClass(
            "SaveImage",
            "Save Image",
            "image",
            {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
            (),
            output_node=True,
        ),
        NodeClass(
            "PreviewImage", "Preview Image", "image", {"images": ["IMAGE"]}, (), output_node=True
        ),
        NodeClass(
            "LoadImage",
            "Load Image",
            "image",
            {"image": [inputs, {"image_upload": True}]},
            ("IMAGE", "MASK"),
        ),
    ]
    return {c.name: c for c in classes}
