"""The running daemon: wiring (`build`), checks before start (`preflight`), the NPU
queue and worker (`worker`), the app loop (`app`), history (`history`),
metrics and systemd notification.
"""
