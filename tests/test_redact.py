"""The redactor masks every form a secret takes in a file the harness writes, finds secrets by
their variable's name and by their token format, and leaves short common values alone."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from kfm_conformance.profile import load_profile
from kfm_conformance.redact import (
    MASK,
    Redactor,
    base64_forms,
    is_maskable,
    is_sensitive_name,
    sensitive_values,
)
from kfm_conformance.report.writers import redact_file

SECRET = 'kfm-s3cr3t/"value" +&=?<ü>'  # characters every encoding treats differently
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
FINE_GRAINED = "github_pat_11ABCDEFG0123456789abc_" + "x" * 59
AWS = "AKIAIOSFODNN7EXAMPLE"
SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
GITLAB = "glpat-abcdefghij0123456789"


def forms_of(secret: str) -> dict[str, str]:
    """Every encoding in which a secret can reach a report, as written by the usual tools."""
    raw = secret.encode()
    forms = {
        "literal": secret,
        "json": json.dumps(secret)[1:-1],
        "json-unicode": json.dumps(secret, ensure_ascii=False)[1:-1],
        "xml": html.escape(secret),
        "quote": quote(secret, safe=""),
        "quote-path": quote(secret),
        "quote_plus": quote_plus(secret),
    }
    for offset in range(3):
        for name, encode in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            # the secret inside a larger string, starting `offset` bytes in
            forms[f"{name}-offset-{offset}"] = encode(b"x" * offset + raw + b"tail").decode()
    forms["basic-auth"] = "Basic " + base64.b64encode(b"user:" + raw).decode()
    return forms


@pytest.mark.parametrize("form", sorted(forms_of(SECRET)))
def test_every_form_of_a_secret_is_masked(form: str) -> None:
    text = forms_of(SECRET)[form]
    masked = Redactor([SECRET]).redact_text(f"before {text} after")
    assert MASK in masked
    assert masked.startswith("before ") and masked.endswith(" after")
    plain = [f for name, f in forms_of(SECRET).items() if not name.startswith(("b64", "basic"))]
    for leftover in [*plain, *base64_forms(SECRET.encode())]:
        assert leftover not in masked, (form, leftover, masked)


@pytest.mark.parametrize("offset", [0, 1, 2])
@pytest.mark.parametrize("length", [6, 7, 8, 20, 41])
def test_base64_of_a_secret_at_any_offset_keeps_no_run_of_it(offset: int, length: int) -> None:
    """What is left of a base64-encoded secret after masking holds at most the characters that
    mix its bits with its neighbours'."""
    secret = bytes(range(65, 65 + length))
    encoded = base64.b64encode(b"\xff" * offset + secret + b"\xfe\xfd").decode()
    stable = base64_forms(secret)
    assert any(form in encoded for form in stable)
    masked = Redactor([secret.decode()]).redact_text(encoded)
    assert MASK in masked
    left = len(masked) - len(MASK)
    assert left <= len(encoded) - (8 * length) // 6 + 2


def test_base64_forms_are_exactly_the_secrets_own_characters() -> None:
    secret = b"abcdefghij"
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode()
        other = base64.b64encode(b"\xff" * offset + secret).decode()
        # a stable form is the same whatever the neighbouring bytes are
        assert any(f in encoded and f in other for f in base64_forms(secret)), offset


@pytest.mark.parametrize("token", [GITHUB, FINE_GRAINED, AWS, SLACK, GITLAB, "gho_" + "z" * 36])
def test_known_token_formats_are_masked_wherever_they_appear(token: str) -> None:
    redactor = Redactor([])
    masked = redactor.redact_text(f"Authorization: token {token}\n{json.dumps({'t': token})}")
    assert token not in masked
    assert masked.count(MASK) == 2


def test_token_formats_do_not_mask_ordinary_text() -> None:
    text = "ghp_short AKIA1234 xoxb- glpat-abc a sha256 of 0123456789abcdef" * 3
    assert Redactor([]).redact_text(text) == text


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("KFM_API_TOKEN", True),
        ("GITHUB_TOKEN", True),
        ("db_password", True),
        ("OPENLINEAGE_API_KEY", True),
        ("MY_APIKEY", True),
        ("HTTP_AUTHORIZATION", True),
        ("SIGN_KEY_PASSPHRASE", True),
        ("LAKEFS_SECRET_ACCESS_KEY", True),
        ("GCP_SERVICE_ACCOUNT", True),
        ("GOOGLE_KEYFILE_DICT", True),
        ("SSH_PRIVATE_KEY", True),
        ("PATH", False),
        ("KFM_MAX_BYTES", False),
        ("HOME", False),
    ],
)
def test_sensitive_names_follow_airflows_list(name: str, sensitive: bool) -> None:
    assert is_sensitive_name(name) is sensitive


def test_sensitive_values_by_name_and_by_token_format() -> None:
    environ = {
        "KFM_API_TOKEN": "kfm-api-0123456789",
        "PATH": "/usr/bin",
        "NOTES": f"the deploy key is {GITHUB} (do not share)",
    }
    assert sensitive_values(environ) == sorted(["kfm-api-0123456789", GITHUB])


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("abc", False),
        ("true", False),
        ("None", False),
        ("1234", False),
        ("1234567", False),
        ("12345678", True),
        ("abcd", True),
        ("hunter2", True),
        ("   ab   ", False),
    ],
)
def test_short_and_common_values_are_not_masked(value: str, masked: bool) -> None:
    assert is_maskable(value) is masked
    report = json.dumps({"ok": True, "count": 1234, "value": value})
    redacted = Redactor([value]).redact_text(report)
    assert (redacted != report) is masked
    json.loads(redacted)  # a mask never breaks the JSON it lands in


def test_a_secret_that_contains_another_is_masked_whole() -> None:
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.redact_text("xx abcdefgh yy") == f"xx {MASK} yy"


def test_structured_redaction_masks_keys_and_values() -> None:
    redactor = Redactor([SECRET])
    data = {"headers": {"x": f"Bearer {SECRET}"}, SECRET: [SECRET, 3, None]}
    assert redactor.redact(data) == {"headers": {"x": f"Bearer {MASK}"}, MASK: [MASK, 3, None]}


def test_profile_secrets_come_from_every_source(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[pipeline]\nname="p"\ncommand=["x"]\noutput="o.parquet"\nsecret_env=["DECLARED"]\n'
        '[pipeline.env]\nDECLARED="declared-1"\nUPSTREAM_PASSWORD="profile-pw-2"\n'
        'PLAIN="not-a-secret"\n[lakefs]\nsecret_access_key_env="MY_LAKE_KEY"\n'
    )
    profile = load_profile(path)
    environ = {
        "GITHUB_TOKEN": GITHUB,
        "KFM_API_TOKEN": "harness-api-3",
        "MY_LAKE_KEY": "lake-key-4",
        "DECLARED": "declared-5",
        "HOME": "/home/someone",
        "SHORT_TOKEN": "ab",
    }
    values = profile.secret_values(environ)
    for expected in (
        "declared-1", "profile-pw-2", GITHUB, "harness-api-3", "lake-key-4", "declared-5",
    ):  # fmt: skip
        assert expected in values
    for absent in ("not-a-secret", "/home/someone", "ab"):
        assert absent not in values
    redactor = Redactor.for_profile(profile, environ=environ)
    assert redactor.redact_text(f"{GITHUB} harness-api-3") == f"{MASK} {MASK}"


def test_redact_file_masks_in_place_and_keeps_other_bytes(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    data = (
        b"<testcase>\xff\xfe undecodable bytes stay; "
        + html.escape(SECRET).encode()
        + b" and "
        + quote_plus(SECRET).encode()
        + b"</testcase>"
    )
    path.write_bytes(data)
    redact_file(path, Redactor([SECRET]))
    out = path.read_bytes()
    assert out.startswith(b"<testcase>\xff\xfe undecodable bytes stay; ***")
    assert out.count(b"***") == 2
    assert len(out) < len(data)


def test_a_tail_cut_through_a_secret_shows_no_piece_of_it() -> None:
    secret = "kfm-secret-0123456789abcdef"
    redactor = Redactor([secret])
    tail = secret[-12:] + " and then " + "x" * 2000 + " last words " + secret[:9]
    masked = redactor.redact_text(tail)
    assert masked.startswith(f"{MASK} and then ") and masked.endswith(f" last words {MASK}")
    short = secret[-12:] + " short text"  # not a bounded tail: left as it is
    assert redactor.redact_text(short) == short
