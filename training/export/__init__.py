"""From checkpoint to served file: ONNX export with metadata (onnx.py), INT8 quantization."""
