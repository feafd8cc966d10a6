"""Which upstream pyaxengine build this fake behaves as, and what differs between builds.

The tag comes from the environment (FAKE_AXENGINE_TAG, read at import; default
0.1.3.rc3 = main at 3554448). The version an installed wheel reports is not
the tag: setup.py says "0.1.3" at 0.1.3rc0, .rc1, .rc2, .rc3 and on the
frigate branch, so the tests give the fake a matching dist-info
(`version_of(tag)`) as a wheel would.

Read from AXERA-TECH/pyaxengine, `git diff` between consecutive tags of
axengine/_axe.py, _axclrt.py, _session.py:

    0.1.0rc1..0.1.1rc0  run(output_names, input_feed, run_options=None): no shape_group;
                        _axe.py always AX_ENGINE_RunSyncV2; 0.1.1rc0 adds _axclrt's _thread_context
    0.1.2rc0            run(..., shape_group=0); _axe.py: RunGroupIOSync when _shape_count > 1, else
                        RunSyncV2; outputs are np.frombuffer views of the output buffers (no copy);
                        _axclrt.py reads outputs through self._io[0].pOutputs[i].pVirAddr, a field the
                        card's axclrtEngineIO (void *) has not: its run() cannot return outputs
    0.1.3rc0            _axclrt.py: outputs copied device -> host with axclrtMemcpy (fixed)
    0.1.3.rc1           _axe.py: outputs .copy()'d out of the buffers
    0.1.3.rc2           _axe.py: the model file is mmapped (no behaviour vlmwatch sees)
    0.1.3.rc3           outputs listed in output_names order (the same order for output_names=None)
    0.1.3-frigate       = 0.1.3.rc3 for everything above (007283a: quieter import)
"""

from __future__ import annotations

import os

TAGS = ("0.1.0rc1", "0.1.0rc2", "0.1.1rc0", "0.1.2rc0", "0.1.3rc0", "0.1.3.rc1", "0.1.3.rc2", "0.1.3.rc3",
        "0.1.3-frigate")
TAG = os.environ.get("FAKE_AXENGINE_TAG", "0.1.3.rc3")
if TAG not in TAGS:
    raise ImportError(f"fake axengine: unknown upstream tag {TAG!r} (one of {', '.join(TAGS)})")
_AT = TAGS.index(TAG)


def since(tag: str) -> bool:
    """True when the emulated build is `tag` or later."""
    return _AT >= TAGS.index(tag)


def version_of(tag: str) -> str:
    """What setup.py declares at `tag` (the installed wheel's metadata version)."""
    return {"0.1.0": "0.1.0", "0.1.1": "0.1.1", "0.1.2": "0.1.2"}.get(tag[:5], "0.1.3")


SHAPE_GROUPS = since("0.1.2rc0")  # run() takes shape_group=
SOC_COPIES_OUTPUTS = since("0.1.3.rc1")  # _axe.py: .copy() of each output; views before
CARD_COPIES_OUTPUTS = not SHAPE_GROUPS or since("0.1.3rc0")  # _axclrt.py: axclrtMemcpy device -> host
CARD_THREAD_CONTEXT = since("0.1.1rc0")  # _axclrt.py: _thread_context, set at the top of run()
