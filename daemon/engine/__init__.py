"""The engine: InternVL3-2B as the NPU runs it.

`sessions` (axengine, ONNX Runtime, cost model), `ports` (declared inputs),
`resident` and `axinternals` (the KV cache kept in the NPU runtime's buffers),
`bundle` (finding and opening the model files, the tokenizer without
transformers), `llm` (per-layer prefill and decode over one KV cache), `vision`
(frames to ViT features), `prompt` (the chat template), `engine` (prefix,
answers, sampling) and `limits` (what a model can take, without loading it).
`export/` turns a transformers checkpoint into an ONNX bundle and builds the
tiny test model (also without torch).
"""
