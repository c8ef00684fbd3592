"""The image codec: image ↔ tokens ↔ ``.wtk`` bytes, with any image size and bounded memory.

A :class:`Codec` bundles a :class:`~wetok.tokenizer.Tokenizer` with its entropy tables: the static
:class:`~wetok.prior.Prior` and, when the model has one, a causal :class:`~wetok.context.ContextModel`
(then ``context`` is the default coding mode; otherwise ``static``).
Images are padded to a multiple of ``f`` (reflect) and cropped back after decoding. Encoding and decoding
run on :mod:`wetok.tiling`'s exact engine: stage by stage with whole-image GroupNorm statistics, in blocks
of a few token rows, so that any image size gives the tokens and pixels of an untiled run; grids larger
than a tile keep the whole-image activations in a temporary file. ``compress``/``decompress`` on bytes
are thin wrappers around the file-object methods' work.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from wetok import format as fmt
from wetok.context import CONTEXT_NAME, ContextModel
from wetok.entropy import ContextCoder, RangeCoder, decode_payload, encode_payload, static_supported
from wetok.errors import ContextMismatchError, ImageTooLargeError, ModelMismatchError, WtkFormatError
from wetok.format import DecoderSetting, Header, resolve_setting
from wetok.image import array_to_tensor, open_image, pad_to_multiple, to_pil, to_rgb_array
from wetok.limits import check_pixels
from wetok.modeldir import load_prior, model_id_of, write_model_id
from wetok.prior import Prior
from wetok.tiling import (
    block_token_rows,
    decode_tiled,
    encode_tiled,
    on_disk,
)
from wetok.tokenizer import Tokenizer

MIN_TILE_TOKENS = 12  # the automatic tile is never smaller
TILE_BUDGET_BYTES = 640 << 20
ImageLike = Image.Image | np.ndarray | str | Path


def auto_tile_tokens(config, budget_bytes: int = TILE_BUDGET_BYTES) -> int:
    """Largest grid side (tokens) coded with its buffers in memory: about ``budget_bytes`` of whole-image
    activations at the rate :func:`estimate_peak_bytes` assumes (beyond that the exact tiled engine,
    :mod:`wetok.tiling`, keeps them in a temporary file). 116 tokens (1,856 px) for the default model."""
    # ~8 float32 maps of the widest full-resolution level, which runs at 1/patch_size of the image side.
    pixels = config.patch_size * math.sqrt(budget_bytes / (8 * 4 * config.ch * config.ch_mult[0]))
    return max(MIN_TILE_TOKENS, int(pixels) // config.downsample)


@dataclass(frozen=True)
class WtkInfo(Header):
    """Header fields plus sizes: ``bytes`` (whole file), ``payload_bytes``, ``bits_per_token`` (payload
    bits per token), ``bpp`` (file bits per pixel), and — when the model is known — ``ideal_bytes``: header
    + checksum + the Shannon code length of the tokens under the model used by the file's mode (the context
    model, with its id, for ``context``; the prior otherwise)."""

    bytes: int = 0
    payload_bytes: int = 0
    bits_per_token: float = 0.0
    bpp: float = 0.0
    ideal_bytes: float | None = None

    @property
    def overhead(self) -> float | None:
        """Coded size over the ideal size, minus one (``0.001`` = 0.1 %)."""
        return None if self.ideal_bytes is None else self.bytes / self.ideal_bytes - 1


class Codec:
    """A tokenizer and its entropy tables (prior, optional context model), with the ``.wtk`` file methods.
    ``tile_tokens=0`` disables tiling."""

    def __init__(
        self,
        model: Tokenizer,
        prior: Prior | None = None,
        name: str = "",
        path: Path | None = None,
        *,
        context: ContextModel | None = None,
        tile_tokens: int | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        cfg = model.config
        prior = prior if prior is not None else Prior.uniform(cfg.groups, cfg.group_bits)
        if (prior.groups, prior.group_bits) != (cfg.groups, cfg.group_bits):
            raise ValueError(
                f"prior is for g={prior.groups}, d'={prior.group_bits}; "
                f"model has g={cfg.groups}, d'={cfg.group_bits}"
            )
        self.model, self.prior, self.path = model.eval(), prior, path
        self.name = name or cfg.name or (path.name if path else "unnamed")
        self.tile_tokens = auto_tile_tokens(cfg) if tile_tokens is None else tile_tokens
        self.pad_mode = pad_mode
        if context is not None:
            context.check_fits(cfg.groups, cfg.group_bits)
        self.context = context
        self._coder = RangeCoder(prior) if static_supported(cfg.group_bits) else None
        self._context_coder = ContextCoder(context) if context is not None else None
        self._model_id: bytes | None = None

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu", **kwargs) -> Codec:
        """Load ``config.json`` + ``model.safetensors``, ``prior.json`` (uniform prior if absent) and
        ``context.json`` (none if absent). A malformed or mismatched table is refused here, not mid-decode."""
        directory = Path(directory)
        model = Tokenizer.from_pretrained(directory, device=device)
        prior = load_prior(directory, model.config.groups, model.config.group_bits)
        context = ContextModel.load(directory) if (directory / CONTEXT_NAME).exists() else None
        if context is not None:
            try:
                context.check_fits(model.config.groups, model.config.group_bits)
            except ValueError as e:
                raise type(e)(f"context model {directory / CONTEXT_NAME}: {e}") from None
        return cls(
            model, prior, name=model.config.name or directory.name, path=directory, context=context, **kwargs
        )

    @property
    def default_mode(self) -> str:
        """``context`` when the model has a context model, else ``static``."""
        return "context" if self.context is not None else "static"

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write a model directory: weights (cast to ``dtype`` if given), config, prior, context model (if
        any) and model id."""
        directory = self.model.save_pretrained(directory, dtype)
        self.prior.save(directory)
        if self.context is not None:
            self.context.save(directory)
        self._model_id = None  # the weights written may differ from these (dtype): id them as written
        write_model_id(directory, model_id_of(self.model.weights_sha256, self.prior))
        return directory

    @property
    def model_id(self) -> bytes:
        """6-byte model id written into every file (computed once: make a new Codec after training)."""
        if self._model_id is None:
            self._model_id = model_id_of(self.model.weights_sha256, self.prior)
        return self._model_id

    @property
    def model_id_hex(self) -> str:
        return self.model_id.hex()

    def __repr__(self) -> str:
        return f"Codec({self.name!r}, {self.model_id_hex})"

    # -- image ↔ tokens ------------------------------------------------------------------------------------
    def encode_tokens(self, image: ImageLike) -> tuple[Tensor, tuple[int, int]]:
        """Image → tokens ``[1, ceil(H/f), ceil(W/f), g]`` (int64, CPU) and the original ``(H, W)``."""
        rgb = open_image(image) if isinstance(image, (str, Path)) else to_rgb_array(image)
        height, width = rgb.shape[:2]
        check_pixels(width, height)
        Header(self.model_id, "raw", height, width, *self._shape()).validate()
        check_memory(self.model.config, height, width, self.tile_tokens, "encode")
        x = pad_to_multiple(array_to_tensor(rgb), self.model.config.downsample, self.pad_mode)
        return encode_tiled(self.model, x, self.tile_tokens), (height, width)

    def decode_tokens(
        self,
        tokens: Tensor,
        size: tuple[int, int],
        seed: int | None = 0,
        noise_scale: float = 1.0,
        realism: float | None = None,
    ) -> Image.Image:
        """Tokens ``[1, h, w, g]`` → RGB image cropped to ``size = (H, W)``; ``realism`` picks the decoder
        (:meth:`wetok.tokenizer.Tokenizer.decoder_for`)."""
        check_pixels(size[1], size[0])
        check_memory(self.model.config, size[0], size[1], self.tile_tokens, "decode")
        rgb = decode_tiled(self.model, tokens, self.tile_tokens, seed, noise_scale, realism=realism)
        return to_pil(np.ascontiguousarray(rgb[: size[0], : size[1]]))

    # -- tokens ↔ bytes ------------------------------------------------------------------------------------
    def pack_tokens(
        self,
        tokens: Tensor | np.ndarray,
        size: tuple[int, int],
        mode: str | None = None,
        setting: DecoderSetting | None = None,
    ) -> bytes:
        """Tokens ``[1, h, w, g]`` of an image of ``size = (H, W)`` → ``.wtk`` bytes (``mode`` ``None``:
        :attr:`default_mode`; a mode that would not be smaller falls back, see :func:`encode_payload`).
        ``setting``: the decoder setting the file asks for (none: a version-1 file, as always written)."""
        t = np.asarray(tokens.cpu() if isinstance(tokens, Tensor) else tokens)
        header = Header(self.model_id, "raw", size[0], size[1], *self._shape()).validate()
        expected = (header.token_height, header.token_width, header.groups)
        if t.shape[-3:] != expected or t.size != header.num_symbols:
            raise ValueError(f"tokens of shape {t.shape} do not fit a {size[1]}x{size[0]} image {expected}")
        if t.min() < 0 or t.max() >= 1 << header.group_bits:
            raise ValueError(f"symbols (token values) must lie in [0, {1 << header.group_bits})")
        grid = t.reshape(expected)
        used, payload = encode_payload(
            grid, header.group_bits, mode or self.default_mode, self._coder, self._context_coder
        )
        realism, seed = (setting.realism, setting.seed) if setting is not None else (None, None)
        return fmt.pack(Header(self.model_id, used, *size, *self._shape(), realism, seed), payload)

    def unpack_tokens(self, data: bytes) -> tuple[Tensor, tuple[int, int]]:
        """``.wtk`` bytes → tokens ``[1, h, w, g]`` (int64) and ``(H, W)``; checks the model id."""
        tokens, header = self.unpack(data)
        return tokens, (header.height, header.width)

    def unpack(self, data: bytes) -> tuple[Tensor, Header]:
        """``.wtk`` bytes → tokens ``[1, h, w, g]`` (int64) and the file's header; checks the model id."""
        header, payload = fmt.unpack(data)
        self.check_header(header)
        check_pixels(header.width, header.height, "the file's image")
        try:
            flat = decode_payload(
                payload,
                header.mode,
                header.num_tokens,
                header.groups,
                header.group_bits,
                self._coder,
                self._context_coder,
                (header.token_height, header.token_width),
            )
        except ContextMismatchError as e:
            e.actual_name = self.name
            raise
        tokens = torch.from_numpy(flat).view(1, header.token_height, header.token_width, header.groups)
        return tokens, header

    def check_header(self, header: Header) -> None:
        """Raise :class:`ModelMismatchError` unless the file was made with this codec."""
        if header.model_id != self.model_id:
            raise ModelMismatchError(header.model_id, self.model_id, self.name)
        if (header.downsample, header.groups, header.group_bits) != self._shape():
            raise WtkFormatError(
                f"malformed .wtk header (f={header.downsample}, g={header.groups}, "
                f"d'={header.group_bits} do not match model {self.name})"
            )

    def _shape(self) -> tuple[int, int, int]:
        cfg = self.model.config
        return cfg.downsample, cfg.groups, cfg.group_bits

    # -- public codec API ----------------------------------------------------------------------------------
    @property
    def default_setting(self) -> DecoderSetting | None:
        """The decoder setting files get unless told otherwise: the model's measured default realism with
        seed 0 when it has a generative decoder, else none: a version-1 file, which decodes with the
        model's own decoder (so a default realism of 0 writes exactly the files of a model without one)."""
        realism = self.model.default_realism
        return DecoderSetting(realism, 0) if realism else None

    def compress(
        self,
        image: ImageLike,
        mode: str | None = None,
        realism: float | None = None,
        seed: int | None = None,
        seed_search: int = 1,
    ) -> bytes:
        """Image (PIL, array or path) → ``.wtk`` bytes in ``mode`` (default :attr:`default_mode`; a mode that
        would not be smaller falls back: context → static → raw).

        ``realism`` and ``seed`` are the decoder setting written into the file (default
        :attr:`default_setting`); ``seed_search = K`` tries seeds ``seed … seed+K-1`` and keeps the one whose
        decode is closest to the image by MS-SSIM (:func:`wetok.seeds.search_seed`)."""
        rgb = open_image(image) if isinstance(image, (str, Path)) else to_rgb_array(image)
        tokens, size = self.encode_tokens(rgb)
        setting = resolve_setting(self.default_setting, realism, seed)
        if setting is not None:
            self.model.decoder_for(setting.realism)  # refuse a realism this model cannot decode, now
        if setting is not None and seed_search > 1 and setting.realism > 0:
            from wetok.seeds import search_seed

            def decode(seed: int) -> np.ndarray:
                return np.asarray(self.decode_tokens(tokens, size, seed=seed, realism=setting.realism))

            setting = search_seed(decode, rgb, setting, seed_search)
        return self.pack_tokens(tokens, size, mode, setting)

    def decompress(
        self,
        data: bytes,
        seed: int | None = None,
        noise_scale: float = 1.0,
        realism: float | None = None,
    ) -> Image.Image:
        """``.wtk`` bytes → RGB image with the file's decoder setting; ``seed`` / ``realism`` override it
        (a file without one decodes with the model's own decoder, noise seed 0)."""
        tokens, header = self.unpack(data)
        realism = header.realism if realism is None else realism
        seed = (header.seed if header.seed is not None else 0) if seed is None else seed
        return self.decode_tokens(
            tokens, (header.height, header.width), seed=seed, noise_scale=noise_scale, realism=realism
        )

    def compress_file(
        self, fin: str | Path | BinaryIO, fout: str | Path | BinaryIO, mode: str | None = None
    ) -> int:
        """Read an image file, write a ``.wtk`` file; returns the bytes written."""
        data = self.compress(open_image(fin), mode=mode)
        _write(fout, data)
        return len(data)

    def decompress_file(
        self,
        fin: str | Path | BinaryIO,
        fout: str | Path | BinaryIO,
        seed: int | None = None,
        noise_scale: float = 1.0,
        format: str | None = None,
        realism: float | None = None,
    ) -> Image.Image:
        """Read a ``.wtk`` file, write the image (format from ``fout``'s suffix, else PNG)."""
        image = self.decompress(_read(fin), seed=seed, noise_scale=noise_scale, realism=realism)
        if isinstance(fout, (str, Path)):
            image.save(fout, format=format)
        else:
            image.save(fout, format=format or "PNG")
        return image

    def info(self, data: bytes | BinaryIO) -> WtkInfo:
        return read_info(data, self)


# -- memory ---------------------------------------------------------------------------------------------
def estimate_peak_bytes(config, height: int, width: int, tile_tokens: int) -> int:
    """Peak memory (bytes, beyond the model) of coding an ``H x W`` image with :mod:`wetok.tiling`:
    whole-image pixel buffers (the float input, uint8 copies: ~24 B/pixel), the engine's whole-image
    activations when they stay in memory (three maps of the first level, at most as wide as its second
    level's channels; on disk when the grid is larger than a ``tile_tokens``² tile), and the working set of
    one block (~8 such maps over the block's pixels)."""
    f, p = config.downsample, config.patch_size
    h, w = -(-height // f), -(-width // f)
    pixels = h * f * w * f
    per_pixel = 4 * config.ch * max(config.ch_mult[:2]) / p**2  # one first-level map, bytes per pixel
    buffers = 0 if on_disk(h, w, tile_tokens) else 3 * per_pixel * pixels
    block = 8 * per_pixel * block_token_rows(w, h) * w * f * f
    return int(24 * pixels + buffers + block)


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``); ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(config, height: int, width: int, tile_tokens: int, action: str) -> None:
    """Fail fast with :class:`ImageTooLargeError` when coding the image would not fit in free memory."""
    need, free = estimate_peak_bytes(config, height, width, tile_tokens), available_memory()
    if free is not None and need > free:
        raise ImageTooLargeError(
            f"a {width}x{height} image needs about {need / 2**30:.1f} GiB to {action}, but only "
            f"{free / 2**30:.1f} GiB of memory is free"
        )


# -- module-level API -------------------------------------------------------------------------------------
def as_codec(model: Codec | Tokenizer) -> Codec:
    """A codec as is; a bare tokenizer wrapped with a uniform prior."""
    if isinstance(model, Codec):
        return model
    if isinstance(model, Tokenizer):
        return Codec(model)
    raise TypeError(f"expected a Codec or a Tokenizer, got {type(model).__name__}")


def compress(image: ImageLike, model: Codec | Tokenizer, mode: str | None = None) -> bytes:
    """Image → ``.wtk`` bytes with ``model`` (a Codec, or a Tokenizer with a uniform prior)."""
    return as_codec(model).compress(image, mode=mode)


def decompress(
    data: bytes,
    model: Codec | Tokenizer,
    seed: int | None = None,
    noise_scale: float = 1.0,
    realism: float | None = None,
) -> Image.Image:
    """``.wtk`` bytes → RGB image with ``model`` (the file's decoder setting unless overridden)."""
    return as_codec(model).decompress(data, seed=seed, noise_scale=noise_scale, realism=realism)


def read_info(data: bytes | BinaryIO, codec: Codec | None = None) -> WtkInfo:
    """Parse and check a ``.wtk`` file; ``ideal_bytes`` is filled in when ``codec`` made the file."""
    data = _read(data) if not isinstance(data, (bytes, bytearray, memoryview)) else bytes(data)
    header, payload = fmt.unpack(data)
    ideal = None
    if codec is not None and header.model_id == codec.model_id:
        tokens, _ = codec.unpack_tokens(data)
        if header.mode == "context" and codec.context is not None:
            bits = codec.context.ideal_bits(tokens[0].numpy()) + 8 * fmt.CONTEXT_ID_BYTES
        else:
            bits = codec.prior.ideal_bits(tokens.numpy())
        ideal = fmt.header_bytes(header) + bits / 8
    return WtkInfo(
        **asdict(header),
        bytes=len(data),
        payload_bytes=len(payload),
        bits_per_token=8 * len(payload) / header.num_tokens,
        bpp=8 * len(data) / (header.height * header.width),
        ideal_bytes=ideal,
    )


def _read(fin: str | Path | BinaryIO) -> bytes:
    if isinstance(fin, (str, Path)):
        with open(fin, "rb") as f:
            return fmt.read_stream(f)
    return fmt.read_stream(fin)


def _write(fout: str | Path | BinaryIO, data: bytes) -> None:
    if isinstance(fout, (str, Path)):
        Path(fout).write_bytes(data)
    else:
        fout.write(data)


__all__ = [
    "Codec",
    "WtkInfo",
    "as_codec",
    "compress",
    "decode_tiled",
    "decompress",
    "encode_tiled",
    "read_info",
]
