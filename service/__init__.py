"""Inference side: ONNX Runtime engine, HTTP app and batch CLI. Never imports torch."""
