"""vlmwatch: video-understanding watcher for the Axera AX650N NPU and ONNX Runtime."""

__version__ = "0.1.0"
