"""The image codec: image ↔ tokens ↔ ``.wtk`` bytes, with any image size and bounded memory.

A :class:`Codec` bundles a :class:`~wetok.tokenizer.Tokenizer` with its entropy tables: the static
:class:`~wetok.prior.Prior` and, when the model has one, a causal :class:`~wetok.context.ContextModel`
(then ``context`` is the default coding mode; otherwise ``static``).
Images are padded to a multiple of ``f`` (reflect) and cropped back after decoding. Encoding and decoding
run on :mod:`wetok.tiling`'s exact engine: stage by stage with whole-image GroupNorm statistics, in blocks
of a few token rows, so that any image size gives the tokens and pixels of an untiled run; grids larger
than a tile keep the whole-image activations in a temporary file. The codec orchestrates: which decoder
paints the tokens and with what noise is :mod:`wetok.setting`'s, how much memory coding takes
:mod:`wetok.memory`'s, the bytes of a file :mod:`wetok.format`'s and what a file holds :mod:`wetok.info`'s.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from wetok import format as fmt
from wetok import rate
from wetok.context import CONTEXT_NAME, ContextModel
from wetok.entropy import ContextCoder, RangeCoder, decode_payload, encode_payload, static_supported
from wetok.errors import ContextMismatchError, ModelMismatchError, WtkFormatError
from wetok.format import Header
from wetok.image import array_to_tensor, open_image, pad_to_multiple, to_pil, to_rgb_array
from wetok.info import WtkFile, read
from wetok.limits import check_pixels
from wetok.memory import auto_tile_tokens, check_memory
from wetok.modeldir import load_prior, model_id_of, write_model_id
from wetok.prior import Prior
from wetok.setting import DecoderSetting, decoder_and_noise, for_decode, for_file, of_file, search_seed
from wetok.tiling import decode_tiled, encode_tiled
from wetok.tokenizer import Tokenizer

ImageLike = Image.Image | np.ndarray | str | Path


class Decompressed(NamedTuple):
    """What :meth:`Codec.decompress` gives: the RGB image and the decoder setting that painted it."""

    image: Image.Image
    setting: DecoderSetting


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
        return self._encode_rgb(open_image(image) if isinstance(image, (str, Path)) else to_rgb_array(image))

    def _encode_rgb(self, rgb: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
        """:meth:`encode_tokens` of a uint8 RGB array converted already (a big image is not copied again)."""
        height, width = rgb.shape[:2]
        check_pixels(width, height)
        Header(self.model_id, "raw", height, width, *self._shape()).validate()
        check_memory(self.model.config, height, width, self.tile_tokens, "encode")
        x = pad_to_multiple(array_to_tensor(rgb), self.model.config.downsample, self.pad_mode)
        return encode_tiled(self.model, x, self.tile_tokens), (height, width)

    def decode_tokens(
        self, tokens: Tensor, size: tuple[int, int], setting: DecoderSetting | None = None
    ) -> Image.Image:
        """Tokens ``[1, h, w, g]`` → RGB image cropped to ``size = (H, W)``, painted as ``setting`` says
        (:mod:`wetok.setting`; default: the model's own decoder, seed 0)."""
        setting = setting or DecoderSetting()
        check_pixels(size[1], size[0])
        check_memory(self.model.config, size[0], size[1], self.tile_tokens, "decode")
        decoder, noise = decoder_and_noise(self.model, setting, tuple(tokens.shape[1:3]))
        rgb = decode_tiled(self.model, tokens, self.tile_tokens, decoder=decoder, noise=noise)
        return to_pil(np.ascontiguousarray(rgb[: size[0], : size[1]]))

    # -- tokens ↔ bytes ------------------------------------------------------------------------------------
    def pack_tokens(
        self,
        tokens: Tensor | np.ndarray,
        size: tuple[int, int],
        mode: str | None = None,
        setting: DecoderSetting | None = None,
        coded: tuple[int, int] | None = None,
    ) -> bytes:
        """Tokens ``[1, h, w, g]`` of an image of ``size = (H, W)`` → ``.wtk`` bytes (``mode`` ``None``:
        :attr:`default_mode`; a mode that would not be smaller falls back, see :func:`encode_payload`).
        ``setting``: the decoder setting the file asks for (none: a version-1 file, as always written).
        ``coded``: the size ``(Hc, Wc)`` the tokens were coded at when the image was resampled
        (:mod:`wetok.rate`; a version-3 file); none or ``size`` itself: the tokens are of ``size``."""
        return self._pack(tokens, size, mode, setting, coded).data

    def _pack(
        self,
        tokens: Tensor | np.ndarray,
        size: tuple[int, int],
        mode: str | None,
        setting: DecoderSetting | None,
        coded: tuple[int, int] | None = None,
    ) -> WtkFile:
        t = np.asarray(tokens.cpu() if isinstance(tokens, Tensor) else tokens)
        hc, wc = (None, None) if coded is None or tuple(coded) == tuple(size) else coded
        header = Header(self.model_id, "raw", *size, *self._shape(), coded_height=hc, coded_width=wc)
        header.validate()
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
        header = Header(
            self.model_id, used, *size, *self._shape(), realism, seed, coded_height=hc, coded_width=wc
        )
        return WtkFile(fmt.pack(header, payload), header, payload)

    def unpack_tokens(self, data: bytes | WtkFile) -> tuple[Tensor, tuple[int, int]]:
        """``.wtk`` bytes (or a file parsed already) → tokens ``[1, h, w, g]`` (int64) and ``(H, W)``;
        checks the model id."""
        file = WtkFile.parse(data)
        header = file.header
        self.check_header(header)
        check_pixels(header.width, header.height, "the file's image")
        check_pixels(header.coded_size[1], header.coded_size[0], "the file's coded image")
        grid = (header.token_height, header.token_width)
        try:
            flat = decode_payload(
                file.payload,
                header.mode,
                header.num_tokens,
                header.groups,
                header.group_bits,
                self._coder,
                self._context_coder,
                grid,
            )
        except ContextMismatchError as e:
            e.actual_name = self.name
            raise
        return torch.from_numpy(flat).view(1, *grid, header.groups), (header.height, header.width)

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
    def compress(
        self,
        image: ImageLike,
        mode: str | None = None,
        realism: float | None = None,
        seed: int | None = None,
        seed_search: int = 1,
        *,
        quality: float | None = None,
        bpp: float | None = None,
        size: int | None = None,
    ) -> bytes:
        """Image (PIL, array or path) → ``.wtk`` bytes in ``mode`` (default :attr:`default_mode`; a mode that
        would not be smaller falls back: context → static → raw).

        ``realism`` and ``seed`` go over the model's default decoder setting (:func:`wetok.setting.for_file`);
        ``seed_search = K`` tries seeds ``seed … seed+K-1`` (fewer near the largest) and keeps the one whose
        decode is closest to the image (:func:`wetok.setting.search_seed`).

        One rate knob at most (:mod:`wetok.rate`): ``quality`` 0..100, ``bpp`` (bits per pixel of the
        image) or ``size`` (bytes) as the largest file not above it; none: the image at its own size, as
        always. :meth:`compress_choice` also says which scale was coded and whether a target was reached;
        here its notes (a capped scale, a target even the smallest scale misses) become warnings."""
        choice = self.compress_choice(
            image, mode, realism, seed, seed_search, quality=quality, bpp=bpp, size=size
        )
        for note in choice.notes:
            warnings.warn(note, stacklevel=2)
        return choice.data

    def compress_choice(
        self,
        image: ImageLike,
        mode: str | None = None,
        realism: float | None = None,
        seed: int | None = None,
        seed_search: int = 1,
        *,
        quality: float | None = None,
        bpp: float | None = None,
        size: int | None = None,
    ) -> rate.Choice:
        """As :meth:`compress`, returning :class:`wetok.rate.Choice`: the file (``.file``, a parsed
        :class:`~wetok.info.WtkFile`; ``.data``, its bytes), the scale coded, whether the target was reached,
        the tries and notes (a capped scale, an unreachable target)."""
        setting = for_file(self.model, realism, seed, seed_search)
        return self.encode_choice(image, mode, setting, seed_search, quality=quality, bpp=bpp, size=size)

    def encode_choice(
        self,
        image: ImageLike,
        mode: str | None = None,
        setting: DecoderSetting | None = None,
        seed_search: int = 1,
        *,
        quality: float | None = None,
        bpp: float | None = None,
        size: int | None = None,
    ) -> rate.Choice:
        """:meth:`compress_choice` with the decoder setting resolved already (:meth:`encode_file`'s)."""
        rgb = open_image(image) if isinstance(image, (str, Path)) else to_rgb_array(image)
        height, width = rgb.shape[:2]
        check_pixels(width, height)

        def code(scale: float | None) -> WtkFile:
            return self.encode_file(rgb, mode, setting, seed_search, scale)

        def score(file: WtkFile) -> float:
            return rate.closeness(np.asarray(self.decompress(file).image), rgb)

        return rate.choose(height, width, code, score, quality=quality, bpp=bpp, size=size)

    def encode_file(
        self,
        image: ImageLike,
        mode: str | None = None,
        setting: DecoderSetting | None = None,
        seed_search: int = 1,
        scale: float | None = None,
    ) -> WtkFile:
        """:meth:`compress` with the decoder setting resolved already (``None``: a version-1 file); gives
        the file parsed, so that nobody parses back what was just written. ``scale``: code the image resized
        by it (:mod:`wetok.rate`; ``None``: at its own size)."""
        rgb = open_image(image) if isinstance(image, (str, Path)) else to_rgb_array(image)
        size = rgb.shape[:2]
        coded = size if scale is None else rate.coded_size(*size, scale)
        tokens, _ = self._encode_rgb(rate.resample(rgb, coded))
        if setting is not None and seed_search > 1:
            realism = setting.realism

            def decode(seed: int) -> np.ndarray:
                return np.asarray(self._paint(tokens, size, coded, DecoderSetting(realism, seed)))

            setting = search_seed(decode, rgb, setting, seed_search)
        return self._pack(tokens, size, mode, setting, coded)

    def decompress(
        self,
        data: bytes | WtkFile,
        seed: int | None = None,
        noise_scale: float = 1.0,
        realism: float | None = None,
    ) -> Decompressed:
        """``.wtk`` bytes (or a file parsed already) → the RGB image and the decoder setting that painted
        it: the file's, with ``seed`` / ``realism`` given over it (:func:`wetok.setting.for_decode`)."""
        file = WtkFile.parse(data)
        tokens, size = self.unpack_tokens(file)
        setting = for_decode(of_file(file.header), realism, seed, noise_scale)
        return Decompressed(self._paint(tokens, size, file.header.coded_size, setting), setting)

    def _paint(
        self, tokens: Tensor, size: tuple[int, int], coded: tuple[int, int], setting: DecoderSetting
    ) -> Image.Image:
        """Tokens of the ``coded`` size → RGB image of ``size``: decoded, then resized back when the image
        was resampled (Lanczos, :func:`wetok.rate.resample`; part of decoding, ``docs/format.md``)."""
        image = self.decode_tokens(tokens, coded, setting)
        if tuple(coded) == tuple(size):
            return image
        return to_pil(rate.resample(np.asarray(image), size))

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
    ) -> Decompressed:
        """Read a ``.wtk`` file, write the image (format from ``fout``'s suffix, else PNG)."""
        out = self.decompress(read(fin), seed=seed, noise_scale=noise_scale, realism=realism)
        if isinstance(fout, (str, Path)):
            out.image.save(fout, format=format)
        else:
            out.image.save(fout, format=format or "PNG")
        return out


# -- module-level API -------------------------------------------------------------------------------------
def as_codec(model: Codec | Tokenizer) -> Codec:
    """A codec as is; a bare tokenizer wrapped with a uniform prior."""
    if isinstance(model, Codec):
        return model
    if isinstance(model, Tokenizer):
        return Codec(model)
    raise TypeError(f"expected a Codec or a Tokenizer, got {type(model).__name__}")


def compress(
    image: ImageLike,
    model: Codec | Tokenizer,
    mode: str | None = None,
    *,
    quality: float | None = None,
    bpp: float | None = None,
    size: int | None = None,
) -> bytes:
    """Image → ``.wtk`` bytes with ``model`` (a Codec, or a Tokenizer with a uniform prior); at most one rate
    knob: ``quality`` 0..100, or the largest file not above ``bpp`` bits per pixel or ``size`` bytes."""
    return as_codec(model).compress(image, mode=mode, quality=quality, bpp=bpp, size=size)


def decompress(
    data: bytes,
    model: Codec | Tokenizer,
    seed: int | None = None,
    noise_scale: float = 1.0,
    realism: float | None = None,
) -> Decompressed:
    """``.wtk`` bytes → RGB image and decoder setting with ``model`` (the file's setting unless
    overridden)."""
    return as_codec(model).decompress(data, seed=seed, noise_scale=noise_scale, realism=realism)


def _write(fout: str | Path | BinaryIO, data: bytes) -> None:
    if isinstance(fout, (str, Path)):
        Path(fout).write_bytes(data)
    else:
        fout.write(data)


__all__ = ["Codec", "Decompressed", "as_codec", "compress", "decompress"]
