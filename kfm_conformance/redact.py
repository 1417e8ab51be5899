"""Secrets never reach a file the harness writes: reports, logs, evidence, the bundle and the
copy of the profile in it.

Which values are secret:

- the values of the profile's ``secret_env`` variables and of the known credential variables
  (``LAKEFS_SECRET_ACCESS_KEY``, ``PGPASSWORD``, ...), from the harness's environment and from
  ``[pipeline.env]``;
- the values of every variable, in the harness's environment and in ``[pipeline.env]``, whose
  NAME looks sensitive: it contains (case-insensitively) one of :data:`SENSITIVE_NAME_PARTS`,
  Airflow's list (``KFM_API_TOKEN``, ``GITHUB_TOKEN``, ``DB_PASSWORD``, ...);
- strings in a known token format (:data:`TOKEN_PATTERN`: GitHub ``ghp_``/``gho_``/``ghu_``/
  ``ghs_``/``ghr_`` and ``github_pat_``, AWS access key ids ``AKIA``/``ASIA``, Slack
  ``xox[abprs]-``, GitLab ``glpat-``), wherever they appear, and the values of any variable
  of the harness's environment that holds one;
- credentials the harness generates at run time (:func:`register_secret`).

Each known value is masked as ``***`` in every form it takes in the files written: as it is,
JSON-escaped (ASCII and not, ``\\/`` too), HTML/XML-escaped, URL-encoded (``quote`` and
``quote_plus``, upper- and lower-case hex) and base64 (standard and URL-safe). Base64 of a
secret inside a larger string depends on where the secret starts modulo 3, so for each of the
three offsets the masked form is the run of base64 characters that the secret's bytes alone
determine (:func:`base64_forms`); a character that mixes bits of the secret with bits of its
neighbours stays, so at most 4 bits of the secret's first and last bytes show.

Short values (the rule): a value is masked only when it has at least
:data:`MIN_SECRET_LENGTH` (4) characters, is not a word that is everywhere in a report
(``true``, ``false``, ``none``, ``null``, ``yes``, ``no``, ``on``, ``off``), and, when it is
all digits, has at least :data:`MIN_NUMERIC_SECRET_LENGTH` (8) of them. Masking ``1`` or
``true`` would turn every report into asterisks (and break the JSON a mask lands in) while
protecting nothing: a value that short is guessed, not leaked. A base64 form is masked only
when it is at least :data:`MIN_BASE64_FORM` characters long.

A long text (a bounded tail of stdout or stderr) that starts with the end of a secret, or ends
with its start, has that piece masked too, when it is at least 4 characters long.

Not covered: other encodings (hex, base32, gzip, MIME base64 broken over lines), and the
pieces of a secret cut by a tail in its encoded forms.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from kfm_conformance.profile import Profile

MASK = "***"

#: Airflow's list of sensitive name parts: a variable whose name contains one of these
#: (case-insensitively) holds a secret.
SENSITIVE_NAME_PARTS = (
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
)

MIN_SECRET_LENGTH = 4
MIN_NUMERIC_SECRET_LENGTH = 8
MIN_BASE64_FORM = 6
#: Texts at least this long may be a bounded tail cut through a secret (see
#: :meth:`Redactor._mask_cut_edges`).
CUT_TEXT_LENGTH = 1024
#: Values too common in a report to be masked (compared case-insensitively).
NOT_SECRET_WORDS = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})

#: Known token formats, masked wherever they appear.
TOKEN_PATTERN = re.compile(
    r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{30,255}(?![A-Za-z0-9_])"
    r"|(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}"
    r"|(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9-]{10,255}"
    r"|(?<![A-Za-z0-9])glpat-[A-Za-z0-9_-]{20,255}"
)
_TOKEN_PREFIXES = ("gh", "github_pat_", "AKIA", "ASIA", "xox", "glpat-")

#: Process-wide secrets registered at run time (service credentials the harness generated).
_RUNTIME_SECRETS: set[str] = set()


def is_sensitive_name(name: str) -> bool:
    """Whether a variable's name says it holds a secret (Airflow's rule)."""
    lowered = name.lower()
    return any(part in lowered for part in SENSITIVE_NAME_PARTS)


def is_maskable(value: str) -> bool:
    """Whether ``value`` is long and rare enough to be masked wherever it appears (the rule
    in the module's docstring)."""
    text = value.strip()
    if len(text) < MIN_SECRET_LENGTH or text.lower() in NOT_SECRET_WORDS:
        return False
    return not (text.isdigit() and len(text) < MIN_NUMERIC_SECRET_LENGTH)


def sensitive_values(environ: Mapping[str, str]) -> list[str]:
    """The values of ``environ`` that are secret by their variable's name, and every string
    in a known token format that any value holds."""
    found: set[str] = set()
    for name, value in environ.items():
        if not value:
            continue
        if is_sensitive_name(name):
            found.add(value)
        found.update(match.group() for match in TOKEN_PATTERN.finditer(value))
    return sorted(found)


def register_secret(value: str | None) -> None:
    """Make sure ``value`` is masked wherever a report or bundle file shows it."""
    if value and is_maskable(value):
        _RUNTIME_SECRETS.add(value)


def base64_forms(value: bytes) -> set[str]:
    """The base64 text that ``value`` determines wherever it sits in a larger byte string,
    standard and URL-safe alphabets.

    Base64 turns each 3 bytes into 4 characters of 6 bits. When the secret starts ``k`` bytes
    (mod 3) into the encoded data, its bits occupy ``[8k, 8k + 8n)`` of the bit stream, and
    output character ``i`` covers bits ``[6i, 6i + 6)``: the characters with
    ``ceil(8k / 6) <= i < floor((8k + 8n) / 6)`` depend on the secret alone. Encoding ``k``
    filler bytes plus the secret and keeping that slice gives them (the filler's and the
    padding's bits fall outside it)."""
    forms: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + value).decode("ascii")
        start = -(-8 * offset // 6)
        end = (8 * (offset + len(value))) // 6
        stable = encoded[start:end]
        if len(stable) >= MIN_BASE64_FORM:
            forms.add(stable)
            forms.add(stable.replace("+", "-").replace("/", "_"))
    return forms


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def secret_forms(value: str) -> set[str]:
    """Every form in which ``value`` can appear in a file the harness writes."""
    forms = {value}
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.update(form.replace("/", "\\/") for form in list(forms))
    forms.add(html.escape(value, quote=True))
    forms.add(html.escape(value, quote=False))
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, "/")):
        forms.add(encoded)
        forms.add(_lower_hex(encoded))
    forms |= base64_forms(value.encode("utf-8", "surrogatepass"))
    return {form for form in forms if len(form) >= min(MIN_SECRET_LENGTH, len(value))}


class Redactor:
    """Masks a set of secret values, in all their forms, and known token formats."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.values = sorted({s for s in secrets if s and is_maskable(s)})
        forms: set[str] = set()
        for value in self.values:
            forms |= secret_forms(value)
        # Longest first, so that a secret that contains another is masked whole.
        self.secrets = sorted(forms, key=lambda f: (-len(f), f))

    @classmethod
    def for_profile(
        cls,
        profile: Profile,
        extra: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> Redactor:
        """The secrets of a certification: the profile's, the harness environment's
        (``os.environ`` unless given), the registered ones and ``extra``."""
        values = profile.secret_values(dict(os.environ if environ is None else environ))
        return cls([*values, *extra, *_RUNTIME_SECRETS])

    def redact_text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if any(prefix in text for prefix in _TOKEN_PREFIXES):
            text = TOKEN_PATTERN.sub(MASK, text)
        if len(text) >= CUT_TEXT_LENGTH:
            text = self._mask_cut_edges(text)
        return text

    def _mask_cut_edges(self, text: str) -> str:
        """A bounded tail (of stdout, stderr, a log) may start with the end of a secret or end
        with its start: mask a piece of at least :data:`MIN_SECRET_LENGTH` characters of a
        secret's literal form at either edge."""
        for value in self.values:
            for size in range(len(value) - 1, MIN_SECRET_LENGTH - 1, -1):
                if text.startswith(value[-size:]):
                    text = MASK + text[size:]
                    break
            for size in range(len(value) - 1, MIN_SECRET_LENGTH - 1, -1):
                if text.endswith(value[:size]):
                    text = text[:-size] + MASK
                    break
        return text

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {self.redact_text(str(k)): self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value
