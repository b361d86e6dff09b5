"""LMI container image URIs, resolved offline from the sagemaker SDK's image-URI tables.

The ECR registry account differs by region (e.g. 763104351884 in us-east-1, 364406365360 in
ap-northeast-3), so a multi-region deployment asks once per region. The SDK ships the table inside
the package, so this makes no AWS call; it is in the ``cdk`` extra and imported only here, lazily,
because the Lambda bundle must not carry it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagemaker_containers.profiles.errors import ProfileError

if TYPE_CHECKING:
    from sagemaker_containers.profiles.model import ModelProfile

LMI_FRAMEWORK = "djl-lmi"


def lmi_image_uri(region: str, version: str) -> str:
    """The djl-inference (LMI) image for ``version`` in ``region``, from the SDK's offline table."""
    try:
        from sagemaker.core import image_uris
    except ImportError:
        raise ProfileError(
            "Resolving the LMI image URI needs the sagemaker SDK; install the cdk extra "
            "(pip install 'chatstack[cdk]') or set image_uri_override in the profile."
        ) from None
    try:
        uri: str = image_uris.retrieve(framework=LMI_FRAMEWORK, region=region, version=version)
    except ValueError as error:
        # The SDK's message goes on to list every version and region; keep its first sentence only.
        reason = str(error).strip().split(". ")[0].rstrip(".").replace("\n", " ")
        raise ProfileError(
            f"The sagemaker SDK has no LMI image for version '{version}' in region '{region}' ({reason})."
        ) from None
    return uri


def latest_lmi_version() -> str:
    """The version the SDK's table calls ``latest`` (what DEFAULT_CONTAINER_VERSION should track)."""
    uri = lmi_image_uri("us-east-1", "latest")
    tag = uri.rsplit(":", 1)[1]
    return tag.split("-", 1)[0]


def image_uri(profile: ModelProfile, region: str) -> str:
    """The profile's image in ``region``: its override if set, else the pinned LMI version."""
    if profile.image_uri_override:
        return profile.image_uri_override
    if profile.is_local:
        raise ProfileError(f"Profile '{profile.name}' runs on the local backend and has no container image.")
    return lmi_image_uri(region, profile.container_version)
