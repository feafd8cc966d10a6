#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian/Ubuntu machine, then run it.
# Used verbatim by CI (.ci/run) and by the README's test command.
# Python packages go into a virtual environment, .venv in the repository (PEP 668: Debian's and
# Ubuntu's system Python refuse pip installs outside one); PYTHON names the interpreter that makes it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # mosquitto: the real MQTT broker; GStreamer RTSP server and plugins: the real camera;
    # openssl: test certificates; systemd: systemd-analyze verify of the unit; chromium: the browser
    # Playwright drives in the web page's tests (Debian's, so nothing is downloaded);
    # python3-venv: Debian's python3 makes no virtual environment without it (ensurepip).
    $SUDO apt-get install -y -qq --no-install-recommends \
        mosquitto openssl systemd python3-venv chromium \
        python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp \
        gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
        gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav >/dev/null
    # The tests start their own broker on a free port; keep the packaged one from holding 1883.
    (systemctl disable --now mosquitto 2>/dev/null || service mosquitto stop 2>/dev/null) >/dev/null 2>&1 || true
fi

# A venv left without pip (made before python3-venv was installed) is made again.
if [ ! -x .venv/bin/pip ]; then
    rm -rf .venv
    $PY -m venv .venv
fi
VENV_PY=.venv/bin/python
# torch 2.13.0 (CPU) is what the exporter is tested with; the venv's pip reads the same pip
# configuration (/etc/pip.conf, PIP_* variables) as the interpreter that made it.
$VENV_PY -m pip install -q torch==2.13.0
$VENV_PY -m pip install -q -e '.[onnx,export,test,demo,http,bench]'

set +e
$VENV_PY -m pytest -q "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": that is a failure here, never a pass.
exit $rc
