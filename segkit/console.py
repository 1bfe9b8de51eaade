"""What a plain run prints: segkit's lines, Keras' progress and real warnings, not the
start-up chatter of the libraries underneath. ``verbose=true`` (``segkit ... -v``) brings
it all back.

TensorFlow's C++ runtime writes to file descriptor 2 before its logging is configured
(``TF_CPP_MIN_LOG_LEVEL`` does not reach those lines), including ``failed call to cuInit``
on every machine without an NVIDIA driver, which reads as a failure on a CPU machine.
:func:`native_startup` captures that descriptor while TensorFlow starts and passes every
line through except the known harmless ones: hand-written, as no library option does it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Start-up lines that say nothing is wrong (on a machine without a GPU driver, cuInit too).
HARMLESS = (
    r"All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
)
NO_GPU_DRIVER = (r"failed call to cuInit", r"cuda_(platform|executor|diagnostics)\.cc")


def quiet_environment(verbose: bool) -> None:
    """Environment switches read by the libraries at import: set before importing them
    (a value the user set wins)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # download bars
    logging.getLogger("tensorflow").addFilter(_first_trace_of_a_new_model)


def _first_trace_of_a_new_model(record: logging.LogRecord) -> bool:
    """False for TF's "triggered tf.function retracing" warning about Keras' predict
    function. TF counts traces per function *code*, so each new model's first predict (the
    jobs of a sweep, the logged copy of a model) counts as a retrace of the last model's;
    segkit's own retracing (a short last batch) is fixed in segkit.runtimes.KerasPredictor."""
    message = record.getMessage()
    return not ("triggered tf.function retracing" in message
                and "make_predict_function" in message)


def _harmless(line: str, gpu_driver: bool) -> bool:
    patterns = HARMLESS if gpu_driver else HARMLESS + NO_GPU_DRIVER
    return any(re.search(p, line) for p in patterns)


@contextmanager
def native_startup(verbose: bool = False) -> Iterator[None]:
    """Run the block (import TensorFlow, touch its devices) with descriptor 2 captured, then
    write back every line of it that is not known start-up noise."""
    if verbose:
        yield
        return
    gpu_driver = Path("/proc/driver/nvidia").exists()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines()
                    if line.strip() and not _harmless(line, gpu_driver)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)
