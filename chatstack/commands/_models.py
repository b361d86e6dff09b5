"""`chatstack up --model ...`: turn what the user names into the local model server's arguments.

- `hf:ORG/NAME` is fetched with huggingface_hub into its usual cache (progress bars on the terminal),
  then served from there; a second start finds it in the cache and needs no network. With
  `--model-file F` only that file is fetched (a GGUF among many quantizations).
- a directory is a Hugging Face model directory; a `.gguf` file is a llama.cpp model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class ModelChoice:
    backend: str
    args: list[str]  # extra arguments of `python -m sagemaker_containers.server`
    label: str  # what `up` prints
    name: str  # the model's name in GET /v1/models and the usage ledger (CHATSTACK_MODEL_PROFILE)


def _hf_fetch(repo_id: str, filename: str | None) -> Path:
    """The local path of `repo_id` (or of one file in it), from the cache or downloaded."""
    import httpx
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    def fetch(local_only: bool) -> str:
        if filename:
            return hf_hub_download(repo_id, filename, local_files_only=local_only)
        return str(snapshot_download(repo_id, local_files_only=local_only))

    try:
        return Path(fetch(True))  # the cache first: no network, no delay
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    try:
        if constants.HF_HUB_OFFLINE:
            raise OfflineModeIsEnabled("HF_HUB_OFFLINE is set")
        click.echo(f"Downloading {repo_id}{'/' + filename if filename else ''} from the Hugging Face Hub...",
                   err=True)
        return Path(fetch(False))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, httpx.TransportError):
        raise click.ClickException(
            f"Cannot get {repo_id}: it is not in the Hugging Face cache and the Hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE is set)."
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise click.ClickException(
            f"Cannot get {repo_id} from the Hugging Face Hub (HTTP {status}): check the name, and set "
            "HF_TOKEN for a gated model."
        ) from None
    except OSError as exc:
        raise click.ClickException(f"Cannot get {repo_id}: {exc}.") from None


def choose_model(model: str, backend: str | None, model_file: str) -> ModelChoice:
    """The backend and server arguments for `--model` / `--model-file` / `--model-backend`."""
    source = model.strip()
    if source.startswith(HF_PREFIX):
        repo_id = source[len(HF_PREFIX):].strip("/")
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise click.BadParameter("must be hf:ORG/NAME.", param_hint="--model")
        gguf = backend == "llamacpp" or model_file.endswith(".gguf")
        if gguf and not model_file:
            raise click.UsageError("A llama.cpp model from the Hub needs --model-file NAME.gguf.")
        path = _hf_fetch(repo_id, model_file if gguf else None)
        label = f"{'llamacpp' if gguf else 'transformers'} {repo_id}"
        name = repo_id.split("/")[1]
    else:
        path = Path(source or model_file)
        if not path.exists():
            raise click.BadParameter(f"{path} does not exist.", param_hint="--model")
        gguf = (path.is_file() and path.suffix == ".gguf") or backend == "llamacpp"
        label = f"{'llamacpp' if gguf else 'transformers'} {path.name}"
        name = path.stem if gguf else path.name
    if gguf:
        if backend not in (None, "llamacpp"):
            raise click.UsageError(f"A GGUF file is served by --model-backend llamacpp, not {backend}.")
        return ModelChoice("llamacpp", ["--model-file", str(path)], label, name)
    if backend not in (None, "transformers"):
        raise click.UsageError(f"A model directory is served by --model-backend transformers, not {backend}.")
    if not path.is_dir():
        raise click.BadParameter(f"{path} is not a model directory or a .gguf file.", param_hint="--model")
    return ModelChoice("transformers", ["--model-dir", str(path)], label, name)
