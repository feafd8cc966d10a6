"""axengine.InferenceSession: picks the provider's session and keeps it as `_sess` (as pyaxengine does)."""

from __future__ import annotations

import os

from ._axclrt import AXCLRTSession
from ._axe import AXEngineSession

sessions: list["InferenceSession"] = []  # every session made, for the tests

AXENGINE_PROVIDER = "AxEngineExecutionProvider"
AXCLRT_PROVIDER = "AXCLRTExecutionProvider"


class InferenceSession:
    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        if not os.path.isfile(path_or_bytes):
            raise RuntimeError(f"fake axengine: no such model {path_or_bytes}")
        self.path, self.providers, self.provider_options = path_or_bytes, providers, provider_options
        provider = (providers or [AXENGINE_PROVIDER])[0]
        if provider == AXCLRT_PROVIDER:
            device_id = (provider_options or [{}])[0].get("device_id", 0)
            self._sess = AXCLRTSession(path_or_bytes, device_id)
        elif provider == AXENGINE_PROVIDER:
            self._sess = AXEngineSession(path_or_bytes)
        else:
            raise ValueError(f"fake axengine: unknown provider {provider}")
        self.name = self._sess.name
        sessions.append(self)

    @property
    def traffic(self):  # the fake's own counters (pyaxengine has none)
        return self._sess.traffic

    def get_inputs(self, shape_group: int = 0):
        return self._sess.get_inputs(shape_group)

    def get_outputs(self, shape_group: int = 0):
        return self._sess.get_outputs(shape_group)

    def run(self, output_names, input_feed, run_options=None, shape_group: int = 0):
        return self._sess.run(output_names, input_feed, run_options, shape_group)
