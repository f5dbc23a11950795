"""The local endpoint's saved state: one snapshot of the live stacks, restored at the next start.

- Written atomically (temporary file, fsync, rename, folder fsync) after every mutating request, only when
  it changed. A snapshot that cannot be written (disk full, read-only folder) leaves the previous one as it
  was; the failure is a notice (`phasedoit local status`, the next deploy) until a later save succeeds,
  which is tried after every request and at stop.
- NoEcho parameter values are not stored in clear: each is encrypted (Fernet: AES-128-CBC and HMAC-SHA256)
  with a key derived from the endpoint's secret key, which lives in `credentials.json`, not in the
  snapshot. A snapshot copied elsewhere (a bug report, a backup) holds no NoEcho value; a snapshot whose
  credentials were deleted restores every stack but those with NoEcho parameters, which are reported.
- A snapshot that cannot be read (truncated, not JSON, another version) is set aside, renamed
  `stacks.json.unreadable-<time>`, never overwritten, and the endpoint starts with no stacks.
- Stacks are restored exporters before importers (each entry's exports and imports are read from its
  template with phasedoit.templates), each create replaying the random seed of the original so that ids and
  generated names come back the same. Each restored stack is verified (status, outputs computable); one
  that fails is removed from moto and its saved entry kept in `stacks.json.unrestored-<time>`, so that what
  the endpoint reports is what exists.

Runs in the server process.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import heapq
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from phasedoit import yamlfile
from phasedoit.local import SNAPSHOT_VERSION, UNREADABLE, UNRESTORED, Paths, snapshot_problem
from phasedoit.local_exports import (
    all_backends,
    cloudformation_backends,
    discard_stacks,
    pseudo_values,
    template_dependencies,
)
from phasedoit.local_files import read_json, set_aside, write_new_private, write_private
from phasedoit.templates import Dependencies

NO_KEY = "its NoEcho parameter values cannot be decrypted (the endpoint's credentials were replaced)"


def _moto_random() -> Any:
    # moto is imported by the server process only: it is optional, and slow to import (~0.7 s)
    from moto.moto_api._internal import mock_random

    return mock_random


def fresh_seed(seed: int | None = None) -> int:
    seed = int.from_bytes(os.urandom(8), "big") if seed is None else seed
    _moto_random().seed(seed)
    return seed


def live_stacks() -> Iterator[Any]:
    for backend in all_backends():
        yield from list(backend.stacks.values())


def no_echo_keys(stack: Any) -> set[str]:
    declared = stack.template_dict.get("Parameters") if isinstance(stack.template_dict, dict) else None
    if not isinstance(declared, dict):
        return set()
    return {
        name
        for name, spec in declared.items()
        if isinstance(spec, dict) and str(spec.get("NoEcho", "false")).lower() == "true"
    }


class Secrets:
    """Encrypts NoEcho values for the snapshot; the same value keeps the same token (a stable snapshot)."""

    def __init__(self, secret_key: str) -> None:
        from cryptography.fernet import Fernet  # a dependency of moto's

        digest = hashlib.sha256(b"phasedoit local snapshot\0" + secret_key.encode()).digest()
        self.fernet = Fernet(base64.urlsafe_b64encode(digest))
        self.tokens: dict[tuple[str, str], tuple[str, str]] = {}

    def encrypt(self, stack_id: str, key: str, value: str) -> str:
        known = self.tokens.get((stack_id, key))
        if known is not None and known[0] == value:
            return known[1]
        token = self.fernet.encrypt(value.encode()).decode()
        self.tokens[(stack_id, key)] = (value, token)
        return token

    def decrypt(self, token: str) -> str:
        return self.fernet.decrypt(token.encode()).decode()


class Snapshots:
    """The stacks of every account and region, saved as one bounded file: one entry per live stack."""

    def __init__(self, paths: Paths, secret_key: str) -> None:
        self.paths = paths
        self.path = paths.snapshot
        self.secrets = Secrets(secret_key)
        # moto's random is seeded before each CreateStack; replaying the seed on restore gives the
        # same stack id and the same generated resource names, hence the same outputs and exports
        self.seeds: dict[str, int] = {}
        self.written = b""
        self.count = 0
        self.save_error: str | None = None
        self.unrestored: bytes | None = None  # entries not restored, to be kept aside before a save

    def entries(self) -> list[dict[str, Any]]:
        stacks = [stack for stack in live_stacks() if isinstance(stack.template, str)]
        # a change set's placeholder (REVIEW_IN_PROGRESS) has no template yet: nothing to restore
        stacks.sort(key=lambda stack: stack.creation_time)
        return [self._entry(stack) for stack in stacks]

    def _entry(self, stack: Any) -> dict[str, Any]:
        hidden = no_echo_keys(stack)
        return {
            "account": stack.account_id,
            "region": stack.region_name,
            "name": stack.name,
            "template": stack.template,
            "parameters": {k: v for k, v in stack.parameters.items() if k not in hidden},
            "secret_parameters": {
                k: self.secrets.encrypt(stack.stack_id, k, str(v))
                for k, v in stack.parameters.items()
                if k in hidden
            },
            "tags": dict(stack.tags),
            "notification_arns": list(stack.notification_arns),
            "role_arn": stack.role_arn,
            "termination_protection": bool(stack.enable_termination_protection),
            "timeout_in_minutes": stack.timeout_in_minutes,
            "policy": stack.policy,
            "status": stack.status,
            "status_reason": getattr(stack, "status_reason", None),
            "created": stack.creation_time.isoformat(),
            "seed": self.seeds.get(stack.stack_id),
        }

    def save(self) -> None:
        """Write the snapshot if it changed (or if the last write failed); a failure is kept, not raised."""
        entries = self.entries()
        encoded = json.dumps({"version": SNAPSHOT_VERSION, "stacks": entries}, sort_keys=True).encode()
        self.count = len(entries)
        if encoded == self.written and self.save_error is None:
            return  # most mutations of a deploy leave nothing new to write
        try:
            if self.unrestored is not None:  # kept aside before the snapshot that no longer holds them
                write_new_private(self._aside_path(UNRESTORED), self.unrestored)
                self.unrestored = None
            write_private(self.path, encoded)
        except OSError as error:
            if self.save_error is None:
                print(f"cannot save {self.path}: {error}", flush=True)
            self.save_error = error.strerror or str(error)
            return
        if self.save_error is not None:
            print(f"saved {self.path} again", flush=True)
        self.written = encoded
        self.save_error = None

    def _aside_path(self, why: str) -> Any:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return self.path.with_name(f"{self.path.name}.{why}-{stamp}")

    def notice(self) -> str | None:
        if self.save_error is None:
            return None
        return (
            f"local endpoint: cannot save its stacks to {self.path} ({self.save_error}); the last saved"
            " state is kept, and what changed since is lost if it stops before a save succeeds"
        )

    @contextmanager
    def seeded_create(self) -> Iterator[list[str]]:
        """Around a CreateStack: remember the seed of the stack(s) it creates; yields their ids."""
        before = {stack.stack_id for stack in live_stacks()}
        created: list[str] = []
        seed = fresh_seed()
        try:
            yield created
        finally:
            created += [stack.stack_id for stack in live_stacks() if stack.stack_id not in before]
            self.seeds.update(dict.fromkeys(created, seed))
            fresh_seed()  # what follows must not repeat what follows the restored create

    # ------------------------------------------------------------------------------------- restore

    def restore(self) -> int:
        """Recreate the saved stacks; the number restored."""
        problem = snapshot_problem(self.path)
        if problem is not None:
            aside = set_aside(self.path, UNREADABLE)
            print(f"{self.path.name}: {problem}; kept as {aside.name}, not restored", flush=True)
            return 0
        data = read_json(self.path)
        if data is None:
            return 0
        failed = []
        for entry in restore_order([e for e in data["stacks"] if isinstance(e, dict)], self.secrets):
            reason = self._restore_one(entry)
            if reason is not None:
                print(f"restore {entry.get('name')} ({entry.get('region')}): {reason}", flush=True)
                failed.append({**entry, "reason": reason})
        if failed:
            kept = {"version": SNAPSHOT_VERSION, "stacks": failed}
            self.unrestored = json.dumps(kept, sort_keys=True).encode()
        for backend in all_backends():  # listed in creation order again, as before the restart
            ordered = sorted(backend.stacks.items(), key=lambda item: item[1].creation_time)
            backend.stacks.clear()
            backend.stacks.update(ordered)
        fresh_seed()
        self.save()
        return self.count

    def _restore_one(self, entry: dict[str, Any]) -> str | None:
        """Create the stack of a saved entry; why it could not be, or None."""
        try:
            parameters = self._parameters(entry)
            backend = cloudformation_backends()[entry["account"]][entry["region"]]
            name = entry["name"]
        except (KeyError, TypeError, ValueError) as error:
            return f"unreadable entry: {type(error).__name__}: {error}"
        except _InvalidToken:
            return NO_KEY
        before = set(backend.stacks)
        # a stack created from a change set has no seed yet: it gets one now, stable from then on
        seed = fresh_seed() if entry.get("seed") is None else fresh_seed(entry["seed"])
        reason = None
        try:
            backend.create_stack(
                name=name,
                template=entry["template"],
                parameters=parameters,
                notification_arns=entry.get("notification_arns", []),
                tags=entry.get("tags", {}),
                role_arn=entry.get("role_arn"),
                enable_termination_protection=entry.get("termination_protection", False),
                timeout_in_mins=entry.get("timeout_in_minutes"),
                stack_policy_body=entry.get("policy"),
            )
        except Exception as error:  # moto's refusal or failure: this stack only, the rest are restored
            reason = moto_error_text(error)
        created = [stack_id for stack_id in backend.stacks if stack_id not in before]
        reason = reason or _verify(backend, created)
        if reason is not None:
            discard_stacks(created)
            return reason
        stack = backend.stacks[created[0]]
        stack.status = entry.get("status", stack.status)
        stack.status_reason = entry.get("status_reason")
        stack.creation_time = datetime.datetime.fromisoformat(entry["created"])
        self.seeds[stack.stack_id] = seed
        return None

    def _parameters(self, entry: dict[str, Any]) -> dict[str, str]:
        hidden = entry.get("secret_parameters") or {}
        try:
            clear = {key: self.secrets.decrypt(token) for key, token in hidden.items()}
        except Exception as error:
            raise _InvalidToken from error
        return {**entry.get("parameters", {}), **clear}


class _InvalidToken(Exception):
    pass


def _verify(backend: Any, created: list[str]) -> str | None:
    """Why the stack just restored is not what was saved, or None."""
    if len(created) != 1:
        return "moto created no stack"
    stack = backend.stacks[created[0]]
    if stack.status != "CREATE_COMPLETE":
        return f"moto left it {stack.status}"
    try:
        stack.outputs  # noqa: B018 - computed on access: a failed resource makes it raise
    except Exception as error:
        return f"its outputs cannot be computed: {moto_error_text(error)}"
    return None


def moto_error_text(error: BaseException) -> str:
    """moto's own words: its HTTP errors carry them as `message`, other exceptions as their text."""
    message = getattr(error, "message", None)
    return f"{type(error).__name__}: {message if isinstance(message, str) and message else error}"


def parse_template(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        pass
    try:
        return yaml.load(body, Loader=yamlfile.CloudFormationLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError:
        return None


def restore_order(entries: list[dict[str, Any]], secrets: Secrets) -> list[dict[str, Any]]:
    """Exporters before their importers; otherwise (and within a cycle) the saved order, oldest first."""
    exports: dict[tuple[Any, Any, str], int] = {}
    imports: list[frozenset[str]] = []
    for index, entry in enumerate(entries):
        found = _entry_dependencies(entry, secrets)
        imports.append(found.imports)
        for name in found.exports:
            exports.setdefault((entry.get("account"), entry.get("region"), name), index)
    needs: list[set[int]] = [set() for _ in entries]
    for index, entry in enumerate(entries):
        for name in imports[index]:
            exporter = exports.get((entry.get("account"), entry.get("region"), name))
            if exporter is not None and exporter != index:
                needs[index].add(exporter)
    return [entries[index] for index in _topological(needs)]


def _entry_dependencies(entry: dict[str, Any], secrets: Secrets) -> Dependencies:
    template = parse_template(str(entry.get("template", "")))
    if not isinstance(template, dict):
        return Dependencies()
    try:
        hidden = {k: secrets.decrypt(v) for k, v in (entry.get("secret_parameters") or {}).items()}
    except Exception:  # restored without its NoEcho values it fails anyway; it still has a place
        hidden = {}
    parameters = {**(entry.get("parameters") or {}), **hidden}
    name, region, account = str(entry.get("name")), str(entry.get("region")), str(entry.get("account"))
    return template_dependencies(template, pseudo_values(name, region, account, "", parameters), name)


def _topological(needs: list[set[int]]) -> list[int]:
    """Kahn's algorithm, the smallest index first among those ready; a cycle's members in index order."""
    waiting = [set(n) for n in needs]
    users: list[list[int]] = [[] for _ in needs]
    for index, required in enumerate(waiting):
        for other in required:
            users[other].append(index)
    ready = [index for index, required in enumerate(waiting) if not required]
    heapq.heapify(ready)
    order: list[int] = []
    placed = set()
    while len(order) < len(needs):
        if not ready:  # a cycle: take the oldest left, as before
            stuck = min(index for index in range(len(needs)) if index not in placed)
            waiting[stuck].clear()
            heapq.heappush(ready, stuck)
        index = heapq.heappop(ready)
        if index in placed:
            continue
        placed.add(index)
        order.append(index)
        for user in users[index]:
            waiting[user].discard(index)
            if not waiting[user] and user not in placed:
                heapq.heappush(ready, user)
    return order
