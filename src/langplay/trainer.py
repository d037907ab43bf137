"""The one training loop, for every algorithm.

    for step in steps:
        rows   = the step's prompts (this process's share)
        exp    = algorithm.collect(rows, seeds)             # sample, score, advantages
        for mb in micro_batches(exp.batch):                 # memory, not maths: losses use whole-step counts
            backward(algorithm.loss(mb, exp.counts))
        all-reduce gradients; skip the step if non-finite; clip; AdamW; schedule
        log metrics; checkpoint every K steps (and on Ctrl-C); evaluate every E steps

Processes are launched by `accelerate launch`; each holds whole prompt groups, and gradients are summed across
processes explicitly (no DDP wrapper: the log-prob code calls the decoder and output layer directly, chunked).
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator

from langplay.algorithms import Algorithm, make_algorithm
from langplay.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from langplay.config import Config, dump_config
from langplay.data import PromptStream, load_dataset_for
from langplay.errors import LangplayError
from langplay.policy import Policy, frozen_copy, micro_batches
from langplay.sampling import make_sampler
from langplay.sampling.hf import key_of


def make_scheduler(optimizer, config) -> torch.optim.lr_scheduler.LambdaLR:
    train = config.train

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / (train.warmup_steps + 1)
        if train.schedule == "cosine":
            progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def training_data(config: Config):
    if config.algorithm == "lsp":  # no data: each "row" is a slot for one challenger query
        return [{}]
    return load_dataset_for(config.data, required_columns(config))


def required_columns(config: Config) -> list[str]:
    if config.algorithm == "lsp":
        return []
    if config.algorithm in ("sft", "irl"):  # demonstrations
        data = config.data
        return [data.messages_column] if data.messages_column else [data.prompt_column, data.completion_column]
    columns = [config.data.prompt_column]
    rewards = config.jepo.rewards if config.algorithm == "jepo" else config.grpo.rewards
    columns += [r.answer_column for r in rewards if r.kind in ("exact_match", "numeric_match", "math")]
    if config.algorithm == "jepo":
        columns.append(config.jepo.answer_column)
    return list(dict.fromkeys(columns))


class Trackers:
    """metrics.jsonl always; tensorboard / wandb / trackio when asked for."""

    def __init__(self, run_dir: Path, names: list[str], config: Config, enabled: bool):
        self.enabled, self.path, self.backends = enabled, run_dir / "metrics.jsonl", []
        if not enabled:
            return
        for name in names:
            try:
                if name == "tensorboard":
                    from torch.utils.tensorboard import SummaryWriter

                    writer = SummaryWriter(str(run_dir / "tensorboard"))
                    self.backends.append(lambda m, s, w=writer: [w.add_scalar(k, v, s) for k, v in m.items()])
                elif name in ("wandb", "trackio"):
                    module = __import__(name)
                    module.init(project="langplay", config=config.model_dump(mode="json"))
                    self.backends.append(lambda m, s, mod=module: mod.log(m, step=s))
            except ImportError:
                raise LangplayError(f"tracker {name!r} is not installed: pip install {name}") from None

    def truncate_after(self, step: int) -> None:
        """On resume, forget metrics logged after the checkpoint (they will be logged again)."""
        if self.enabled and self.path.exists():
            lines = [l for l in self.path.read_text().splitlines() if l and json.loads(l)["step"] <= step]
            self.path.write_text("".join(l + "\n" for l in lines))

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for backend in self.backends:
            backend(metrics, step)


class Trainer:
    def __init__(
        self,
        config: Config,
        policy: Policy | None = None,
        dataset=None,
        rewards: list[Callable] | None = None,
        evaluate: Callable[[Policy, int], dict] | None = None,
        accelerator: Accelerator | None = None,
    ):
        self.config = config
        self.accelerator = accelerator or Accelerator(cpu=config.model.device == "cpu")
        acc = self.accelerator
        if config.train.prompts_per_step % acc.num_processes:
            raise LangplayError(
                f"train.prompts_per_step={config.train.prompts_per_step} does not split over "
                f"{acc.num_processes} processes: use a multiple of {acc.num_processes}"
            )
        self.seed_everything(config.train.seed)
        self.dataset = dataset if dataset is not None else training_data(config)
        missing = [c for c in required_columns(config) if c not in getattr(self.dataset, "column_names", [])]
        if missing:
            raise LangplayError(f"dataset has no column {missing[0]!r}; it has {', '.join(self.dataset.column_names)}")
        self.policy = policy or Policy.from_config(config.model, with_reference=False, device=acc.device)
        self.sampler = make_sampler(config.sampling, self.policy)
        self.algorithm: Algorithm = make_algorithm(config, self.policy, self.sampler, acc, rewards)
        if self.algorithm.needs_reference and self.policy.reference is None and not self.policy.uses_lora:
            self.policy.reference = frozen_copy(self.policy.model)
        self.evaluate = evaluate
        params = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=config.train.lr, betas=config.train.adam_betas, weight_decay=config.train.weight_decay
        )
        self.scheduler = make_scheduler(self.optimizer, config)
        self.stream = PromptStream(self.dataset, config.train.seed, config.data.shuffle)
        self.run_dir = Path(config.run.output_dir.format(algorithm=config.algorithm))
        self.step = 0
        self.bad_steps = 0
        self.trackers: Trackers | None = None

    @staticmethod
    def seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # -- state ---------------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        path = None
        if self.is_main:
            extra = {"position": self.stream.position, "bad_steps": self.bad_steps}
            path = save_checkpoint(
                self.run_dir / "checkpoints", self.step, self.policy, self.optimizer, self.scheduler, extra,
                keep=self.config.run.keep_checkpoints,
            )
        self.accelerator.wait_for_everyone()
        return path

    def resume(self, path: Path | None = None) -> None:
        path = path or latest_checkpoint(self.run_dir / "checkpoints")
        if path is None:
            raise LangplayError(f"nothing to resume: no checkpoint in {self.run_dir / 'checkpoints'}")
        state = load_checkpoint(path, self.policy, self.optimizer, self.scheduler)
        self.step, self.stream.position, self.bad_steps = state["step"], state["position"], state["bad_steps"]

    # -- one step ------------------------------------------------------------------------------------------
    def step_rows(self) -> tuple[list[dict], list[int]]:
        """This process's share of the step's prompts, and one sampling seed per prompt.

        A prompt's seed depends on (run seed, step, its slot in the global batch) only, so one process and
        several sample the same completions.
        """
        acc, total = self.accelerator, self.config.train.prompts_per_step
        rows = self.stream.take(total)
        share = total // acc.num_processes
        mine = range(acc.process_index * share, (acc.process_index + 1) * share)
        return [rows[i] for i in mine], [key_of(self.config.train.seed, self.step, i) for i in mine]

    def all_reduce_gradients(self, params: list[torch.Tensor]) -> None:
        if self.accelerator.num_processes == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)  # losses are normalised by global counts: the sum is the gradient
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def train_step(self) -> dict:
        cfg, acc = self.config, self.accelerator
        started = time.perf_counter()
        rows, seeds = self.step_rows()
        experience = self.algorithm.collect(rows, seeds)
        sampled = time.perf_counter()
        model = self.policy.model
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_total, parts = 0.0, {}
        for micro in micro_batches(experience.batch, cfg.train.micro_batch_size):
            loss, metrics = self.algorithm.loss(micro, experience.counts)
            loss.backward()
            loss_total += loss.item()
            for key, value in metrics.items():  # additive contributions, normalised like the loss
                parts[key] = parts.get(key, 0.0) + value
        backward_done = time.perf_counter()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.all_reduce_gradients(params)
        loss_total = sum_over_processes(acc, loss_total)
        parts = {key: sum_over_processes(acc, value) for key, value in parts.items()}
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm or float("inf"))
        finite = math.isfinite(loss_total) and bool(torch.isfinite(grad_norm))
        if finite:
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            warnings.warn(f"step {self.step + 1}: non-finite loss or gradient, step skipped ({self.bad_steps} in a row)")
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped step still moves the schedule on
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.sampler.sync_weights()
        self.step += 1
        metrics = {
            "loss": loss_total,
            **parts,
            **experience.metrics,
            "grad_norm": float(grad_norm),
            "lr": self.scheduler.get_last_lr()[0],
            "skipped": float(not finite),
            "time/collect": sampled - started,
            "time/loss_backward": backward_done - sampled,
            "time/step": time.perf_counter() - started,
        }
        if self.is_main and experience.samples and self.trackers and self.trackers.enabled:
            with (self.run_dir / "samples.jsonl").open("a") as f:
                for sample in experience.samples:
                    f.write(json.dumps({"step": self.step, **sample}) + "\n")
        if self.bad_steps >= cfg.train.max_bad_steps:
            raise LangplayError(
                f"{self.bad_steps} steps in a row had a non-finite loss or gradient (last at step {self.step}): "
                "check the rewards for NaN/inf and lower train.lr"
            )
        return metrics

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self, resume: bool | str | Path = False) -> list[dict]:
        cfg = self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
        self.trackers = Trackers(self.run_dir, cfg.run.trackers, cfg, enabled=self.is_main)
        if resume:
            self.resume(None if resume is True else Path(resume))
            self.trackers.truncate_after(self.step)
        history: list[dict] = []
        progress = Progress(cfg.train.steps, self.step, enabled=self.is_main and cfg.run.progress)
        try:
            with progress:
                while self.step < cfg.train.steps:
                    snapshot = (self.stream.position, torch.get_rng_state(), random.getstate(), np.random.get_state())
                    metrics = self.train_step()
                    snapshot = None
                    if self.evaluate and cfg.run.eval_every and self.step % cfg.run.eval_every == 0:
                        metrics.update({f"eval/{k}": v for k, v in self.evaluate(self.policy, self.step).items()})
                    history.append({"step": self.step, **metrics})
                    if self.step % cfg.run.log_every == 0 or self.step == cfg.train.steps:
                        self.trackers.log(metrics, self.step)
                    progress.update(self.step, metrics)
                    if cfg.run.save_every and self.step % cfg.run.save_every == 0:
                        self.save()
        except KeyboardInterrupt:
            if snapshot is not None:  # interrupted inside a step: save the state from before it
                self.stream.position = snapshot[0]
                torch.set_rng_state(snapshot[1])
                random.setstate(snapshot[2])
                np.random.set_state(snapshot[3])
            path = self.save()
            if self.is_main:
                print(f"\ninterrupted: checkpoint of step {self.step} written to {path}")
            raise
        if not (cfg.run.save_every and self.step % cfg.run.save_every == 0):
            self.save()
        if self.is_main:
            self.policy.save(self.run_dir / "final")
        return history


def sum_over_processes(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    torch.distributed.all_reduce(tensor)
    return float(tensor)


class Progress:
    """A rich progress bar with the key numbers of the last step."""

    KEYS = ("loss", "reward", "nll", "kl", "eval/reward", "time/step")

    def __init__(self, total: int, done: int, enabled: bool):
        self.enabled = enabled
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           TextColumn("{task.fields[info]}"), transient=False)
            self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def __enter__(self):
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()

    def update(self, step: int, metrics: dict) -> None:
        if self.enabled:
            info = "  ".join(f"{k.split('/')[-1]} {metrics[k]:.4g}" for k in self.KEYS if k in metrics)
            self.bar.update(self.task, completed=step, info=info)
