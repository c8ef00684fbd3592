"""The WeTok training loop: both stages, CPU / one GPU / many GPUs (``torchrun``), resumable exactly.

Stage 1 trains encoder + GQ + decoder (L1, perceptual, entropy, commitment, adversarial). Stage 2 starts from
a stage-1 model, widens the decoder's ``conv_in`` with zero-initialised noise channels, freezes encoder and
quantizer, re-initialises the discriminator and fine-tunes the decoder (L1, perceptual, adversarial).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from wetok.device import resolve_device
from wetok.errors import WetokError
from wetok.modeldir import is_model_dir
from wetok.tokenizer import Tokenizer, widen_for_noise
from wetok_train.checkpoint import (
    CHECKPOINT_NAME,
    LEGACY_CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from wetok_train.config import TrainConfig
from wetok_train.data import CropDataset, StepSampler
from wetok_train.losses import (
    AdversarialLoss,
    GeneratorLoss,
    PatchDiscriminator,
    diff_augment,
    diversity_loss,
    r1_penalty,
)
from wetok_train.monitor import Monitor


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


class StepResult(NamedTuple):
    """What one training step reports: detached loss terms (``rec/l1``, ``lr`` …) and the step's token
    indices ``[B, h, w, g]`` (for codebook usage)."""

    terms: dict[str, Tensor]
    indices: Tensor


class TrainingStopped(RuntimeError):
    """SIGINT or SIGTERM arrived: the run saved its checkpoint and stopped before ``cfg.steps``."""


class _StopFlag:
    """Turns SIGINT/SIGTERM into a request to stop after the current step (main thread only)."""

    requested = False

    def __enter__(self) -> _StopFlag:
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when started by ``torchrun``; returns ``(rank, world_size)``."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def initial_model(cfg: TrainConfig) -> Tokenizer:
    """Stage 1: a fresh model, or the weights of ``init_from`` (fp16 exports come back as float32).
    Stage 2: the stage-1 model, widened for noise, encoder and quantizer frozen."""
    if cfg.stage == 1:
        if not cfg.init_from:
            return Tokenizer(cfg.model)
        model = load_init_model(cfg.init_from)
        if cfg.widen_groups and cfg.widen_groups != model.config.groups:
            model = model.with_groups(cfg.widen_groups)
        return model.train()
    if not cfg.init_from:
        raise ValueError("stage 2 needs init_from: a stage-1 model directory or checkpoint")
    base = load_init_model(cfg.init_from)
    if base.config.generative:
        model = base
    elif base.has_generative_decoder:  # a shipped stage 2 beside the model: continue it, never start over
        model = base.to_generative(level_noise=True, head_channels=cfg.head_channels)
        fresh = model.decoder.state_dict()
        shipped = base.decoder_for(1).state_dict()
        model.decoder.load_state_dict(widen_for_noise(shipped, fresh, keep_new=fresh))
    else:
        model = base.to_generative(level_noise=cfg.level_noise, head_channels=cfg.head_channels)
    for p in [*model.encoder.parameters(), *model.quantizer.parameters()]:
        p.requires_grad_(False)
    return model.train()


def load_init_model(source: str) -> Tokenizer:
    """The model that ``init_from`` names: a model directory, a training checkpoint (its EMA weights), or
    the name of an installed model (``wetok models``). Loading a checkpoint never runs code."""
    src = Path(source)
    if is_model_dir(src):
        return Tokenizer.from_pretrained(src)
    if src.exists():
        ckpt = load_checkpoint(_checkpoint_in(src) if src.is_dir() else src)
        try:
            base = Tokenizer(TrainConfig.from_dict(ckpt["config"]).model)
            base.load_state_dict(ckpt["ema"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"init_from {src}: does not hold a usable model ({_first_line(e)})"
            ) from None
        return base
    from wetok.zoo import installed_model_path

    return Tokenizer.from_pretrained(installed_model_path(source, "init_from"))


def _checkpoint_in(run_dir: Path) -> Path:
    """The checkpoint of a run folder; a legacy pickle one is named so that loading refuses it clearly."""
    path = run_dir / CHECKPOINT_NAME
    legacy = run_dir / LEGACY_CHECKPOINT_NAME
    return legacy if not path.is_file() and legacy.is_file() else path


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def build_state(cfg: TrainConfig, device: torch.device, world: int) -> State:
    torch.manual_seed(cfg.seed)
    model = initial_model(cfg).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    disc = opt_d = None
    if cfg.adversarial_weight > 0:
        disc = PatchDiscriminator(cfg.disc_channels).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    wrapped: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = DDP(model, device_ids=ids)
        disc = DDP(disc, device_ids=ids) if disc is not None else None
    return State(
        wrapped, ema, opt_g, disc, opt_d, AdversarialLoss(cfg.lecam_weight, cfg.lecam_decay).to(device)
    )


def state_dict(state: State, cfg: TrainConfig) -> dict:
    disc = state.disc.module if isinstance(state.disc, DDP) else state.disc
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
        raise CheckpointError(f"the checkpoint does not fit this run's config ({_first_line(e)})") from None


def _load_state(state: State, ckpt: dict) -> None:
    state.tokenizer.load_state_dict(ckpt["model"])
    state.ema.load_state_dict(ckpt["ema"])
    state.opt_g.load_state_dict(ckpt["opt_g"])
    if state.disc is not None:
        disc = state.disc.module if isinstance(state.disc, DDP) else state.disc
        disc.load_state_dict(ckpt["disc"])
        state.opt_d.load_state_dict(ckpt["opt_d"])  # type: ignore[union-attr]
    state.adv.load_state_dict(ckpt["adv"])
    state.step = ckpt["step"]
    set_rng_state(ckpt["rng"])


def learning_rate(cfg: TrainConfig, step: int) -> float:
    warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    return warmup * cfg.lr * 0.1 ** sum(step >= s for s in cfg.lr_drops)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int, warmup: int = 10) -> None:
    if warmup > 0:  # early weights are not worth remembering
        decay = min(decay, (1 + step) / (warmup + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def train_step(state: State, loss_fn: GeneratorLoss, cfg: TrainConfig, real: Tensor) -> StepResult:
    """One discriminator step, then one generator step, with the config of this step's phase. During the
    first ``disc_warmup`` steps only the discriminator learns (against the generator as it is)."""
    cfg = cfg.at(state.step)
    state.adv.lecam_weight = cfg.lecam_weight
    device = real.device
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    use_gan = state.disc is not None and state.step >= cfg.disc_start
    train_g = state.step >= cfg.disc_warmup
    lr = learning_rate(cfg, state.step)
    disc_lr = lr * cfg.disc_lr / cfg.lr if cfg.disc_lr > 0 else lr
    for opt, value in ((state.opt_g, lr), (state.opt_d, disc_lr)):
        for group in opt.param_groups if opt is not None else []:
            group["lr"] = value
    batch = len(real)
    # The diversity term decodes part of the batch twice, with other noise: appended to the batch, so one
    # forward (through DDP) computes both.
    twice = int(batch * cfg.diversity_fraction) if cfg.diversity_weight > 0 and train_g else 0
    keep = _kept_groups(state.tokenizer.config.groups, cfg, batch, device)
    if keep is not None and twice:
        keep = torch.cat([keep, keep[:twice]])
    with autocast, torch.set_grad_enabled(train_g):
        out = state.model(torch.cat([real, real[:twice]]) if twice else real, keep_groups=keep)
    recon = out.recon[:batch]
    terms: dict[str, Tensor] = {}
    if use_gan:
        terms.update(_discriminator_step(state, cfg, real, recon.detach(), autocast))
    if train_g:
        with autocast:
            fake_logits = state.disc(_augment(recon, cfg)) if use_gan else None
        q_losses = out.losses if cfg.stage == 1 else {}
        total, g_terms = loss_fn(recon, real, q_losses, fake_logits, cfg)
        if twice:
            g_terms["div/loss"] = diversity_loss(recon[:twice], out.recon[batch:], cfg.diversity_target)
            total = total + cfg.diversity_weight * g_terms["div/loss"]
            g_terms["loss/total"] = total
        state.opt_g.zero_grad(set_to_none=True)
        total.backward()
        state.opt_g.step()
        update_ema(state.ema, state.tokenizer, cfg.ema_decay, state.step, cfg.ema_warmup)
        terms.update(g_terms)
    state.step += 1
    terms["lr"] = torch.tensor(lr)
    return StepResult({k: v.detach() for k, v in terms.items()}, out.indices[:batch].detach())


def _kept_groups(groups: int, cfg: TrainConfig, batch: int, device: torch.device) -> Tensor | None:
    """Per sample, how many leading groups the decoder sees: all, or (with probability ``group_dropout``)
    a random prefix of ``min_groups … groups - 1``; ``None`` without group dropout."""
    if cfg.group_dropout <= 0 or groups <= cfg.min_groups:
        return None
    short = torch.rand(batch) < cfg.group_dropout
    prefix = torch.randint(min(cfg.min_groups, groups - 1), groups, (batch,))
    return torch.where(short, prefix, torch.full((batch,), groups)).to(device)


def _augment(images: Tensor, cfg: TrainConfig) -> Tensor:
    return diff_augment(images, cfg.disc_augment) if cfg.disc_augment else images


def _discriminator_step(
    state: State, cfg: TrainConfig, real: Tensor, fake: Tensor, autocast
) -> dict[str, Tensor]:
    """Hinge + LeCam on (augmented) real and fake images, plus lazy R1 every ``r1_every`` steps."""
    with autocast:
        logits_real, logits_fake = state.disc(_augment(real, cfg)), state.disc(_augment(fake, cfg))
    terms = state.adv.discriminator_loss(logits_real, logits_fake)
    total = terms["adv/total"]
    if cfg.r1_weight > 0 and state.step % cfg.r1_every == 0:
        terms["adv/r1"] = r1_penalty(state.disc, real, cfg.disc_augment)
        total = total + cfg.r1_weight * cfg.r1_every * terms["adv/r1"]  # lazy: scaled by its interval
    state.opt_d.zero_grad(set_to_none=True)
    total.backward()
    state.opt_d.step()
    return terms


def make_loader(cfg: TrainConfig, start_step: int, rank: int, world: int) -> DataLoader:
    dataset = CropDataset(cfg.data, cfg.crop, seed=cfg.seed, zoom_prob=cfg.zoom_prob, zoom_min=cfg.zoom_min)
    sampler = StepSampler(cfg.batch_size, start_step, rank, world)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        drop_last=True,
    )


def load_perceptual_loss(cfg: TrainConfig, device: torch.device) -> nn.Module | None:
    if cfg.perceptual == "none" or cfg.max_over_phases("perceptual_weight") == 0:
        return None
    from wetok.perceptual import load_perceptual

    return load_perceptual(cfg.perceptual).to(device)


class RunExistsError(WetokError, ValueError):
    """The run folder already holds a run, and neither resuming nor replacing it was asked for."""


_RUN_FILES = (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, "model", "metrics.jsonl")


def check_run_folder(out: Path, resume: bool, force: bool) -> None:
    """Refuse to start a new run over an existing one (its checkpoint and model would be overwritten)."""
    found = [name for name in _RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / CHECKPOINT_NAME).is_file() and not (out / LEGACY_CHECKPOINT_NAME).is_file():
            raise CheckpointError(f"--resume: no checkpoint in {out} ({CHECKPOINT_NAME})")
    elif found and not force:
        raise RunExistsError(
            f"{out} already holds a run ({', '.join(found)}); continue it with --resume, "
            "start over with --force, or pick a new --out"
        )


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False, force: bool = False) -> Path:
    """Run (or resume) a training run in ``cfg.out``; returns the exported model directory.

    ``cfg`` is not changed: the run works on a copy whose ``model`` is the config of the model it
    actually trains (``init_from``'s, widened for noise in stage 2), and saves that copy. Without
    ``resume`` an existing run in ``cfg.out`` is refused (:class:`RunExistsError`) unless ``force``,
    which starts over: the old checkpoint is deleted before the first step."""
    out = Path(cfg.out)
    if int(os.environ.get("RANK", 0)) == 0:  # other ranks could see files rank 0 has just begun to write
        check_run_folder(out, resume, force)
    device = resolve_device(cfg.device)
    rank, world = init_distributed(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt_path = out / CHECKPOINT_NAME
    ckpt = load_checkpoint(_checkpoint_in(out)) if resume else None
    state = build_state(cfg, device, world)
    cfg = dataclasses.replace(cfg, model=state.tokenizer.config)
    if not resume and rank == 0:
        ckpt_path.unlink(missing_ok=True)  # --force: the user asked to start over
    # The loader draws its worker seed from the global RNG: create it before the RNG state is restored.
    batches = iter(make_loader(cfg, ckpt["step"] if ckpt else 0, rank, world))
    if ckpt is not None:
        load_state(state, ckpt)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.resolved.json")
    loss_fn = GeneratorLoss(cfg, load_perceptual_loss(cfg, device))
    monitor = Monitor(cfg, out, enabled=rank == 0, quiet=quiet)
    stop = _StopFlag()
    try:
        with monitor, stop:
            while state.step < cfg.steps and not stop.requested:
                real = next(batches).to(device, non_blocking=True)
                if device.type == "cuda":
                    real = real.contiguous(memory_format=torch.channels_last)
                result = train_step(state, loss_fn, cfg, real)
                monitor.record(state.step, result.terms, result.indices, len(real) * world)
                if rank == 0 and state.step % cfg.sample_every == 0:
                    monitor.save_samples(state.step, state.ema, real)
                if rank == 0 and state.step % cfg.checkpoint_every == 0:
                    save_checkpoint(state_dict(state, cfg), ckpt_path)
    finally:
        if rank == 0 and state.step > 0:
            save_checkpoint(state_dict(state, cfg), ckpt_path)
    if stop.requested:
        raise TrainingStopped(f"stopped at step {state.step}; checkpoint in {out}, continue with --resume")
    if rank == 0:
        from wetok_train.export import export_attached_decoder, export_model

        if cfg.attach_decoder:
            export_attached_decoder(state.ema, cfg, out / "model")
        else:
            export_model(state.ema, cfg, out / "model")
    if dist.is_initialized():
        dist.barrier()
    return out / "model"
