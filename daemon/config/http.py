"""The `http:` section: the OpenAI-compatible endpoint, off by default. The API key, like the MQTT
password, is a `SecretStr` or a reference to where it lives and never appears in a log line.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from daemon.config.base import Section
from daemon.config.secrets import read_secret
from daemon.errors import ConfigError

MiB = 1024 * 1024


PROFILE_FACTS = {  # the facts each profile's template may name, as {name}
    "frigate_review": ("camera", "frames", "start", "duration", "zones", "objects", "concerns", "language"),
    "frigate_object": ("label",),
    "llmvision": ("message", "labels"),
}


class ProfileSettings(Section):
    """One client profile (daemon.http.profiles): on or off, and its compact prompt."""

    enabled: bool = Field(True, description="Recognise this client's requests and fit them to the model.")
    prompt: str | None = Field(None, min_length=1, max_length=2000, description="The compact prompt, naming the "
                               "request's facts as {name}; one line per part, later lines dropped when room is "
                               "short. None: vlmwatch's own.")


class ProfilesSettings(Section):
    """Prompts of the clients this endpoint serves, recognised by their structure and rewritten to fit."""

    frigate_review: ProfileSettings = Field(default_factory=ProfileSettings, description="Frigate 0.17's review "
                                            "descriptions (JSON reply with scene, title, shortSummary, ...).")
    frigate_object: ProfileSettings = Field(default_factory=ProfileSettings, description="Frigate's tracked object "
                                            "descriptions.")
    llmvision: ProfileSettings = Field(default_factory=ProfileSettings, description="Home Assistant's LLM Vision "
                                       "(OpenAI compatible provider).")

    @model_validator(mode="after")
    def _known_facts(self) -> ProfilesSettings:
        for name, facts in PROFILE_FACTS.items():
            prompt = getattr(self, name).prompt
            unknown = sorted(set(re.findall(r"\{([a-z_]+)\}", prompt or "")) - set(facts))
            if unknown:
                raise ValueError(f"{name}.prompt names {', '.join('{' + u + '}' for u in unknown)}; this profile "
                                 f"knows {', '.join('{' + f + '}' for f in facts)}")
        return self

    def get(self, profile: str) -> ProfileSettings:
        """The settings of profile `profile` ("frigate-review", ...)."""
        return getattr(self, profile.replace("-", "_"))


class HttpSettings(Section):
    """An OpenAI-compatible chat-completions endpoint for Frigate's GenAI, Home Assistant's LLM Vision, ..."""

    enabled: bool = Field(False, description="Serve the OpenAI-compatible API (POST /v1/chat/completions, "
                          "GET /v1/models, GET /healthz).")
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on. Loopback by default; 0.0.0.0 "
                      "(or ::) serves the network: set an API key then.")
    port: int = Field(8088, ge=1, le=65535, description="TCP port.")
    api_key: SecretStr | None = Field(
        None, description="API key written in the config file (clients send 'Authorization: Bearer KEY'). Prefer "
        "api_key_env, api_key_file or api_key_credential. No key: no authentication.")
    api_key_env: str | None = Field(None, min_length=1, description="Environment variable holding the API key.")
    api_key_file: Path | None = Field(None, description="File whose content (trailing newline stripped) is the key.")
    api_key_credential: str | None = Field(
        None, min_length=1, pattern=r"^[^/]+$", description="systemd credential (LoadCredential=) holding the key; "
        "read from $CREDENTIALS_DIRECTORY/<name>.")
    max_body_bytes: int = Field(20 * MiB, ge=64 * 1024, le=512 * MiB,
                                description="Largest request body; larger requests get 413.")
    max_image_bytes: int = Field(8 * MiB, ge=1024, description="Largest encoded image (after base64 decoding).")
    max_image_pixels: int = Field(
        4096 * 4096, ge=64 * 64, description="Largest image in pixels (width x height), checked from its header "
        "before it is decoded.")
    max_images: int = Field(8, ge=1, le=64, description="Most images per request (each is one frame of one window, "
                            "in order); the model's prompt budget may allow fewer.")
    max_tokens: int = Field(512, ge=1, description="Longest answer: the default when a request gives no max_tokens, "
                            "and the most one may ask for (larger values are lowered to it).")
    max_waiting: int = Field(4, ge=1, le=64, description="Requests waiting for the NPU; more get 429 with Retry-After.")
    max_wait: float = Field(120.0, gt=0, description="Seconds a request may wait for the NPU before it gets 429.")
    fetch_urls: bool = Field(False, description="Accept http(s) image URLs and fetch them. Off: only data URLs "
                             "(the daemon then makes no outbound requests on a client's behalf).")
    fetch_max_bytes: int = Field(8 * MiB, ge=1024, description="Largest image fetched from a URL.")
    fetch_timeout: float = Field(10.0, gt=0, le=300, description="Seconds to fetch one image URL.")
    profiles: ProfilesSettings = Field(default_factory=ProfilesSettings, description="Frigate's and LLM Vision's "
                                       "prompts, recognised and rewritten to fit the model (see README).")

    @model_validator(mode="after")
    def _one_key_source(self) -> HttpSettings:
        sources = [n for n in ("api_key", "api_key_env", "api_key_file", "api_key_credential")
                   if getattr(self, n) is not None]
        if len(sources) > 1:
            raise ValueError(f"give the API key one way only, not {' and '.join(sources)}")
        return self

    def resolve_api_key(self) -> str | None:
        """The API key, read from wherever it lives (None: no authentication); ConfigError with a remedy."""
        if self.api_key is not None:
            return _non_empty(self.api_key.get_secret_value(), "http.api_key")
        value = read_secret("http.api_key", env=self.api_key_env, file=self.api_key_file,
                            credential=self.api_key_credential, what="the API key")
        if value is None:
            return None
        where = (f"environment variable {self.api_key_env}" if self.api_key_env is not None
                 else f"file {self.api_key_file}" if self.api_key_file is not None
                 else f"credential {self.api_key_credential}")
        return _non_empty(value, where)


def _non_empty(key: str, where: str) -> str:
    if not key.strip():
        raise ConfigError(f"the API key from {where} is empty: put a key there, or remove the setting to serve "
                          "without authentication")
    return key
