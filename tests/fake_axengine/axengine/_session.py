"""axengine.InferenceSession (upstream axengine/_session.py): picks the provider's session, keeps it as `_sess`.

`run(output_names, input_feed, run_options=None, shape_group=0)` from
0.1.2rc0; before that it has no shape_group parameter (`_upstream`).
"""

from __future__ import annotations

import os

from . import _upstream
from ._axclrt import AXCLRTSession
from ._axe import AXEngineSession

sessions: list["InferenceSession"] = []  # every session made, for the tests

AXENGINE_PROVIDER = "AxEngineExecutionProvider"  # _providers.py: axengine_provider_name
AXCLRT_PROVIDER = "AXCLRTExecutionProvider"  # _providers.py: axclrt_provider_name


class InferenceSession:
    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        if not os.path.isfile(path_or_bytes):
            raise RuntimeError(f"fake axengine: no such model {path_or_bytes}")
        self.path, self.providers, self.provider_options = path_or_bytes, providers, provider_options
        self._provider = (providers or [AXENGINE_PROVIDER])[0]
        if self._provider == AXCLRT_PROVIDER:
            self._sess = AXCLRTSession(path_or_bytes, sess_options, provider_options, **kwargs)
        elif self._provider == AXENGINE_PROVIDER:
            self._sess = AXEngineSession(path_or_bytes, sess_options, provider_options, **kwargs)
        else:
            raise ValueError(f"Selected provider(s): {[self._provider]} is(are) not available.")
        self.name = self._sess.name
        sessions.append(self)

    @property
    def traffic(self):  # the fake's own counters (pyaxengine has none)
        return self._sess.traffic

    def get_providers(self):
        return self._provider

    def get_inputs(self, shape_group: int = 0):
        return self._sess.get_inputs(shape_group)

    def get_outputs(self, shape_group: int = 0):
        return self._sess.get_outputs(shape_group)

    def run(self, output_names, input_feed, run_options=None, shape_group: int = 0):
        return self._sess.run(output_names, input_feed, run_options, shape_group)


if not _upstream.SHAPE_GROUPS:
    def _run(self, output_names, input_feed, run_options=None):
        return self._sess.run(output_names, input_feed, run_options)

    InferenceSession.run = _run
