"""Shared pytest fixtures and safe defaults for the whole suite.

Fixtures (session-scoped, CPU, float32):
- `tokenizer`: the built-in character-level tokenizer (`d1.core.models.build_tokenizer()`).
- `tiny_model`: built-in "tiny-xs" LLaDA, seed 0, eval mode. Shared by all tests: do not modify
  it (no training, no LoRA); use `tiny_model_factory` for a private copy.
- `tiny_model_factory(name="tiny-xs", seed=0)`: a fresh, private model (eval mode) per call.
- `d1_generations`: folder of d1's published LLaDA-8B-Instruct GSM8K / MATH500 evaluation files,
  extracted once from `tests/fixtures/llada_8b_instruct/` (see its README).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

# Offline and quiet by default (setdefault: a developer may override in the environment).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from collections.abc import Callable

import pytest
import torch

# Tiny models are dominated by per-op overhead: one intra-op thread is several times faster than
# two on this 2-core machine (measured), and leaves the other core to subprocess-based tests.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    """The built-in character-level tokenizer with LLaDA's special tokens."""
    from d1.core.models import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_factory() -> Callable[..., torch.nn.Module]:
    """`factory(name="tiny-xs", seed=0)` -> a fresh built-in tiny LLaDA (float32, eval mode)."""
    from d1.core.models import make_tiny_model

    def factory(name: str = "tiny-xs", seed: int = 0) -> torch.nn.Module:
        model, _ = make_tiny_model(name, seed=seed)
        return model.float().eval()

    return factory


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory):
    """Shared "tiny-xs" LLaDA (seed 0, float32, eval mode). Read-only: do not train or wrap it."""
    return tiny_model_factory("tiny-xs", 0)


@pytest.fixture
def echo_task(monkeypatch):
    """Register the toy task "echo" for this test only; keep torch's thread count as it was."""
    import d1.tasks
    from toy_tasks import TOY_TASKS

    monkeypatch.setitem(d1.tasks._REGISTRY, "echo", TOY_TASKS["echo"])
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def interrupt_child():
    """`interrupt(script, args, marker, sig, timeout=300)`: run `python -c script *args` with one
    thread, wait until it creates the file `marker`, send it signal `sig` and wait for it to
    exit. Returns `(returncode, stderr)`; fails the test if the child exits early."""
    import signal as _signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    def interrupt(
        script: str, args: list[str], marker: Path, sig: int = _signal.SIGKILL, timeout=300
    ) -> tuple[int, str]:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with subprocess.Popen(
            [sys.executable, "-c", script, *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # A shell without job control starts background jobs with SIGINT ignored, which
            # the child would inherit (and then never see Ctrl-C): give it the default back.
            preexec_fn=lambda: _signal.signal(_signal.SIGINT, _signal.SIG_DFL),
        ) as proc:
            try:
                deadline = time.monotonic() + timeout
                while not Path(marker).exists():
                    if proc.poll() is not None:
                        pytest.fail(f"child exited early ({proc.returncode}): {proc.stderr.read()}")
                    if time.monotonic() > deadline:
                        pytest.fail(f"child never created {marker}")
                    time.sleep(0.1)
                proc.send_signal(sig)
                _, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return proc.returncode, err

    return interrupt


LLADA_FIXTURES = Path(__file__).parent / "fixtures" / "llada_8b_instruct"


@pytest.fixture(scope="session")
def d1_generations(tmp_path_factory) -> Path:
    """d1's evaluation outputs of LLaDA-8B-Instruct (45 JSON files), extracted to a temp folder."""
    out = tmp_path_factory.mktemp("d1_generations")
    with tarfile.open(LLADA_FIXTURES / "d1_eval_generations.tar.xz") as tar:
        tar.extractall(out, filter="data")
    return out
