"""``cxr users add|list|remove``: the people allowed to use ``cxr serve`` (a plugin of :mod:`cxrtriage.cli`).

Users live in the same database as the studies (``--data-dir`` /
``--database-url`` as for ``cxr serve``); passwords are stored as Argon2id
hashes only.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxrtriage.store import StudyStore

__all__ = ["register", "read_password"]

#: The roles of :data:`cxrtriage.store.models.ROLES`, repeated here so that building the ``cxr`` parser
#: does not import SQLAlchemy (an extra of ``[serve]``); a test checks that both agree.
_ROLES = ("uploader", "radiologist")


def _store(a: argparse.Namespace) -> StudyStore:
    from cxrtriage.store import StudyStore

    return StudyStore(a.data_dir, a.database_url)


def read_password(from_stdin: bool) -> str:
    """The new password: first line of stdin (``--password-stdin``) or typed twice at a hidden prompt.

    Raises
    ------
    ValueError
        Empty input or the two typed passwords differ.
    """
    if from_stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    else:
        pw = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != pw:
            raise ValueError("the two passwords differ")
    if not pw:
        raise ValueError("empty password")
    return pw


def _cmd_add(a: argparse.Namespace) -> int:
    from cxrtriage.store import UserError

    pw = read_password(a.password_stdin)
    store = _store(a)
    try:
        user = store.add_user(a.username, pw, a.role)
    except UserError as exc:
        print(f"cxr users add: error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"user {user.username} ({user.role}) added to {store.url.render_as_string(hide_password=True)}")
    return 0


def _cmd_list(a: argparse.Namespace) -> int:
    store = _store(a)
    try:
        users = store.users()
    finally:
        store.close()
    if not users:
        print("no users yet: add one with `cxr users add NAME --role radiologist`")
    for u in users:
        print(f"{u.username}\t{u.role}\t{u.created_at}")
    return 0


def _cmd_remove(a: argparse.Namespace) -> int:
    from cxrtriage.store import UserError

    store = _store(a)
    try:
        store.remove_user(a.username)
    except UserError as exc:
        print(f"cxr users remove: error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"user {a.username} removed")
    return 0


def _cmd_users(a: argparse.Namespace) -> int:
    return {"add": _cmd_add, "list": _cmd_list, "remove": _cmd_remove}[a.users_command](a)


def register(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add the ``users`` sub-command with ``add``, ``list`` and ``remove``."""
    p = sub.add_parser("users", help="users of `cxr serve`: add, list, remove (argon2 password hashes)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default="cxrtriage-data", help="as for `cxr serve` (default cxrtriage-data)")
    common.add_argument("--database-url", default=None, help="as for `cxr serve`")
    us = p.add_subparsers(dest="users_command", required=True)
    a = us.add_parser("add", parents=[common], help="add a user (password typed twice, or --password-stdin)")
    a.add_argument("username")
    a.add_argument("--role", choices=_ROLES, required=True, help="uploader, or radiologist (may sign reports off)")
    a.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    us.add_parser("list", parents=[common], help="list users and roles")
    r = us.add_parser("remove", parents=[common], help="remove a user (their audit log rows stay)")
    r.add_argument("username")
    commands["users"] = _cmd_users
