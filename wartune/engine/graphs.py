"""CUDA graphs: the training step and the evaluation attack launched once, replayed every batch.

Why: a thin net's TRADES-10 step is some 4,500 small kernels, each launched from Python, so on
a GPU it runs at the pace of its launches, not of its arithmetic (WRN-34-0.5 ran at 814-901
img/s on an H200, slower than a plain fp32 loop). WAR's point is that the thin calibration
net is cheap; a CUDA graph records one call's kernels once and replays them with one launch.

How: `GraphedCall` wraps a function of a few input tensors that does device work only: the
trainer's own step (`Trainer.step_on`) and the evaluation's `attack_batch`, the very code an
eager run calls. Each call copies its inputs into static buffers; the first `warmup` calls run
the function eagerly on a side stream (cuDNN picks its kernels, the optimizer makes its
momentum buffers, autograd its streams), the next call is captured, and every later one is a
replay. Random numbers are inputs, drawn on the trial's CPU generator exactly as an eager run
draws them and copied in, so a replayed step starts its attack where the eager step would,
and CPU, GPU, eager and graphed runs of one seed draw the same numbers. A call whose batch is
not the full batch (an epoch's last, partial batch) runs the same function eagerly: no
example is dropped and no second graph is kept.

What a graph reads by address must never be rebound. Parameters and BN statistics are updated
in place by the optimizer and by `load_state_dict`; the λ controllers keep their state in
place (`lambdas.py`); the learning rate, a Python float the schedule changes every epoch, is
read from a device tensor during capture (fused SGD takes a tensor lr) and refreshed from the
float before a replay (`tensor_lr`). Loading an optimizer state replaces its momentum buffers,
so a trainer drops its graphs when it loads a resume point.

A capture that fails prints one line naming why, and that call and every later one run
eagerly: a trial never fails for a graph.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Literal

import torch

GraphSetting = Literal["auto", "on", "off"]
Inputs = tuple[torch.Tensor | None, ...]
Outputs = tuple[torch.Tensor, ...]
WARMUP_CALLS = 3  # eager calls before the capture, as PyTorch's CUDA-graph guide warms up


def graphs_plan(setting: GraphSetting, device: torch.device, precision: str) -> tuple[bool, bool, str | None]:
    """(stage on static buffers, capture, why not captured) for a run's setting, device and precision.

    `auto` captures on CUDA and leaves CPU runs exactly as they were (no staging). `on` stages
    everywhere, so a CPU run exercises the captured code path eagerly; it captures only on
    CUDA. fp16 never captures: its loss scaler reads an overflow flag back every step.
    """
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return False, False, None
    if device.type != "cuda":
        return True, False, "no CUDA device: the step runs eagerly on its static buffers"
    if precision == "fp16":
        reason = "fp16's loss scaler reads its overflow flag back every step: the step runs eagerly"
        return setting == "on", False, reason
    return True, True, None


def say(message: str) -> None:
    """One line on stderr (a trial's stderr reaches the search's terminal through Ray)."""
    print(f"wartune: {message}", file=sys.stderr, flush=True)


class GraphedCall:
    """`fn(*inputs) -> tensors` on static input buffers: eager `warmup` times, then captured and replayed.

    Only calls whose leading dimension is `batch` are staged; any other runs `fn` eagerly on
    the inputs as given. With `capture` False (a CPU, fp16, or a failed capture) staged calls
    run `fn` eagerly on the static buffers, the captured code path without the graph.
    `capture_context` wraps the capture (the trainer swaps in its tensor lr there);
    `before_replay` runs before each replay.
    """

    def __init__(
        self,
        fn: Callable[..., Outputs],
        batch: int,
        name: str,
        capture: bool,
        warmup: int = WARMUP_CALLS,
        capture_context: Callable[[], AbstractContextManager[None]] = nullcontext,
        before_replay: Callable[[], None] | None = None,
    ) -> None:
        self.fn, self.batch, self.name = fn, batch, name
        self.capture, self.warmup = capture, warmup
        self.capture_context, self.before_replay = capture_context, before_replay
        self.static: list[torch.Tensor | None] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: Outputs = ()
        self.calls = 0
        self.failure: str | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, *inputs: torch.Tensor | None) -> Outputs:
        first = inputs[0]
        assert first is not None
        if first.shape[0] != self.batch:
            return self.fn(*inputs)
        staged = self._stage(inputs)
        if self.graph is not None:
            if self.before_replay is not None:
                self.before_replay()
            self.graph.replay()
            return tuple(t.clone() for t in self.outputs)
        if not self.capture or self.failure is not None:
            return self.fn(*staged)
        if self.calls < self.warmup:
            self.calls += 1
            return self._on_side_stream(staged)
        return self._capture(staged)

    def _stage(self, inputs: Inputs) -> Inputs:
        """Copy the inputs into the static buffers (made from the first full call's inputs)."""
        if self.static is None:
            self.static = [None if t is None else t.detach().clone() for t in inputs]
        else:
            for buffer, t in zip(self.static, inputs, strict=True):
                if buffer is not None and t is not None:
                    buffer.copy_(t)
        return tuple(self.static)

    def _on_side_stream(self, staged: Inputs) -> Outputs:
        """An eager call on a side stream, as the capture will run (PyTorch's warm-up recipe)."""
        current = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            outputs = self.fn(*staged)
        current.wait_stream(side)
        return tuple(t.clone() for t in outputs)  # allocated on the current stream from here on

    def _capture(self, staged: Inputs) -> Outputs:
        try:
            graph = torch.cuda.CUDAGraph()
            with self.capture_context(), torch.cuda.graph(graph):
                outputs = self.fn(*staged)
        except Exception as err:  # any failure means: run eagerly, never fail the trial
            self.failure = _first_line(err)
            say(f"CUDA graph capture of the {self.name} failed ({self.failure}); it runs eagerly")
            return self.fn(*staged)
        self.graph, self.outputs = graph, tuple(outputs)
        graph.replay()
        return tuple(t.clone() for t in self.outputs)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class TensorLR:
    """An optimizer's learning rates as device tensors while a step is captured.

    A captured `optimizer.step()` must read lr from memory, since the schedule changes it
    every epoch and a float would be frozen into the graph. During capture each param
    group's lr is its tensor (fused SGD reads a tensor lr on the device); afterwards the
    group holds its float again, so schedules, checkpoints and eager steps see what they
    always saw, and `refresh` copies a changed float into the tensor before a replay.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.optimizer = optimizer
        # fused SGD's kernel reads its tensor lr as float32
        self.tensors = [torch.zeros((), dtype=torch.float32, device=device) for _ in optimizer.param_groups]
        self.values: list[float | None] = [None] * len(self.tensors)

    def refresh(self) -> None:
        for i, (group, tensor) in enumerate(zip(self.optimizer.param_groups, self.tensors, strict=True)):
            lr = float(group["lr"])
            if lr != self.values[i]:
                tensor.fill_(lr)
                self.values[i] = lr

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        self.refresh()
        floats = [group["lr"] for group in self.optimizer.param_groups]
        for group, tensor in zip(self.optimizer.param_groups, self.tensors, strict=True):
            group["lr"] = tensor
        try:
            yield
        finally:
            for group, lr in zip(self.optimizer.param_groups, floats, strict=True):
                group["lr"] = lr
