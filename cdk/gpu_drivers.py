"""Which SageMaker hosting AMI (and so which NVIDIA driver) a CUDA container image needs.

SageMaker real-time endpoints on ml.g5 and ml.p4d default to NVIDIA driver 470 (CUDA 11.4);
a newer image only starts on a newer driver, chosen per production variant with
`InferenceAmiVersion` (https://docs.aws.amazon.com/sagemaker/latest/dg/inference-gpu-drivers.html).
The table below is botocore's documentation of ProductionVariant.InferenceAmiVersion
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html), which an
infra test re-reads so the two cannot drift. The `-1` AMIs disable the toolkit's CUDA-compat
mounting, so the driver itself must support the image's CUDA version.
"""

from __future__ import annotations

import re

# AMI version -> (NVIDIA driver branch, highest CUDA version the driver supports).
INFERENCE_AMI_CUDA: dict[str, tuple[int, tuple[int, int]]] = {
    "al2-ami-sagemaker-inference-gpu-2": (535, (12, 2)),
    "al2-ami-sagemaker-inference-gpu-2-1": (535, (12, 2)),
    "al2-ami-sagemaker-inference-gpu-3-1": (550, (12, 4)),
    "al2023-ami-sagemaker-inference-gpu-4-1": (580, (13, 0)),
}
# What an endpoint gets without InferenceAmiVersion on ml.g4dn/g5/p3/p4d (the driver table above).
DEFAULT_DRIVER_CUDA = (11, 4)
_CUDA_TAG = re.compile(r"-cu(\d{2})(\d)(?:\b|-|$)")


def image_cuda(image_uri: str) -> tuple[int, int] | None:
    """The CUDA version in a DLC image tag (`...-cu130` -> (13, 0)); None when the tag names none."""
    match = _CUDA_TAG.search(image_uri.rsplit(":", 1)[-1])
    return (int(match.group(1)), int(match.group(2))) if match else None


def ami_supports(ami_version: str | None, cuda: tuple[int, int]) -> bool:
    supported = INFERENCE_AMI_CUDA[ami_version][1] if ami_version else DEFAULT_DRIVER_CUDA
    return cuda <= supported


def inference_ami_for(image_uri: str) -> str | None:
    """The oldest AMI whose driver runs the image natively, or None for an image without a CUDA tag."""
    cuda = image_cuda(image_uri)
    if cuda is None:
        return None
    for ami, (_, supported) in sorted(INFERENCE_AMI_CUDA.items(), key=lambda item: item[1]):
        if cuda <= supported:
            return ami
    raise ValueError(f"No SageMaker inference AMI supports CUDA {cuda[0]}.{cuda[1]} (image {image_uri}).")
