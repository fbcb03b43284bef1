"""`localllm auth`: UI users and API keys (stored hashed in Settings.auth_path)."""

from __future__ import annotations

import argparse
import getpass
import sys

from localllm.cli.output import print_json
from localllm.config import Settings
from localllm.server.auth import AuthStore


def cmd_auth(settings: Settings, args: argparse.Namespace) -> int:
    store = AuthStore(settings.auth_path)
    action = args.auth_command
    if action == "add-user":
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"password for {args.name}: ")
        store.add_user(args.name, password)
        print(f"user {args.name} added: the app now asks for a login")
    elif action == "add-key":
        key = store.add_key(args.name)
        print(key)
        print(
            "this key is shown once; send it as `Authorization: Bearer KEY` to /v1/...",
            file=sys.stderr,
        )
    elif action == "rm-user":
        store.remove("users", args.name)
        print(f"user {args.name} removed")
    elif action == "rm-key":
        store.remove("keys", args.name)
        print(f"key {args.name} removed")
    else:
        listing = {"users": store.users(), "keys": store.keys(), "file": str(settings.auth_path)}
        if args.json:
            print_json(listing)
        else:
            print(f"users: {', '.join(listing['users']) or 'none'}")
            print(f"API keys: {', '.join(listing['keys']) or 'none'}")
            if not listing["users"] and not listing["keys"]:
                print("no login: fine on 127.0.0.1, add a user before serving on a network")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser("auth", help="UI users and API keys (none: no login)")
    auth.add_argument("--json", action="store_true", help="one JSON object on stdout (list)")
    actions = auth.add_subparsers(dest="auth_command")
    user = actions.add_parser("add-user", help="add or reset a UI user")
    user.add_argument("name")
    user.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    key = actions.add_parser("add-key", help="create an API key (printed once)")
    key.add_argument("name")
    for action in ("rm-user", "rm-key"):
        actions.add_parser(action).add_argument("name")
    auth.set_defaults(func=cmd_auth)
