"""Rules: rule files (`files`), pure evaluation (`model`), persistent state
(`state`), the daemon's side of alerts (`runner`) and replay over history (`replay`).
"""
