"""A model's FLOPs: counted from its layer shapes, and TensorFlow's own count of the frozen
forward graph (the cross-check)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def layer_flops(layer) -> tuple[int, int]:
    """(multiply-add FLOPs, other FLOPs) of one Keras layer's forward pass for one image.

    Conv2D: 2 x H_out x W_out x C_out x k_h x k_w x C_in / groups; Conv2DTranspose:
    2 x H_in x W_in x C_in x k_h x k_w x C_out; Dense: 2 x inputs x units per position.
    Other: bias adds (1 per output) and max pooling (one compare per window element).
    """
    from keras import layers

    out_shape = layer.output.shape
    if isinstance(layer, layers.MaxPooling2D):
        return 0, int(np.prod(out_shape[1:])) * int(np.prod(layer.pool_size))
    if isinstance(layer, layers.Conv2DTranspose):
        _, h, w, c_in = layer.input.shape
        kh, kw = layer.kernel_size
        flops = 2 * h * w * c_in * kh * kw * layer.filters
    elif isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        _, h, w, c_out = out_shape
        flops = 2 * h * w * c_out * kh * kw * layer.input.shape[-1] // layer.groups
    elif isinstance(layer, layers.Dense):
        flops = 2 * int(np.prod(out_shape[1:-1] or [1])) * layer.input.shape[-1] * layer.units
    else:
        return 0, 0
    bias = int(np.prod(out_shape[1:])) if getattr(layer, "use_bias", False) else 0
    return int(flops), bias


def count_flops(model) -> dict:
    """Forward FLOPs per image from the layer shapes (a multiply-add = 2 FLOP).

    ``conv``: convolutions (plain and transposed) and dense layers, also ``per_layer``;
    ``other``: bias adds and max pooling. Activations, rescaling and concatenation are not
    counted (memory traffic, not arithmetic).
    """
    conv, other, per_layer = 0, 0, {}
    for layer in model.layers:
        flops, extra = layer_flops(layer)
        if flops:
            per_layer[layer.name] = flops
        conv, other = conv + flops, other + extra
    return {"conv": int(conv), "other": int(other), "total": int(conv + other),
            "per_layer": per_layer}


def transpose_flops(model, per_layer: dict[str, int]) -> int:
    """The part of ``per_layer`` spent in transposed convolutions."""
    from keras import layers

    return sum(f for name, f in per_layer.items()
               if isinstance(model.get_layer(name), layers.Conv2DTranspose))


def _frozen_forward_graph(model, size: int):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    channels = model.input_shape[-1]
    fn = tf.function(lambda x: model(x, training=False))
    return convert_variables_to_constants_v2(
        fn.get_concrete_function(tf.TensorSpec([1, size, size, channels], tf.float32))).graph


def profiler_flops(model, size: int) -> dict:
    """TensorFlow's own FLOP count of the frozen forward graph for one image, per op type.

    Uses the statistics registry behind ``tf.compat.v1.profiler`` (its ``flops_registry``:
    Conv2D, Conv2DBackpropInput (what Conv2DTranspose runs), BiasAdd, MaxPool, element-wise
    ops); compute ops without a formula are listed as uncounted. Activations are not counted,
    like ``count_flops``, so the two totals agree exactly for a conv/pool/bias network.
    """
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.profiler.internal import flops_registry  # noqa: F401 (registers)

    graph = _frozen_forward_graph(model, size)
    by_type: dict[str, int] = defaultdict(int)
    uncounted = set()
    for op in graph.get_operations():
        try:
            value = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except ValueError:  # shape not fully known
            value = None
        if value is None:
            uncounted.add(op.type)
        else:
            by_type[op.type] += int(value)
    return {"total": int(sum(by_type.values())), "by_op_type": dict(by_type),
            "uncounted_compute_ops": sorted(t for t in uncounted
                                            if t.startswith(("Conv", "MatMul", "Depthwise")))}
