"""Start a training run from a trained model (``fcn train --init MODEL``).

``source.read_init`` reads what to start from (an exported ONNX model, fp32 or INT8, an fp16
source file, a checkpoint, or ``default``); ``onnx_weights`` maps an ONNX graph's weights back
onto the torch modules; ``batchnorm`` handles BatchNorm the export folded into convolutions;
``classes`` matches class rows by name; ``apply`` joins them for the training loop.
"""
