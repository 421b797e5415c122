"""compile_network of utils/engine.py: same numbers, same state_dict keys, compiled code reused.

The first compilation of LeNet's training step takes ~30 s on a 2-core CPU (inductor writes and
builds C++ kernels); later runs read inductor's on-disk cache and take a few seconds.
"""
import shutil

import pytest
import torch

from models.lenet import LeNet
from utils.engine import (COMPILE_MODES, compile_network, compiled_graph_count, make_sgd, predict_logits,
                          train_one_epoch)

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="torch.compile on the CPU builds C++ kernels; no C++ compiler found")


def lenet(seed: int) -> LeNet:
    torch.manual_seed(seed)
    return LeNet(10).to(memory_format=torch.channels_last)  # the CPU default (--channels_last auto)


def batches(seed: int, count: int, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(size, 1, 28, 28, generator=generator).contiguous(memory_format=torch.channels_last),
             torch.randint(0, 10, (size,), generator=generator)) for _ in range(count)]


def test_off_returns_the_network_unchanged_and_unknown_modes_fail():
    model = LeNet(10)
    assert compile_network(model, "off") is model and model._compiled_call_impl is None
    assert COMPILE_MODES[0] == "off"
    with pytest.raises(ValueError, match="--compile"):
        compile_network(model, "fast")


@needs_compiler
def test_compiled_lenet_trains_like_eager_and_fresh_networks_reuse_the_code():
    eager, compiled = lenet(0), lenet(0)
    keys = list(compiled.state_dict())
    assert compile_network(compiled, "default") is compiled
    assert list(compiled.state_dict()) == keys  # no "_orig_mod." prefix: checkpoints interchangeable

    data = batches(1, 3)
    for model in (eager, compiled):
        train_one_epoch(model, make_sgd(model.parameters(), lr=0.1, weight_decay=1e-3), data)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=name)
    images = [images for images, _ in data]
    torch.testing.assert_close(predict_logits(compiled, images), predict_logits(eager, images),
                               atol=1e-4, rtol=1e-4)

    # A later round's fresh network: same class and shapes, so no new graph in either mode.
    graphs = compiled_graph_count()
    fresh = compile_network(lenet(2), "default")
    train_one_epoch(fresh, make_sgd(fresh.parameters(), lr=0.1, weight_decay=1e-3), batches(3, 1))
    predict_logits(fresh, images)
    assert compiled_graph_count() == graphs


class ReusedOutput(torch.nn.Module):
    """Returns the same output tensor at every call, as CUDA graphs ("reduce-overhead") do."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.register_buffer("output", torch.zeros(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.output.copy_(images * self.scale)


def test_predict_logits_keeps_each_batch_when_the_network_reuses_its_output():
    logits = predict_logits(ReusedOutput(), [torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)])
    assert logits[:2].eq(1.0).all() and logits[2:].eq(2.0).all()


def test_a_failing_compiler_is_one_line_and_the_run_continues_without_compile(tmp_path):
    from tests.runs import run_main
    args = ["--dataset", "digits", "--n_epoch", "1", "--max_outer_loop", "1", "--max_inner_loop", "2",
            "--no_progress", "--num_threads", "1", "--output_dir", "run"]
    env = {"CXX": "/nonexistent/c++", "CC": "/nonexistent/cc"}  # no working C++ compiler for inductor
    done = run_main(args + ["--compile"], tmp_path, extra_env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: torch.compile failed (") and "Traceback" not in done.stderr
    assert "run without --compile" in lines[0]
    again = run_main(args + ["--resume", "auto"], tmp_path)
    assert again.returncode == 0, again.stderr
