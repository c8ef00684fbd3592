"""The WeTok training loop: both stages, CPU / one GPU / many GPUs (``torchrun``), resumable exactly.

Stage 1 trains encoder + GQ + decoder (L1, perceptual, entropy, commitment, adversarial). Stage 2 starts from
a stage-1 model, widens the decoder's ``conv_in`` with zero-initialised noise channels, freezes encoder and
quantizer and fine-tunes the decoder (L1, perceptual, adversarial, feature matching, diversity) against a
fresh discriminator, or continues a shipped generative decoder and discriminator (:mod:`wetok_train.state`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from wetok.device import resolve_device
from wetok.errors import ConfigError, WetokError
from wetok_train.checkpoint import (
    CHECKPOINT_NAME,
    LEGACY_CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from wetok_train.config import TrainConfig
from wetok_train.data import CropDataset, StepSampler
from wetok_train.discriminator import Critic
from wetok_train.losses import GeneratorLoss, r1_penalty, weighted_total
from wetok_train.monitor import Monitor
from wetok_train.state import State, build_state, checkpoint_in, first_line, load_state, state_dict
from wetok_train.validation import centre_crops, validation_images


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


def learning_rate(cfg: TrainConfig, step: int) -> float:
    o = cfg.optim
    warmup = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps > 0 else 1.0
    return warmup * o.lr * 0.1 ** sum(step >= s for s in o.lr_drops)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int, warmup: int = 10) -> None:
    if warmup > 0:  # early weights are not worth remembering
        decay = min(decay, (1 + step) / (warmup + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def train_step(state: State, loss_fn: GeneratorLoss, cfg: TrainConfig, real: Tensor) -> StepResult:
    """One discriminator step, then one generator step, with the config of this step's phase. During the
    first ``disc.warmup`` steps only the discriminator learns (against the generator as it is)."""
    cfg = cfg.at(state.step)
    device = real.device
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    use_gan = state.disc is not None and state.step >= cfg.disc.start
    train_g = state.step >= cfg.disc.warmup
    lr = _set_learning_rates(state, cfg)
    batch = len(real)
    # The diversity term decodes part of the batch twice, with other noise: appended to the batch, so one
    # forward (through DDP) computes both.
    twice = int(batch * cfg.stage2.diversity_fraction) if cfg.loss.diversity > 0 and train_g else 0
    keep = _kept_groups(state.tokenizer.config.groups, cfg, batch, device)
    with autocast, torch.set_grad_enabled(train_g):
        out = state.model(
            torch.cat([real, real[:twice]]) if twice else real,
            keep_groups=torch.cat([keep, keep[:twice]]) if keep is not None and twice else keep,
        )
    recon = out.recon[:batch]
    critic = None
    if use_gan:
        codes = _painted_codes(state, out.codes[:batch], keep) if cfg.disc.conditioned else None
        critic = Critic(state.disc, cfg.disc.augment, codes, autocast)
    terms: dict[str, Tensor] = {}
    if use_gan:
        terms.update(_discriminator_step(state, cfg, critic, real, recon.detach()))
    if train_g:
        quantizer_losses = out.losses if cfg.stage == 1 else {}
        second = out.recon[batch:] if twice else None
        total, g_terms = loss_fn(recon, real, cfg, quantizer_losses, critic, second)
        state.opt_g.zero_grad(set_to_none=True)
        total.backward()
        state.opt_g.step()
        update_ema(state.ema, state.tokenizer, cfg.optim.ema_decay, state.step, cfg.optim.ema_warmup)
        terms.update(g_terms)
    state.step += 1
    terms["lr"] = torch.tensor(lr)
    return StepResult({k: v.detach() for k, v in terms.items()}, out.indices[:batch].detach())


def _set_learning_rates(state: State, cfg: TrainConfig) -> float:
    lr = learning_rate(cfg, state.step)
    disc_lr = lr * cfg.disc.lr / cfg.optim.lr if cfg.disc.lr > 0 else lr
    for opt, value in ((state.opt_g, lr), (state.opt_d, disc_lr)):
        for group in opt.param_groups if opt is not None else []:
            group["lr"] = value
    return lr


def _painted_codes(state: State, codes: Tensor, keep: Tensor | None) -> Tensor:
    """The codes ``[B, d, h, w]`` the decoder painted from (group dropout's prefix), without a gradient:
    the discriminator judges the decode for them, it does not train the encoder."""
    codes = codes.detach()
    return codes if keep is None else state.tokenizer.keep_prefix(codes, keep)


def _kept_groups(groups: int, cfg: TrainConfig, batch: int, device: torch.device) -> Tensor | None:
    """Per sample, how many leading groups the decoder sees: all, or (with probability
    ``rate.group_dropout``) a random prefix of ``rate.min_groups … groups - 1``; ``None`` without group
    dropout. The config was checked against the model's groups (``min_groups < groups``)."""
    if cfg.rate.group_dropout <= 0:
        return None
    short = torch.rand(batch) < cfg.rate.group_dropout
    prefix = torch.randint(cfg.rate.min_groups, groups, (batch,))
    return torch.where(short, prefix, torch.full((batch,), groups)).to(device)


def _discriminator_step(
    state: State, cfg: TrainConfig, critic: Critic, real: Tensor, fake: Tensor
) -> dict[str, Tensor]:
    """Hinge + LeCam on (augmented) real and fake images, plus lazy R1 every ``disc.r1_every`` steps."""
    terms = state.adv.discriminator_loss(critic.logits(real), critic.logits(fake))
    if cfg.disc.r1_weight > 0 and state.step % cfg.disc.r1_every == 0:
        terms["adv/r1"] = r1_penalty(critic, real)
    terms["adv/total"] = weighted_total(terms, cfg.disc.weights())
    state.opt_d.zero_grad(set_to_none=True)
    terms["adv/total"].backward()
    state.opt_d.step()
    return terms


def make_loader(cfg: TrainConfig, start_step: int, rank: int, world: int) -> DataLoader:
    dataset = CropDataset(
        cfg.data,
        cfg.crop,
        seed=cfg.seed,
        zoom_prob=cfg.zoom_prob,
        zoom_min=cfg.zoom_min,
        split=cfg.training_split,
    )
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
    if cfg.loss.perceptual_net == "none" or cfg.max_over_phases("loss", "perceptual") == 0:
        return None
    from wetok.perceptual import load_perceptual

    return load_perceptual(cfg.loss.perceptual_net).to(device)


def load_validation_crops(cfg: TrainConfig, multiple: int) -> Tensor | None:
    """The crops the run's detail log is measured on (``validation.every`` > 0), ``[N, 3, c, c]``."""
    if not cfg.validation.every:
        return None
    v = cfg.validation
    try:
        return centre_crops(validation_images(cfg.data, v.data), v.crop, multiple, v.images)
    except (ValueError, OSError) as e:
        where = v.data or f"the validation split of {cfg.data}"
        raise ConfigError(f"validation.every: {where}: {e} (see validation.data, validation.crop)") from None


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
    ckpt = load_checkpoint(checkpoint_in(out)) if resume else None
    state = build_state(cfg, device, world)
    cfg = dataclasses.replace(cfg, model=state.tokenizer.config)
    crops = load_validation_crops(cfg, cfg.model.downsample) if rank == 0 else None
    if not resume and rank == 0:  # --force: the user asked to start over
        ckpt_path.unlink(missing_ok=True)
        (out / "validation.jsonl").unlink(missing_ok=True)  # a curve of the old run would mix with this one
    # The loader draws its worker seed from the global RNG: create it before the RNG state is restored.
    batches = iter(make_loader(cfg, ckpt["step"] if ckpt else 0, rank, world))
    if ckpt is not None:
        load_state(state, ckpt)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.resolved.json")
    loss_fn = GeneratorLoss(cfg, load_perceptual_loss(cfg, device))
    monitor = Monitor(cfg, out, enabled=rank == 0, quiet=quiet, crops=crops)
    stop = _StopFlag()
    try:
        with monitor, stop:
            if state.step == 0:
                monitor.validate(0, state.ema)  # where the curve starts
            while state.step < cfg.steps and not stop.requested:
                real = next(batches).to(device, non_blocking=True)
                if device.type == "cuda":
                    real = real.contiguous(memory_format=torch.channels_last)
                result = train_step(state, loss_fn, cfg, real)
                monitor.record(state.step, result.terms, result.indices, len(real) * world)
                _after_step(state, cfg, monitor, real, ckpt_path, rank)
    finally:
        if rank == 0 and state.step > 0:
            save_checkpoint(state_dict(state, cfg), ckpt_path)
    if stop.requested:
        raise TrainingStopped(f"stopped at step {state.step}; checkpoint in {out}, continue with --resume")
    if rank == 0:
        _export(state, cfg, out / "model")
    if dist.is_initialized():
        dist.barrier()
    return out / "model"


def export_checkpoint(path: Path, directory: Path) -> Path:
    """The model folder a run would have exported had it stopped at checkpoint ``path`` (say, a run's
    peak, chosen on the validation split), written to ``directory``; no training step is taken."""
    ckpt = load_checkpoint(path)
    try:
        cfg = TrainConfig.from_dict(ckpt["config"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: holds no training config ({first_line(e)})") from None
    state = build_state(cfg, torch.device("cpu"), 1)
    load_state(state, ckpt)
    _export(state, cfg, directory)
    return directory


def _after_step(
    state: State, cfg: TrainConfig, monitor: Monitor, real: Tensor, ckpt: Path, rank: int
) -> None:
    """Rank 0's periodic work: sample grids, the validation log, checkpoints."""
    if rank != 0:
        return
    if state.step % cfg.sample_every == 0:
        monitor.save_samples(state.step, state.ema, real)
    if cfg.validation.every and state.step % cfg.validation.every == 0:
        monitor.validate(state.step, state.ema)
    if state.step % cfg.checkpoint_every == 0:
        save_checkpoint(state_dict(state, cfg), ckpt)


def _export(state: State, cfg: TrainConfig, directory: Path) -> None:
    """The model folder; stage 2 also ships its discriminator there, so a later run can continue."""
    from wetok_train.export import export_attached_decoder, export_discriminator, export_model

    if cfg.stage2.attach_decoder:
        export_attached_decoder(state.ema, cfg, directory)
    else:
        export_model(state.ema, cfg, directory)
    if cfg.stage == 2 and state.discriminator is not None:
        export_discriminator(state.discriminator, state.adv, cfg, directory)
