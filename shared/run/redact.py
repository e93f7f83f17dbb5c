"""Secrets never printed: database passwords masked in every message fedaegis shows.

A ``--db-url`` such as ``postgresql+psycopg://user:PASSWORD@host/db`` reaches error
messages, logs and tracebacks; every text the CLI prints goes through :func:`mask_secrets`,
which hides the password of any URL in it, and any literal secret it was told about (the
password of the URL the user gave, in case a library quotes it outside a URL).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"  # what SQLAlchemy's ``render_as_string(hide_password=True)`` prints

# scheme://user:password@ -> scheme://user:***@  (the password may hold anything but '@' and whitespace)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?=@)")


def url_password(url: str | None) -> str | None:
    """The password in ``url`` (as written and decoded), or None."""
    if not url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:  # e.g. a bad port: the password is still there
        match = _URL_PASSWORD.search(url)
        password = match.group("password") if match else None
    return unquote(password) if password else None


def known_secrets(*urls: str | None) -> list[str]:
    """Passwords of ``urls`` and of ``$FEDAEGIS_DB_URL``, raw and percent-decoded."""
    found: list[str] = []
    for url in (*urls, os.environ.get("FEDAEGIS_DB_URL")):
        match = _URL_PASSWORD.search(url or "")
        for secret in (match.group("password") if match else None, url_password(url)):
            if secret and len(secret) >= 3 and secret not in found:
                found.append(secret)
    return found


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords and each of ``secrets`` replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
