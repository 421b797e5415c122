"""The run driver: every training run, whatever its method and its data, goes from start to end here.

    run_training(parse, open_loop, distributed)
        the configuration, printed → device (and torchrun's processes), threads → start, refuse,
        skip a finished run, or resume (utils/run/lifecycle.py) → seed → the loop (`open_loop` reads
        the data and builds the task and the method's loop) → restore → the run folder → train →
        test the last model, final checkpoint → result.json, logs/results.txt, the final line;
        and every way it can end, as one line and an exit code (utils/errors.py).

`Run` is the driver's side of a run as a loop sees it (utils/run/loop.py): the log, metrics.jsonl,
weight files, checkpoints every --checkpoint_every seconds, and stop requests. Only the main
process writes files and logs; under torchrun the collective steps run on every process.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from utils.errors import CheckpointError, StopRequested, exit_code_of
from utils.run.atomic import atomic_torch_save
from utils.run.checkpoint import (CHECKPOINT_FORMAT, capture_rng_states, checkpoint_of, require_format,
                                  restore_rng_states)
from utils.run.config import RunConfig, config_to_dict, format_config
from utils.run.distributed import (STOP_POLL_EVERY, DistContext, any_rank, cleanup, init_distributed,
                                   single_process)
from utils.run.files import RunFiles, append_results_log, claim_weight_files
from utils.run.lifecycle import (Checkpointer, RunStart, lock_run_folder, open_run_folder, release_refused,
                                 start_run)
from utils.run.lock import RunLock
from utils.run.loop import Loop
from utils.run.preemption import StopFlag
from utils.run.progress import progress_enabled
from utils.run.provenance import describe_device, git_state, versions
from utils.run.threads import ThreadGovernor



def run_training(parse: Callable[[], RunConfig], open_loop: Callable[["Run"], Loop | None],
                 distributed: bool = False) -> int:
    """Parse the flags, run the loop `open_loop` builds, and return the exit code (never raises).

    `distributed`: join torchrun's process group when launched by it (Clothing.py).
    """
    contexts: list[DistContext] = []

    def body() -> int:
        config = parse()
        context = init_distributed(config.device) if distributed else single_process(config.device)
        contexts.append(context)
        return drive(config, context, open_loop)

    try:
        return exit_code_of(body, is_main=lambda: not contexts or contexts[0].is_main)
    finally:
        if distributed:
            cleanup()


def drive(config: RunConfig, context: DistContext, open_loop: Callable[["Run"], Loop | None]) -> int:
    say = print if context.is_main else (lambda *args, **kwargs: None)
    say(f"configuration:\n{format_config(config)}", flush=True)
    governor = ThreadGovernor(config.num_threads)
    files = RunFiles(config.run_dir)
    lock = lock_run_folder(files) if config.trains and context.is_main else None
    try:
        return drive_in_folder(config, context, open_loop, files, governor, lock, say)
    finally:
        if lock is not None:
            lock.release()


def drive_in_folder(config: RunConfig, context: DistContext, open_loop: Callable[["Run"], Loop | None],
                    files: RunFiles, governor: ThreadGovernor, lock: RunLock | None, say: Callable) -> int:
    try:  # until the run folder is opened, a refused or stopped run leaves nothing behind
        start = start_run(config, files, owner=context.is_main) if config.trains else RunStart()
        if start.finished:
            say(f"{files.result} exists: this run has finished (delete the folder to run it again)")
            if lock is not None:
                release_refused(lock)
            return 0
        torch.manual_seed(config.seed)  # network initialisation, as the official code seeds it
        run = Run(config, files, context, StopFlag().install(), governor)
        run.moved = start.moved_from(files) is not None
        loop = open_loop(run)
        if loop is None:  # nothing to train (main.py --noise_only)
            return 0
        run.inputs = loop.task.fingerprint()
        if start.checkpoint is not None:
            run.restore(loop, start.checkpoint, start.checkpoint_path)  # other data or a damaged state: refused
        if context.is_main:
            claim_weight_files(loop.task.weights_owner_file, files.run_dir, start.moved_from(files))
    except BaseException:
        if lock is not None:
            release_refused(lock)
        raise
    say(f"device: {describe_device(context.device)}; threads: {governor.describe()}; run folder: "
        f"{files.run_dir}", flush=True)
    if context.is_main:
        lock.sign()
        open_run_folder(config, files, start)
    del start  # its checkpoint (weights, optimiser, arrays) is in the loop now: not held twice while training
    try:
        run.train(loop)
    finally:
        run.close()
    result = run.result(loop)
    if context.is_main:
        files.write_result(result)
        append_results_log(loop.title, repr(config), config.seed, result["test_acc_official"])
    last = "n/a" if loop.state.test_acc_last is None else f"{loop.state.test_acc_last:.2f}"
    selected = ("best test accuracy over the epochs" if result["best_val_acc"] is None  # no validation set
                else f"best validation accuracy {result['best_val_acc']:.2f}, test accuracy")
    say(f"{loop.title}: {selected} {result['test_acc']:.2f} (last epoch {last}; {result['wall_time_s']:.0f}s); "
        f"results in {files.result}", flush=True)
    return 0


class Run:
    """The driver's side of one run, as its loop sees it."""

    def __init__(self, config: RunConfig, files: RunFiles, context: DistContext, stop_flag: StopFlag,
                 governor: ThreadGovernor) -> None:
        self.config = config
        self.files = files
        self.context = context
        self.stop_flag = stop_flag
        self.governor = governor
        self.show_progress = context.is_main and progress_enabled(config.no_progress)
        self.checkpointer = Checkpointer(files.checkpoint, config.checkpoint_every, enabled=context.is_main)
        self.scalar_log = None
        if config.tensorboard and context.is_main:
            from utils.run.tensorboard import ScalarLog  # lazy: pulls in tensorboard
            self.scalar_log = ScalarLog(files.run_dir / "tensorboard")
        self.config_dict = config_to_dict(config)
        self.elapsed_before = 0.0
        self.started = time.time()
        self.code = git_state()  # the code this process runs: read now, not when the run ends
        self.polls = 0
        self.inputs = ""  # the fingerprint of what the run trains on (task.fingerprint())
        self.moved = False  # continues in this folder a run of another one (--resume PATH)

    @property
    def device(self) -> torch.device:
        return self.context.device

    @property
    def is_main(self) -> bool:
        return self.context.is_main

    def log(self, line: str) -> None:
        if self.is_main:
            print(line, flush=True)

    def elapsed_s(self) -> float:
        return self.elapsed_before + time.time() - self.started

    # ------------------------------------------------------------------ stop requests
    def should_stop(self) -> bool:
        """Asked after every training batch (the engine's `should_stop`): adjusts the threads, and
        says whether to stop (under torchrun: every STOP_POLL_EVERY batches, all ranks together)."""
        self.governor.poll()
        self.polls += 1
        if not self.context.distributed:
            return self.stop_flag()
        return self.polls % STOP_POLL_EVERY == 0 and self.stop_requested()

    def stop_requested(self) -> bool:
        """The same answer on every rank (collective under torchrun)."""
        return any_rank(self.stop_flag(), self.device)

    def stop_if_requested(self) -> None:
        if self.stop_requested():
            raise StopRequested("stopped between epochs", self.stop_flag.signal_name)

    # ------------------------------------------------------------------ what loops record
    def record_epoch(self, loop: Loop, record: dict[str, Any], after_checkpoint: Callable[[], None] | None) -> None:
        if self.is_main:
            self.files.append_metrics(record)
            if self.scalar_log is not None:
                self.scalar_log.log_epoch(record, loop.state.epochs_run)
        val = "" if record["val_acc"] is None else f" val {record['val_acc']:.2f}"  # None: no validation set
        test = "" if record["test_acc"] is None else f" test {record['test_acc']:.2f}"
        self.log(f"{record['phase']:<6} outer {record['outer']} round {record['inner']} epoch "
                 f"{record['epoch']:>3}: loss {record['train_loss']:.4f} train {record['train_acc']:.2f}"
                 f"{val}{test} lr {record['lr']:g} ({record['seconds']:.1f}s)")
        self.checkpoint_soon(loop, after_checkpoint)
        self.stop_if_requested()

    def record_round(self, loop: Loop, record: dict[str, Any], line: str) -> None:
        if self.is_main:
            self.files.append_metrics(record)
            if self.scalar_log is not None:  # on the epoch axis: after the epochs that led to it
                self.scalar_log.log_round(record, loop.state.epochs_run)
        self.log(line)

    def write_weights(self, which: str, weights: dict[str, torch.Tensor], official: Path | None) -> None:
        """RUN_DIR/{which}.pt and, when given, its official copy (main process only)."""
        if self.is_main:
            atomic_torch_save(self.files.weights(which), weights)
            if official is not None:
                atomic_torch_save(official, weights)

    def save_round(self, outer: int, inner: int, arrays: Callable[[], dict[str, np.ndarray]]) -> None:
        if self.config.save_rounds and self.is_main:
            self.files.write_round(outer, inner, arrays())

    def last_checkpoint(self) -> str:
        return str(self.files.checkpoint) if self.files.checkpoint.exists() else "none yet"

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, loop: Loop) -> dict[str, Any]:
        """The whole resumable state (collective: every rank's generator states are gathered)."""
        header = {"config": self.config_dict, "world_size": self.context.world_size, "inputs": self.inputs,
                  "metrics_size": self.files.metrics_size(), "elapsed_s": self.elapsed_s()}
        return checkpoint_of(header, loop.state.to_dict(), loop.state_dict(),
                             capture_rng_states(loop.task.generator_states()))

    def checkpoint_soon(self, loop: Loop, after_write: Callable[[], None] | None = None) -> None:
        self.checkpointer.save_soon(self.checkpoint(loop), on_write=after_write)

    def restore(self, loop: Loop, saved: dict[str, Any], path: Path | None) -> None:
        """Continue `loop` from `saved` exactly: its objects are rebuilt first, random states last. A run
        resumes only on the data it started with (whatever path it is read from now)."""
        require_format(saved, path, CHECKPOINT_FORMAT)
        header = saved["header"]
        if header.get("inputs") != self.inputs:
            raise CheckpointError(f"{path} was made from other data (its labels, split or images differ from "
                                  f"those read now); resume with the data the run started with, or start it "
                                  f"again in another --output_dir")
        if header["world_size"] != self.context.world_size:
            self.log(f"WARNING: the checkpoint was written by {header['world_size']} process(es), this run has "
                     f"{self.context.world_size}: batches and augmentation will differ from an uninterrupted run")
        try:
            loop.state = loop.State.from_dict(saved["position"])
            loop.load_state_dict(saved["method"])
        except torch.OutOfMemoryError:
            raise  # a sound checkpoint on a smaller device: not damage
        except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path} does not hold the state of this run's loop ({type(err).__name__}: "
                                  f"{err}); it is damaged or of another version: start the run again in another "
                                  f"--output_dir") from None
        self.elapsed_before, self.started = header["elapsed_s"], time.time()
        loop.task.restore_generators(restore_rng_states(saved["generators"]))
        s = loop.state
        self.log(f"resumed from {path}: outer {s.outer}, round {s.inner}, epoch {s.epoch}")

    # ------------------------------------------------------------------ start to end
    def train(self, loop: Loop) -> None:
        """Train until the loop has finished; then test its last model and write the final checkpoint.
        A stop request writes the state of the last finished epoch first."""
        try:
            if not loop.state.finished:
                loop.train()
                model = loop.final_model()
                loop.state.test_acc_last = loop.test(model).exact if model is not None else None
                loop.state.finished = True
                self.checkpointer.write_now(self.checkpoint(loop))  # collective: every rank builds it
            elif self.moved:  # a finished run moved here (--resume PATH): its folder gets its own checkpoint
                self.checkpointer.write_now(self.checkpoint(loop))
        except StopRequested:
            self.checkpointer.flush()
            raise StopRequested(f"the state of the last finished epoch is in {self.last_checkpoint()}; "
                                f"continue with --resume auto", self.stop_flag.signal_name) from None

    def close(self) -> None:
        if self.scalar_log is not None:
            self.scalar_log.close()

    def result(self, loop: Loop) -> dict[str, Any]:
        """result.json: the keys every run has, then the task's and the loop's own."""
        s = loop.state
        commit, dirty = self.code
        return {
            "method": self.config.method, **loop.task.describe(), "seed": self.config.seed,
            "best_val_acc": s.best_val_acc, "test_acc": s.test_acc, "test_acc_official": s.test_acc_official,
            "test_acc_last": s.test_acc_last, "best_at": s.best_at, "rounds": s.rounds, "epochs": s.epochs_run,
            **loop.result_fields(),
            "wall_time_s": round(self.elapsed_s(), 2), "device": describe_device(self.device),
            "world_size": self.context.world_size, "git_commit": commit, "git_dirty": dirty,
            "versions": versions(), "config": self.config_dict,
        }
