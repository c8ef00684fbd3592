"""What a run trains and where it starts: the model (fresh, ``init_from``'s, widened, or made generative),
its EMA, the discriminator, the optimisers; saved to and restored from checkpoints.

Stage 2 from a model folder with a generative decoder beside the model continues where that run stopped:
the generator from that decoder, the discriminator from ``discriminator.safetensors`` (written by stage 2's
export) when the folder ships one, else a fresh one. Optimisers start fresh either way (not shipped);
``stage2.continue_shipped = false`` starts over.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from wetok.errors import ConfigError
from wetok.modeldir import is_model_dir
from wetok.tokenizer import Tokenizer, widen_for_noise
from wetok_train.checkpoint import (
    CHECKPOINT_NAME,
    LEGACY_CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from wetok_train.config import TrainConfig, check_min_groups
from wetok_train.discriminator import (
    DISCRIMINATOR_NAME,
    PatchDiscriminator,
    cond_channels,
    load_discriminator,
)
from wetok_train.losses import AdversarialLoss


@dataclass
class State:
    """Everything that a checkpoint holds, besides the config."""

    model: nn.Module  # the Tokenizer, possibly DDP-wrapped
    ema: Tokenizer
    opt_g: torch.optim.Optimizer
    disc: nn.Module | None
    opt_d: torch.optim.Optimizer | None
    adv: AdversarialLoss
    step: int = 0

    @property
    def tokenizer(self) -> Tokenizer:
        return self.model.module if isinstance(self.model, DDP) else self.model  # type: ignore[return-value]

    @property
    def discriminator(self) -> PatchDiscriminator | None:
        return self.disc.module if isinstance(self.disc, DDP) else self.disc  # type: ignore[return-value]


def initial_model(cfg: TrainConfig) -> Tokenizer:
    """Stage 1: a fresh model, or the weights of ``init_from`` (fp16 exports come back as float32),
    widened to ``rate.widen_groups``. Stage 2: the stage-1 model made generative (or its shipped generative
    decoder continued, :func:`generative_model`), encoder and quantizer frozen."""
    if cfg.stage == 1:
        model = load_init_model(cfg.init_from) if cfg.init_from else Tokenizer(cfg.model)
        model = widened(model, cfg.rate.widen_groups)
    else:
        if not cfg.init_from:
            raise ValueError("stage 2 needs init_from: a stage-1 model directory or checkpoint")
        model = generative_model(load_init_model(cfg.init_from), cfg)
        for p in [*model.encoder.parameters(), *model.quantizer.parameters()]:
            p.requires_grad_(False)
    check_min_groups(cfg, model.config.groups)
    return model.train()


def widened(model: Tokenizer, groups: int) -> Tokenizer:
    """``model`` widened to ``groups`` groups (0 or its own: unchanged); a usage error names the option."""
    if not groups or groups == model.config.groups:
        return model
    if model.config.generative:
        raise ConfigError(
            "rate.widen_groups: init_from is a generative model; widen its stage-1 model, then rerun stage 2"
        )
    if groups < model.config.groups:
        raise ConfigError(
            f"rate.widen_groups must be at least the init_from model's {model.config.groups} groups, "
            f"not {groups}"
        )
    return model.with_groups(groups)


def generative_model(base: Tokenizer, cfg: TrainConfig) -> Tokenizer:
    """The generator stage 2 trains: ``base`` itself when generative, else ``base`` with noise inputs,
    whose decoder continues the generative decoder shipped beside it (``stage2.continue_shipped``)."""
    if base.config.generative:
        return base
    model = base.to_generative(level_noise=cfg.stage2.level_noise, head_channels=cfg.stage2.head_channels)
    if not base.has_generative_decoder:
        if shipped_discriminator(cfg) is not None:
            raise CheckpointError(
                f"init_from {cfg.init_from} ships {DISCRIMINATOR_NAME} but no generative decoder to "
                "continue; set stage2.continue_shipped = false to start over"
            )
        return model
    if not cfg.stage2.continue_shipped:
        return model
    if not cfg.stage2.level_noise:
        raise ConfigError("continuing a shipped generative decoder needs stage2.level_noise = true")
    # The shipped decoder's weights; a head it lacks (head_channels) starts as a fresh one that adds nothing.
    fresh = model.decoder.state_dict()
    model.decoder.load_state_dict(widen_for_noise(base.decoder_for(1).state_dict(), fresh, keep_new=fresh))
    return model


def shipped_discriminator(cfg: TrainConfig) -> Path | None:
    """The discriminator file stage 2 continues from: ``init_from``'s, when it is a model folder that has
    one, ``stage2.continue_shipped`` is on and the run has a discriminator."""
    if cfg.stage != 2 or not cfg.stage2.continue_shipped or not cfg.uses_discriminator:
        return None
    folder = model_folder(cfg.init_from)
    path = folder / DISCRIMINATOR_NAME if folder is not None else None
    return path if path is not None and path.is_file() else None


def model_folder(source: str) -> Path | None:
    """The model directory ``init_from`` names (a path or an installed model's name); ``None`` for a
    training checkpoint or run folder."""
    if is_model_dir(source):
        return Path(source)
    if Path(source).exists():
        return None
    from wetok.zoo import installed_model_path

    return installed_model_path(source, "init_from")


def load_init_model(source: str) -> Tokenizer:
    """The model that ``init_from`` names: a model directory, a training checkpoint (its EMA weights), or
    the name of an installed model (``wetok models``). Loading a checkpoint never runs code."""
    folder = model_folder(source)
    if folder is not None:
        return Tokenizer.from_pretrained(folder)
    src = Path(source)
    ckpt = load_checkpoint(checkpoint_in(src) if src.is_dir() else src)
    try:
        base = Tokenizer(TrainConfig.from_dict(ckpt["config"]).model)
        base.load_state_dict(ckpt["ema"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"init_from {src}: does not hold a usable model ({first_line(e)})") from None
    return base


def checkpoint_in(run_dir: Path) -> Path:
    """The checkpoint of a run folder; a legacy pickle one is named so that loading refuses it clearly."""
    path = run_dir / CHECKPOINT_NAME
    legacy = run_dir / LEGACY_CHECKPOINT_NAME
    return legacy if not path.is_file() and legacy.is_file() else path


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def build_state(cfg: TrainConfig, device: torch.device, world: int) -> State:
    torch.manual_seed(cfg.seed)
    model = initial_model(cfg).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(params, lr=cfg.optim.lr, betas=cfg.optim.betas)
    adv = AdversarialLoss(cfg.disc.lecam_decay).to(device)
    disc = opt_d = None
    if cfg.uses_discriminator:
        conditioned = cond_channels(cfg.disc.conditioned, model.config.latent_dim)
        disc = PatchDiscriminator(cfg.disc.channels, conditioned)
        shipped = shipped_discriminator(cfg)
        if shipped is not None:
            load_discriminator(shipped, disc, adv)
        disc = disc.to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas)
    wrapped: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = DDP(model, device_ids=ids)
        disc = DDP(disc, device_ids=ids) if disc is not None else None
    return State(wrapped, ema, opt_g, disc, opt_d, adv)


def state_dict(state: State, cfg: TrainConfig) -> dict:
    disc = state.discriminator
    return {
        "config": cfg.to_dict(),
        "step": state.step,
        "model": state.tokenizer.state_dict(),
        "ema": state.ema.state_dict(),
        "opt_g": state.opt_g.state_dict(),
        "disc": disc.state_dict() if disc is not None else None,
        "opt_d": state.opt_d.state_dict() if state.opt_d is not None else None,
        "adv": state.adv.state_dict(),
        "rng": rng_state(),
    }


def load_state(state: State, ckpt: dict) -> None:
    """Restore ``state`` from a checkpoint dict; :class:`CheckpointError` when it does not fit the run."""
    try:
        _load_state(state, ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"the checkpoint does not fit this run's config ({first_line(e)})") from None


def _load_state(state: State, ckpt: dict) -> None:
    state.tokenizer.load_state_dict(ckpt["model"])
    state.ema.load_state_dict(ckpt["ema"])
    state.opt_g.load_state_dict(ckpt["opt_g"])
    if state.disc is not None:
        state.discriminator.load_state_dict(ckpt["disc"])  # type: ignore[union-attr]
        state.opt_d.load_state_dict(ckpt["opt_d"])  # type: ignore[union-attr]
    state.adv.load_state_dict(ckpt["adv"])
    state.step = ckpt["step"]
    set_rng_state(ckpt["rng"])
