"""Import official WeTok / Open-MAGVIT2 checkpoints into a wetok model directory.

The release (a fork of Open-MAGVIT2) saves a Lightning ``.ckpt`` whose ``state_dict`` holds the raw weights
(``encoder.*``, ``decoder.*``), the losses' weights (``loss.*``: discriminator, LPIPS) and EMA copies named
``model_ema.<parameter name without dots>``. The EMA weights are the deployed ones; a tensor without an EMA
copy (stage-2 checkpoints have none for the frozen encoder) falls back to its raw weight. :mod:`wetok.model`
keeps the release's parameter names, its depth-to-space (DCR) upsampler order and the generative decoder's
``2d``-wide ``conv_in``, so tensors are taken unchanged: no renaming beyond the EMA dots, no permutation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wetok.config import PRESETS, TokenizerConfig
from wetok.errors import CheckpointError
from wetok.fileio import umask
from wetok.image import array_to_tensor, open_image, pad_to_multiple
from wetok.modeldir import CONFIG_NAME, WEIGHTS_NAME, is_model_dir, load_prior, model_id_of, write_model_id
from wetok.prior import PRIOR_NAME, Prior
from wetok.tokenizer import Tokenizer

EMA_PREFIX = "model_ema."
FAMILIES = ("encoder", "decoder")
IMPORT_INFO_NAME = "import.json"


@dataclass(frozen=True)
class ImportReport:
    """What an import took from where. ``from_raw`` lists tensors that had no EMA copy."""

    config: TokenizerConfig
    source: str
    from_ema: int
    from_raw: tuple[str, ...]
    ignored: int
    weights_sha256: str = ""
    model_id: str = ""

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-ready description of the imported model."""
        c = self.config
        with torch.device("meta"):
            params = sum(p.numel() for p in Tokenizer(c).parameters())
        raw_families = sorted({n.split(".", 1)[0] for n in self.from_raw})
        return {
            "name": c.name,
            "preset": c.name if c.name in PRESETS else None,
            "params": params,
            "f": c.downsample,
            "g": c.groups,
            "d_prime": c.group_bits,
            "bits_per_token": c.bits_per_token,
            "bpp": c.bpp,
            "generative": c.generative,
            "weights_sha256": self.weights_sha256,
            "model_id": self.model_id,
            "source": self.source,
            "ema_tensors": self.from_ema,
            "raw_tensors": len(self.from_raw),
            "raw_families": raw_families,
            "ignored_tensors": self.ignored,
        }


# -- reading ---------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a Lightning ``.ckpt`` (its ``state_dict``), a plain state dict, or a ``.safetensors``.

    Pickles load with ``weights_only=True`` only; anything that needs code execution is refused. Zip-format
    checkpoints are memory-mapped, so optimizer states never enter memory.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    obj = _load_safetensors(path) if path.suffix == ".safetensors" else _load_pickle(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not any(_family(k) for k in tensors):
        raise CheckpointError(
            f"{path}: no encoder.* / decoder.* weights; not a WeTok or Open-MAGVIT2 checkpoint"
        )
    return tensors


def _load_pickle(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols only matter to its developers
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ... all mean the same to the user
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        why = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: not a loadable checkpoint, or a pickle that needs code execution{why}; refused"
        ) from e


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({e})") from e


def _family(key: str) -> bool:
    """Whether ``key`` is an encoder/decoder weight, raw or EMA."""
    key = key[len(EMA_PREFIX) :] if key.startswith(EMA_PREFIX) else key
    return key.startswith(FAMILIES)


# -- the release's hyperparameters -----------------------------------------------------------------------
def config_from_release(hp: Mapping[str, Any], name: str = "") -> TokenizerConfig:
    """A :class:`TokenizerConfig` from the release's hyperparameter names.

    Accepts the flat names (``ch``, ``ch_mult``, ``num_res_blocks``, ``z_channels``, ``num_codebooks``,
    ``gan_decoder``/``use_gan_decoder``, optionally ``n_embed``, ``embed_dim``), the nested layout of the
    official YAML (``model.init_args.ddconfig.*`` beside ``model.init_args.*``), or a wetok ``config.json``.
    """
    if {"groups", "group_bits"} <= set(hp):
        return TokenizerConfig.from_dict(dict(hp))
    args = _init_args(hp)
    flat = {**args, **(args.get("ddconfig") or {})}
    missing = [k for k in ("ch", "ch_mult", "num_res_blocks", "z_channels") if flat.get(k) is None]
    if missing:
        raise CheckpointError(f"config lacks {', '.join(missing)} (the release's ddconfig names)")
    for flag in ("token_factorization", "double_z"):
        if flat.get(flag):
            raise CheckpointError(f"config sets {flag}, which these tokenizers do not support")
    d, g = int(flat["z_channels"]), int(flat.get("num_codebooks") or 1)
    bits = _group_bits(d, g, flat.get("n_embed"), flat.get("embed_dim"))
    try:
        return TokenizerConfig(
            ch=int(flat["ch"]),
            ch_mult=tuple(flat["ch_mult"]),
            num_res_blocks=int(flat["num_res_blocks"]),
            groups=g,
            group_bits=bits,
            generative=bool(flat.get("gan_decoder") or flat.get("use_gan_decoder")),
            in_channels=int(flat.get("in_channels", 3)),
            name=name,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid config: {e}") from e


def _init_args(hp: Mapping[str, Any]) -> Mapping[str, Any]:
    """Descend through ``model:`` and ``init_args:``/``params:`` as the official YAML nests them."""
    node: Any = hp
    for key in ("model", "init_args", "params"):
        if isinstance(node, Mapping) and isinstance(node.get(key), Mapping):
            node = node[key]
    return node


def _group_bits(d: int, g: int, n_embed: Any, embed_dim: Any) -> int:
    if g < 1 or d % g:
        raise CheckpointError(f"z_channels={d} is not a multiple of num_codebooks={g}")
    bits = d // g
    if embed_dim is not None and int(embed_dim) != d:
        raise CheckpointError(f"embed_dim={embed_dim} differs from z_channels={d}")
    if n_embed is not None and int(n_embed) != 2**bits:
        got = math.log2(int(n_embed)) if int(n_embed) > 0 else float("nan")
        raise CheckpointError(
            f"n_embed={n_embed} (2^{got:g}) does not match z_channels/num_codebooks = {bits} bits"
        )
    return bits


def load_release_config(path: str | Path) -> TokenizerConfig:
    """A config file in the release's names, as JSON or (with PyYAML installed) the release's YAML."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read config ({e.strerror})") from e
    if path.suffix in (".yaml", ".yml"):
        hp = _parse_yaml(text, path)
    else:
        try:
            hp = json.loads(text)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(hp, Mapping):
        raise CheckpointError(f"{path}: expected a mapping of hyperparameters")
    return config_from_release(hp, name=path.parent.name if path.stem == "config" else path.stem)


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise CheckpointError(
            f"{path}: reading YAML needs PyYAML (pip install pyyaml); or pass the hyperparameters as JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e


def resolve_config(preset: str | None, config_file: str | Path | None) -> TokenizerConfig:
    """Exactly one of a preset name or a config file."""
    if (preset is None) == (config_file is None):
        raise CheckpointError("give exactly one of a preset or a config file")
    if preset is not None:
        if preset not in PRESETS:
            raise CheckpointError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        return PRESETS[preset]
    return load_release_config(config_file)  # type: ignore[arg-type]


# -- mapping ---------------------------------------------------------------------------------------------
def stripped_index(names: Iterable[str]) -> dict[str, str]:
    """``{name with the dots removed: name}``; refuses names that collide once stripped."""
    index: dict[str, str] = {}
    for name in names:
        other = index.setdefault(name.replace(".", ""), name)
        if other != name:
            raise CheckpointError(
                f"EMA names are ambiguous: {other} and {name} both strip to {name.replace('.', '')}"
            )
    return index


def select_weights(
    state: Mapping[str, Tensor], expected: Mapping[str, torch.Size], label: str = "the config"
) -> tuple[dict[str, Tensor], list[str]]:
    """Pick each expected tensor from its EMA copy, else its raw weight; check every shape.

    Returns the weights by dotted name and the names that fell back to raw. The first expected name (in
    model order) that is missing or has the wrong shape raises; so does any encoder/decoder tensor of the
    checkpoint that ``expected`` lacks. Discriminator, LPIPS and other tensors are ignored.
    """
    ema = _ema_keys(state, stripped_index(expected))
    weights: dict[str, Tensor] = {}
    raw: list[str] = []
    for name, shape in expected.items():
        key = ema.get(name, name)
        if key not in state:
            raise CheckpointError(
                f"checkpoint lacks {name} {list(shape)}, which {label} needs "
                "(wrong preset, or not a WeTok / Open-MAGVIT2 checkpoint?)"
            )
        if state[key].shape != shape:
            raise CheckpointError(_mismatch(name, key, state[key].shape, shape, label))
        weights[name] = state[key]
        if key == name:
            raw.append(name)
    _check_unexpected(state, expected, label)
    return weights, raw


def _ema_keys(state: Mapping[str, Tensor], index: Mapping[str, str]) -> dict[str, str]:
    """``{dotted name: model_ema key}`` for every EMA copy of an expected tensor."""
    n = len(EMA_PREFIX)
    return {index[k[n:]]: k for k in state if k.startswith(EMA_PREFIX) and k[n:] in index}


def _mismatch(name: str, key: str, got: torch.Size, want: torch.Size, label: str) -> str:
    source = f" (from {key})" if key != name else ""
    msg = f"shape mismatch at {name}{source}: checkpoint {list(got)}, {label} expects {list(want)}"
    if name == "decoder.conv_in.weight" and len(got) == 4 and got[1] in (2 * want[1], want[1] // 2):
        gd = got[1] > want[1]
        msg += (
            f"; the checkpoint's decoder is {'' if gd else 'not '}generative "
            f"(gan_decoder: {'true' if gd else 'false'})"
        )
    return msg


def _check_unexpected(state: Mapping[str, Tensor], expected: Mapping[str, torch.Size], label: str) -> None:
    known = set(expected) | {EMA_PREFIX + n.replace(".", "") for n in expected}
    for key in state:
        if _family(key) and key not in known:
            raise CheckpointError(f"checkpoint has {key}, which {label} lacks (wrong preset or config?)")


# -- building and writing --------------------------------------------------------------------------------
def convert_state(
    state: Mapping[str, Tensor], config: TokenizerConfig, source: str = ""
) -> tuple[Tokenizer, ImportReport]:
    """A float32 :class:`Tokenizer` holding the checkpoint's deployed weights, and what was taken.

    The model is built on the meta device and takes the checkpoint's tensors (cast to float32, which is
    free when they already are), so no second copy of the weights is made.
    """
    label = f"preset {config.name!r}" if config.name in PRESETS else "the config"
    with torch.device("meta"):
        model = Tokenizer(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    weights, raw = select_weights(state, expected, label)
    model.load_state_dict({k: v.float() for k, v in weights.items()}, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise RuntimeError("the tokenizer holds state no checkpoint provides")  # a wetok bug, not the user's
    used = {k for k in state if _family(k)}
    report = ImportReport(config, source, len(weights) - len(raw), tuple(raw), len(state) - len(used))
    return model.eval(), report


def convert_checkpoint(path: str | Path, config: TokenizerConfig) -> tuple[Tokenizer, ImportReport]:
    """Read ``path`` and build the tokenizer of ``config`` from it; see :func:`convert_state`."""
    return convert_state(read_state_dict(path), config, source=Path(path).name)


def import_checkpoint(
    path: str | Path,
    config: TokenizerConfig,
    out_dir: str | Path,
    *,
    dtype: torch.dtype | None = None,
    force: bool = False,
) -> ImportReport:
    """Write a wetok model directory (weights, config, uniform prior, ``import.json``) from a checkpoint.

    Everything is checked before anything is written; the directory appears at once (written beside it,
    then renamed). An existing non-empty ``out_dir`` is replaced only with ``force`` and only if it is a
    wetok model directory.
    """
    out = Path(out_dir)
    check_output_dir(out, force)
    model, report = convert_checkpoint(path, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, dtype)
        prior = Prior.uniform(config.groups, config.group_bits)
        prior.save(tmp)
        model_id = write_model_id(tmp, model_id_of(model.weights_sha256, prior))
        report = dataclasses.replace(report, weights_sha256=model.weights_sha256, model_id=model_id.hex())
        info = {**report.summary(), "source_sha256": file_sha256(path)}
        (tmp / IMPORT_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse a file, a non-empty directory without ``force``, and with it anything but a model directory."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise CheckpointError(f"{out} exists and is not empty; pass --force to replace it")
        if not is_model_dir(out):
            raise CheckpointError(
                f"{out} is not a wetok model directory; refusing to replace it even with --force"
            )


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; a previous ``out`` is moved aside first and deleted last. The folder gets
    the usual permissions (``mkdtemp`` makes it ``0700``; models are meant to be shared)."""
    os.chmod(tmp, 0o777 & ~umask())
    old = out.with_name(f".{out.name}.old-{tmp.name}") if out.exists() else None
    if old is not None:
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- fitting the entropy prior ---------------------------------------------------------------------------
def iter_token_batches(model: Tokenizer, images: Iterable[Tensor], batch_size: int = 8) -> Iterator[Tensor]:
    """Tokens ``[B, h, w, g]`` of images ``[1, 3, H, W]`` (``H, W`` multiples of ``f``), batched by size."""
    pending: dict[tuple[int, ...], list[Tensor]] = {}
    for image in images:
        group = pending.setdefault(tuple(image.shape), [])
        group.append(image)
        if len(group) == batch_size:
            yield model.encode(torch.cat(pending.pop(tuple(image.shape))))
    for group in pending.values():
        yield model.encode(torch.cat(group))


MIN_PRIOR_TOKENS = 1024  # below this (or one token per symbol of a group) the tables are mostly smoothing


def min_prior_tokens(group_bits: int) -> int:
    """Fewest tokens a prior is fitted on by default: one per symbol of a group, and at least 1024."""
    return max(MIN_PRIOR_TOKENS, 1 << group_bits)


def fit_model_prior(
    model_dir: str | Path,
    images: Iterable[str | Path],
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    *,
    out_dir: str | Path | None = None,
    force: bool = False,
    min_tokens: int | None = None,
    static: bool = True,
    context: bool = True,
) -> dict:
    """Fit entropy tables on image files: the per-group frequency tables (``prior.json``, unless
    ``static=False``) and the causal context model (``context.json``, unless ``context=False``); write them,
    with ``model_dir``'s weights and config, as the model directory ``out_dir``. Returns the bits/token
    report of :func:`wetok.context_fit.fit_entropy_tables` (``tokens`` counted, ``static``, ``context``,
    ``empirical_entropy``).

    A new prior is a new model (a new model id): ``.wtk`` files made with ``model_dir`` need it unchanged, and
    context-coded files need its context model unchanged, so replacing either in place (``out_dir`` omitted
    or the same folder) needs ``force``; adding a context model where there is none does not (the model id
    stays). Fewer tokens than ``min_tokens`` (default :func:`min_prior_tokens`) are refused. Each image is
    padded (bottom/right, reflect) to a multiple of ``f`` as the codec does, then encoded. Nothing is written
    before the tables are fitted; a new directory appears at once (written beside it, then renamed)."""
    from wetok.context import CONTEXT_NAME
    from wetok.context_fit import fit_entropy_tables

    model_dir = Path(model_dir)
    out = model_dir if out_dir is None else Path(out_dir)
    if not is_model_dir(model_dir):
        raise CheckpointError(
            f"{model_dir} is not a wetok model directory (needs {CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    in_place = out.resolve() == model_dir.resolve()
    replaces_context = context and (model_dir / CONTEXT_NAME).exists()
    if in_place and not force and (static or replaces_context):
        what = "its prior.json" if static else "its context.json"
        raise CheckpointError(
            f"fitting makes a new model: files made with {model_dir} could not be decoded any more if "
            f"{what} changed; write the new model with -o NEW_DIR (or --force in place)"
        )
    if not in_place:
        check_output_dir(out, force)
    model = Tokenizer.from_pretrained(model_dir, device=device)
    cfg = model.config
    grids = _image_tokens(model, images, batch_size)
    counted = sum(g.shape[0] * g.shape[1] for g in grids)
    needed = min_prior_tokens(cfg.group_bits) if min_tokens is None else min_tokens
    if counted < needed:
        raise CheckpointError(
            f"only {counted} tokens in the given images; meaningful entropy tables for "
            f"{1 << cfg.group_bits} symbols per group need at least {needed} "
            "(give more or larger images, or --min-tokens)"
        )
    if in_place:
        report = fit_entropy_tables(
            grids, cfg.groups, cfg.group_bits, model_dir, static=static, context=context
        )
        if static:
            write_model_id(model_dir, model_id_of(model.weights_sha256, Prior.load(model_dir)))
        return report
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in (CONFIG_NAME, WEIGHTS_NAME, IMPORT_INFO_NAME, PRIOR_NAME, CONTEXT_NAME):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp / name)
        report = fit_entropy_tables(grids, cfg.groups, cfg.group_bits, tmp, static=static, context=context)
        prior = load_prior(tmp, cfg.groups, cfg.group_bits)
        write_model_id(tmp, model_id_of(model.weights_sha256, prior))
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _image_tokens(model: Tokenizer, images: Iterable[str | Path], batch_size: int) -> list[np.ndarray]:
    """Token grids ``[h, w, g]`` of ``images`` (padded as the codec pads), batched by size."""
    cfg = model.config

    def tensors() -> Iterator[Tensor]:
        for path in images:
            try:
                rgb = open_image(path)
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{path}: cannot read image ({e})") from e
            yield pad_to_multiple(array_to_tensor(rgb), cfg.downsample)

    return [
        grid for batch in iter_token_batches(model, tensors(), batch_size) for grid in batch.cpu().numpy()
    ]
