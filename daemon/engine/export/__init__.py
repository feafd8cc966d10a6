"""Exporting a transformers InternVL to the per-layer ONNX graphs the engine runs
(`export`, `graphs`: torch), the same graphs written from numpy weights (`onnx_graphs`:
numpy and onnx only), and the tiny random model the tests and the demo use (`tiny`).
"""
