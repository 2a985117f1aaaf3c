"""Users and the audit log of the study store: argon2 password hashes, roles, audit rows.

Passwords are hashed with Argon2id (RFC 9106) by ``argon2-cffi``'s
:class:`argon2.PasswordHasher` with its default parameters; only the PHC hash
string is stored. Verification is done by the same library (constant time).
"""

from __future__ import annotations

import datetime as _dt
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from cxrtriage.store.models import ROLES

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = [
    "ROLES",
    "UserError",
    "MIN_PASSWORD_LENGTH",
    "check_username",
    "hash_password",
    "verify_password",
    "needs_rehash",
    "utc_now",
]

#: Shortest accepted password, characters (NIST SP 800-63B 5.1.1.2: at least 8).
MIN_PASSWORD_LENGTH = 8

_USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


class UserError(ValueError):
    """A bad user name, password or role, or an unknown or duplicate user; the message says which."""


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


def utc_now() -> str:
    """Current UTC time, ISO 8601 with milliseconds (sorts chronologically as text)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def check_username(username: str) -> str:
    """Return ``username`` if it is 1-64 characters of ``[A-Za-z0-9._@-]``, else raise :class:`UserError`."""
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise UserError(f"user name {str(username)[:70]!r}: 1-64 characters of letters, digits and . _ @ - expected")
    return username


def hash_password(password: str) -> str:
    """Argon2id hash of a password (PHC string, salt included).

    Parameters
    ----------
    password : str
        At least :data:`MIN_PASSWORD_LENGTH` characters, at most 1024.

    Returns
    -------
    str
        ``$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>`` (parameters from ``argon2-cffi``'s defaults).

    Raises
    ------
    UserError
        Password too short or too long.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise UserError("password too long: at most 1024 characters")
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches the stored Argon2 hash (False for any mismatch or malformed hash)."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    if len(password) > 1024:
        return False
    try:
        return _hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than the current defaults."""
    return _hasher().check_needs_rehash(password_hash)
