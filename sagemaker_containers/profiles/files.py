"""Read a user's own profile from a JSON or YAML file, turning every parse or type error into one sentence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sagemaker_containers.profiles.errors import ProfileError
from sagemaker_containers.profiles.model import ModelProfile

BATCH_SIZE_REQUIRED = (
    "max_batch_size must be set explicitly, because the LMI container's default differs by mode "
    "(256 in rolling-batch mode, 32 in async mode)."
)


def _sentence(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "profile"
    if first["type"] == "missing":
        if where == "max_batch_size":
            return BATCH_SIZE_REQUIRED
        return f"The profile is missing the required field '{where}'."
    if first["type"] == "extra_forbidden":
        return f"The profile has an unknown field '{where}'."
    message = str(first["msg"]).rstrip(".")
    message = message[:1].lower() + message[1:]
    return f"Field '{where}' is invalid: {message} (got {first.get('input')!r})."


def profile_from_mapping(data: Any) -> ModelProfile:
    """Build a profile from parsed JSON/YAML; a ProfileError of one sentence if it is not one."""
    if not isinstance(data, dict):
        raise ProfileError(f"A profile file must hold one mapping of fields, not a {type(data).__name__}.")
    if data.get("max_batch_size") is None:
        raise ProfileError(BATCH_SIZE_REQUIRED)
    try:
        return ModelProfile.model_validate(data)
    except ValidationError as error:
        raise ProfileError(_sentence(error)) from None


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ProfileError(
                f"Reading {path.name} needs pyyaml; install it or write the profile as JSON."
            ) from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ProfileError(f"{path.name} is not valid YAML{at}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ProfileError(
            f"{path.name} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
        ) from None


def load_profile_file(path: str | Path) -> ModelProfile:
    """Parse a profile file (JSON, or YAML when pyyaml is installed). Does not run validate_profile."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"Profile file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"Profile file {path} cannot be read ({type(error).__name__}).") from None
    return profile_from_mapping(_parse(path, text))
