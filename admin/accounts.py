"""Staff accounts: password rules and Argon2 hashing (pwdlib), shared by the admin CLI
(``civicbot admin create-user``...) and the admin web app's sign-in.

Hashing and checking take a noticeable fraction of a second by design; the web app runs them
in a worker thread so that other requests go on meanwhile.
"""

from __future__ import annotations

import asyncio
import re
from functools import cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from storage.admin import EMAIL_MAX, Role

PASSWORD_MIN = 12
PASSWORD_MAX = 256
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@cache
def _hasher() -> PasswordHash:
    return PasswordHash((Argon2Hasher(),))


def password_problem(password: str) -> str | None:
    """Why a password can't be used, or None. Length is what makes a password strong (NCSC
    guidance): no rules about symbols, and passphrases welcome."""
    if len(password) < PASSWORD_MIN:
        return f"the password must be at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"the password must be {PASSWORD_MAX} characters or fewer"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in password):
        return "the password must not contain control characters"
    return None


def email_problem(email: str) -> str | None:
    email = email.strip()
    if len(email) > EMAIL_MAX:
        return f"the email address must be {EMAIL_MAX} characters or fewer"
    if not _EMAIL.match(email) or any(ord(ch) < 32 for ch in email):
        return f"{email!r} is not an email address"
    return None


def role_problem(role: str) -> str | None:
    if role not in {r.value for r in Role}:
        return f"the role must be one of {', '.join(r.value for r in Role)}"
    return None


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _hasher().verify(password, password_hash)
    except Exception:  # a malformed stored hash is a failed check, not a crash
        return False


@cache
def dummy_hash() -> str:
    """Checked against when the account does not exist, so an unknown email takes as long to
    refuse as a wrong password."""
    return hash_password("not a real password, only for timing")


async def verify_in_thread(password: str, password_hash: str | None) -> bool:
    """Check a password off the event loop; ``None`` (no such account) is always False,
    after the same work."""
    stored = password_hash if password_hash is not None else dummy_hash()
    ok = await asyncio.to_thread(verify_password, password, stored)
    return ok and password_hash is not None


async def hash_in_thread(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)
