"""Export the EMA weights as a model directory, with entropy tables fitted on training-data tokens."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from wetok.tokenizer import Tokenizer, save_generative_decoder
from wetok_train.config import EXPORT_DTYPE_NAMES, TrainConfig
from wetok_train.data import CropDataset
from wetok_train.discriminator import DISCRIMINATOR_NAME, PatchDiscriminator, save_discriminator
from wetok_train.losses import AdversarialLoss

EXPORT_DTYPES = {name: getattr(torch, name) for name in EXPORT_DTYPE_NAMES}


@torch.no_grad()
def export_model(ema: Tokenizer, cfg: TrainConfig, directory: Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` (``cfg.export_dtype``), ``prior.json`` and
    ``context.json``.

    The entropy tables (static prior and causal context model) are fitted on tokens of ``cfg.prior_images``
    training crops (not the validation photos), encoded by the *exported* weights (after the dtype round
    trip), so the tables match what ``wetok compress`` will produce. Their bits/token on those tokens
    are printed.
    """
    from wetok.context_fit import fit_entropy_tables
    from wetok.modeldir import model_id_of, write_model_id
    from wetok.prior import Prior

    ema = ema.eval()
    ema.save_pretrained(directory, dtype=EXPORT_DTYPES[cfg.export_dtype])
    model = Tokenizer.from_pretrained(directory, device=ema.device)
    try:  # larger crops than training when the data allows: closer to the images people compress
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            side = max(cfg.crop, cfg.prior_crop)
            data = CropDataset(cfg.data, side, seed=cfg.seed + 1, zoom_prob=0, split=cfg.training_split)
    except ValueError:
        data = CropDataset(cfg.data, cfg.crop, seed=cfg.seed + 1, zoom_prob=0, split=cfg.training_split)
    tokens = [model.encode(data[i].unsqueeze(0)).cpu() for i in range(cfg.prior_images)]
    report = fit_entropy_tables(tokens, model.config.groups, model.config.group_bits, directory)
    write_model_id(directory, model_id_of(model.weights_sha256, Prior.load(directory)))
    print(
        "entropy tables: "
        + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items())
        + " (bits/token)",
        flush=True,
    )
    return directory


@torch.no_grad()
def export_attached_decoder(ema: Tokenizer, cfg: TrainConfig, directory: Path) -> Path:
    """Stage 2 with ``stage2.attach_decoder``: a copy of the ``init_from`` model directory, every file as
    it was (weights, entropy tables, model id: tokens and files do not change), plus the trained decoder as
    ``decoder_generative.safetensors`` for ``realism > 0``."""
    import shutil

    from wetok.modeldir import GENERATIVE_DECODER_NAME
    from wetok_train.state import model_folder

    source = model_folder(cfg.init_from)
    if source is None:
        raise ValueError(f"stage2.attach_decoder: init_from {cfg.init_from} is not a model folder")
    if directory.exists():
        shutil.rmtree(directory)
    ignore = shutil.ignore_patterns(GENERATIVE_DECODER_NAME, DISCRIMINATOR_NAME)  # this run writes its own
    shutil.copytree(source, directory, ignore=ignore)
    save_generative_decoder(
        ema.decoder.eval(), directory / GENERATIVE_DECODER_NAME, EXPORT_DTYPES[cfg.export_dtype]
    )
    print(f"generative decoder attached to a copy of {source}: {directory}", flush=True)
    return directory


def export_discriminator(
    disc: PatchDiscriminator, adv: AdversarialLoss, cfg: TrainConfig, directory: Path
) -> Path:
    """``discriminator.safetensors`` beside the exported model (``cfg.export_dtype``), so that stage 2
    from this folder continues against the discriminator this run trained (:mod:`wetok_train.state`)."""
    return save_discriminator(disc, adv, directory / DISCRIMINATOR_NAME, EXPORT_DTYPES[cfg.export_dtype])
