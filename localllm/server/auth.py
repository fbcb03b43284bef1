"""Who may use the app: UI users (scrypt-hashed passwords) and API keys (SHA-256-hashed), in one
JSON file. No users and no keys means no login, the right default on localhost."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from localllm.errors import LocalLLMError

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
KEY_PREFIX = "llk-"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class AuthError(LocalLLMError):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), dklen=32, n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(got, base64.b64decode(digest))


def hash_key(key: str) -> str:
    # API keys are long random strings: a fast hash is enough and keeps each request cheap.
    return hashlib.sha256(key.encode()).hexdigest()


def is_local(host: str | None) -> bool:
    return host is None or host in LOCAL_HOSTS


class AuthStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"users": {}, "keys": {}}
        except (OSError, ValueError) as e:
            raise AuthError(f"the access file {self.path} can't be read: {e}") from e
        return {"users": dict(data.get("users", {})), "keys": dict(data.get("keys", {}))}

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    @property
    def enabled(self) -> bool:
        data = self._read()
        return bool(data["users"] or data["keys"])

    def users(self) -> list[str]:
        return sorted(self._read()["users"])

    def keys(self) -> list[str]:
        return sorted(self._read()["keys"])

    def add_user(self, name: str, password: str) -> None:
        if not name.strip() or len(password) < 8:
            raise AuthError("a user needs a name and a password of at least 8 characters")
        with self._lock:
            data = self._read()
            data["users"][name] = {"password": hash_password(password), "created": time.time()}
            self._write(data)

    def add_key(self, name: str) -> str:
        """A new API key under `name`; the key itself is returned once and never stored."""
        if not name.strip():
            raise AuthError("an API key needs a name")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            data = self._read()
            data["keys"][name] = {"sha256": hash_key(key), "created": time.time()}
            self._write(data)
        return key

    def remove(self, kind: str, name: str) -> None:
        with self._lock:
            data = self._read()
            if name not in data[kind]:
                raise AuthError(f"no {kind[:-1]} named {name!r}")
            del data[kind][name]
            self._write(data)

    def check_user(self, name: str, password: str) -> bool:
        user = self._read()["users"].get(name)
        if user is None:
            check_password(password, hash_password("not a user"))  # same time either way
            return False
        return check_password(password, user["password"])

    def check_key(self, key: str) -> bool:
        digest = hash_key(key)
        return any(hmac.compare_digest(digest, k["sha256"]) for k in self._read()["keys"].values())
