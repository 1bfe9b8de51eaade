"""What a plain run prints: start-up noise and the cross-model retracing warning dropped."""

import logging

import keras
import numpy as np

from segkit.console import _first_trace_of_a_new_model, _harmless
from segkit.runtimes import KerasPredictor


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, message, None, None)


def test_the_cuinit_line_is_harmless_only_without_a_gpu_driver():
    line = "E0000 00:00:1 cuda_executor.cc:1228] failed call to cuInit: INTERNAL: CUDA error"
    assert _harmless(line, gpu_driver=False)
    assert not _harmless(line, gpu_driver=True)
    assert not _harmless("ResourceExhaustedError: OOM when allocating tensor", False)


def test_only_the_predict_function_retracing_warning_is_dropped():
    predict = ("5 out of the last 9 calls to <function TensorFlowTrainer.make_predict_function."
               "<locals>.one_step_on_data_distributed at 0x7f> triggered tf.function retracing.")
    train = ("5 out of the last 9 calls to <function TensorFlowTrainer.make_train_function."
             "<locals>.one_step_on_iterator at 0x7f> triggered tf.function retracing.")
    assert not _first_trace_of_a_new_model(_record(predict))
    assert _first_trace_of_a_new_model(_record(train))
    assert _first_trace_of_a_new_model(_record("Skipping variable loading for optimizer"))


class _CountingModel(keras.Model):
    """A Keras model without layers (float32, so KerasPredictor uses it as it is) whose
    predict_on_batch records the batch shapes it was called with."""

    input_shape = (None, 8, 8, 3)

    def __init__(self):
        super().__init__(name="counting")
        self.shapes = []

    def predict_on_batch(self, batch):
        self.shapes.append(batch.shape)
        return batch[..., :1] / 255.0


def test_a_short_last_batch_is_padded_so_a_model_traces_one_shape():
    model = _CountingModel()
    predictor = KerasPredictor(model)
    images = np.random.default_rng(0).uniform(0, 255, (10, 8, 8, 3)).astype(np.float32)
    out = [predictor(images[i:i + 4]) for i in range(0, 10, 4)]
    assert {s for s in model.shapes} == {(4, 8, 8, 3)}  # 4, 4, then 2 padded to 4
    assert [len(o) for o in out] == [4, 4, 2]
    np.testing.assert_allclose(np.concatenate(out), images[..., :1] / 255.0)
