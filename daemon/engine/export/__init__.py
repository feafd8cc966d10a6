"""Exporting a transformers InternVL to the per-layer ONNX graphs the engine runs
(`export`, `graphs`), and the tiny random model tests and the demo use (`tiny`).
"""
