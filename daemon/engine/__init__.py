"""The engine: InternVL3-2B as the NPU runs it.

`sessions` (axengine, ONNX Runtime, cost model), `bundle` (finding and opening
the model files), `llm` (per-layer prefill and decode over one KV cache),
`vision` (frames to ViT features), `prompt` (the chat template), `engine`
(prefix, answers, sampling) and `limits` (what a model can take, without loading
it). `export/` turns a transformers checkpoint into an ONNX bundle and builds the
tiny test model.
"""
