"""`phases.yml`: its pydantic schema, and the checks that need the app's folders."""

from __future__ import annotations

import fnmatch
import os
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from phasedoit import yamlfile
from phasedoit.errors import PhasedoitError
from phasedoit.serverless import CONFIG_NAMES as SERVERLESS_NAMES
from phasedoit.templates import TEMPLATE_NAMES

CONFIG_NAME = "phases.yml"
DEFAULT_STAGE = "dev"
DEFAULT_STACK_NAME = "{service}-{stage}"
NAME_RE = re.compile(r"[a-z][a-z0-9-]*")
STAGE_PATTERN_RE = re.compile(r"[a-z*][a-z0-9*-]*")
SERVICE_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
STACK_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,127}")
REGION_RE = re.compile(r"[a-z]{2,4}(-[a-z]+)+-\d{1,2}")  # us-east-1, us-gov-west-1, eusc-de-east-1
ACCOUNT_RE = re.compile(r"\d{12}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# A template wins over a serverless.yml in the same folder.
DEFINITION_NAMES = TEMPLATE_NAMES + SERVERLESS_NAMES
# Settings phasedoit passes to CloudFormation itself: the Serverless Framework has its own for a stack.
CLOUDFORMATION_ONLY = ("stack_name", "parameters", "tags", "capabilities")
SERVERLESS_ONLY = ("deploy_with",)
Capability = Literal["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
# phases: a phase starts when the one before it is done; dependencies: a service, when its upstreams are
Schedule = Literal["phases", "dependencies"]
SCHEDULES: tuple[Schedule, ...] = ("phases", "dependencies")


def _check_name(value: str, what: str, pattern: re.Pattern[str], rule: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid {what} name ({rule})")
    return value


def check_app_name(value: str) -> str:
    return _check_name(value, "app", NAME_RE, "lowercase letters, digits and '-', starting with a letter")


def check_stage_name(value: str) -> str:
    return _check_name(value, "stage", NAME_RE, "lowercase letters, digits and '-', starting with a letter")


def check_stage_key(value: str) -> str:
    """A key of `stages:`: a stage's name, or a pattern of names such as `pr-*` (each `*` any text)."""
    if "*" not in value:
        return check_stage_name(value)
    if not STAGE_PATTERN_RE.fullmatch(value):
        rule = "lowercase letters, digits, '-' and '*', starting with a letter or '*'"
        raise ValueError(f"{value!r} is not a valid stage pattern ({rule})")
    return value


def check_service_name(value: str) -> str:
    return _check_name(value, "service", SERVICE_RE, "letters, digits and '-', starting with a letter")


def check_placeholders(value: str, allowed: tuple[str, ...]) -> str:
    """`value` is formatted with `allowed` later: any other `{name}` is an error now, not a traceback then."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as e:
        raise ValueError(f"{value!r}: {e}") from None
    for name in names:
        if name not in allowed:
            use = ", ".join(f"{{{a}}}" for a in allowed)
            raise ValueError(f"unknown placeholder {{{name}}} (use {use})")
    return value


def _brief(value: Any, limit: int = 60) -> str:
    """A value as a message shows it: a whole mapping of services is no help on one line."""
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[: limit - 3]}..."


def _text(value: Any) -> str:
    # phases.yml keeps tags' and parameters' plain scalars as written (`_aws_text`); `512` and `true` may
    # still come as numbers and booleans from elsewhere, and CloudFormation wants their text
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(f"expected a string, number or boolean, got {_brief(value)}")


@dataclass(frozen=True)
class FromEnv:
    """`{env: NAME}`: a parameter's value read from the environment when a stage is planned (secrets)."""

    env: str


def _parameter_value(value: Any) -> str | FromEnv:
    if isinstance(value, dict) and "env" in value:
        name = value["env"]
        if len(value) > 1:
            raise ValueError(f"{{env: NAME}} takes no other key, got {_brief(value)}")
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            raise ValueError(f"{{env: NAME}} takes the name of an environment variable, got {_brief(name)}")
        return FromEnv(name)
    if isinstance(value, list):
        return ",".join(_text(item) for item in value)  # a CommaDelimitedList
    return _text(value)


Text = Annotated[str, BeforeValidator(_text)]
ParameterValue = Annotated[str | FromEnv, BeforeValidator(_parameter_value)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ServiceSettings(_Model):
    path: str | None = None
    template: str | None = None
    stack_name: str | None = None
    parameters: dict[str, ParameterValue] = {}
    tags: dict[str, Text] = {}
    capabilities: list[Capability] = []
    exclude: list[str] = []  # file patterns that are not part of what the service deploys
    watch: list[str] = []  # paths (from the app folder) whose files are part of what it deploys: `libs/`
    # a template whose values CloudFormation reads when it deploys (SSM, secrets) deploys on every run
    deploy_time_values: Literal["redeploy", "ignore"] = "redeploy"
    # a Serverless Framework service: packaged by the framework and deployed by phasedoit, or deployed by
    # the framework itself (`serverless deploy`: for plugins that act at deploy time)
    deploy_with: Literal["phasedoit", "framework"] = "phasedoit"
    after: list[str] = []  # services it deploys after, beyond those it imports from (checked by _resolve)

    @field_validator("stack_name")
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        return value if value is None else check_placeholders(value, ("app", "service", "stage"))


class StageSettings(_Model):
    region: str | None = None
    account: str | None = None
    endpoint: str | None = None
    parameters: dict[str, ParameterValue] = {}
    # `remove` asks first (or needs yes=1 without a terminal); by default, a stage bound to an account
    protected: bool | None = None
    artifacts_bucket: str | None = None  # where code and large templates go; default: one phasedoit creates

    @property
    def is_protected(self) -> bool:
        return self.protected if self.protected is not None else self.account is not None

    @field_validator("artifacts_bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and (not BUCKET_RE.fullmatch(value) or ".." in value):
            raise ValueError(
                f"{value!r} is not an S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-')"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not REGION_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not an AWS region name (like eu-west-1)")
        return value

    @field_validator("account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not ACCOUNT_RE.fullmatch(value):
            raise ValueError("an AWS account id is 12 digits")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and value != "local" and not re.fullmatch(r"https?://\S+", value):
            raise ValueError(f"{value!r} is neither 'local' nor an http(s) URL")
        return value


ServiceName = Annotated[str, AfterValidator(check_service_name)]
StageKey = Annotated[str, AfterValidator(check_stage_key)]


class PhaseSettings(_Model):
    name: str | None = None
    services: list[ServiceName] = Field(min_length=1)


class ConfigFile(_Model):
    app: str
    phases: list[PhaseSettings] | None = Field(default=None, min_length=1)  # None: computed from imports
    services: dict[ServiceName, ServiceSettings] = {}
    stages: dict[StageKey, StageSettings] = {}
    schedule: Schedule = "phases"
    # exports of other apps this one imports; may use {stage}
    external_exports: list[Annotated[str, AfterValidator(lambda v: check_placeholders(v, ("stage",)))]] = []
    # the Serverless Framework's command (on PATH) or file (from the app folder); default: found per service
    framework: str | None = None

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        return check_app_name(value)

    @field_validator("phases", mode="before")
    @classmethod
    def _plain_lists(cls, value: Any) -> Any:
        # `- [a, b]` is shorthand for `- services: [a, b]`
        if isinstance(value, list):
            return [{"services": phase} if isinstance(phase, list) else phase for phase in value]
        return None if value == "auto" else value


@dataclass(frozen=True)
class Phase:
    number: int  # from 1, as users count
    name: str | None
    services: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"phase {self.number} {self.name!r}" if self.name else f"phase {self.number}"


@dataclass(frozen=True)
class Service:
    name: str
    folder: Path
    template: Path
    settings: ServiceSettings

    @property
    def serverless(self) -> bool:
        """A Serverless Framework service: the Serverless Framework deploys it, not phasedoit."""
        return self.template.name in SERVERLESS_NAMES

    def stack_name(self, app: str, stage: str) -> str:
        pattern = self.settings.stack_name or DEFAULT_STACK_NAME
        name = pattern.format(app=app, service=self.name, stage=stage)
        if not STACK_RE.fullmatch(name):
            where = f"{CONFIG_NAME}: services.{self.name}.stack_name"
            raise PhasedoitError(
                f"{where}: {name!r} is not a valid CloudFormation stack name"
                " (letters, digits and '-', starting with a letter, at most 128)"
            )
        return name


@dataclass(frozen=True)
class App:
    root: Path
    name: str
    phases: tuple[Phase, ...]  # empty: computed for each stage from the imports
    services: dict[str, Service]
    stages: dict[str, StageSettings] = field(default_factory=dict)  # by name or pattern (`pr-*`)
    external_exports: tuple[str, ...] = ()
    framework: str | None = None  # phases.yml's `framework:`
    schedule: Schedule = "phases"

    def stage_settings(self, stage: str) -> StageSettings | None:
        """The settings of `stage`: its own entry, else the first pattern that matches it."""
        if stage in self.stages:
            return self.stages[stage]
        return next((s for key, s in self.stages.items() if fnmatch.fnmatchcase(stage, key)), None)

    def shown(self, path: Path) -> str:
        """A path as the user knows it: relative to the app folder."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def load_config(path: Path) -> App:
    """Read and check `path`; every problem found is one line of the PhasedoitError raised."""
    raw = yamlfile.load(path, path.name, text_at=_aws_text)
    if not isinstance(raw, dict):
        raise PhasedoitError(f"{path.name}: expected a mapping with 'app' and 'phases'")
    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as e:
        raise PhasedoitError("\n".join(_render(path.name, raw, err) for err in e.errors())) from None
    app, problems = _resolve(path.parent, parsed, raw)
    if problems:
        raise PhasedoitError("\n".join(f"{path.name}: {problem}" for problem in problems))
    return app


def _aws_text(path: yamlfile.DocumentPath) -> bool:
    """Tags and parameter values are strings to AWS: `version: 1.10` is '1.10', `mode: 0755` is '0755'."""
    match path:
        case ("services", _, "tags" | "parameters", _, *_) | ("stages", _, "parameters", _, *_):
            return True
    return False


def check_region_from_env(environ: Mapping[str, str]) -> None:
    """The region an AWS variable sets is a region name (botocore answers anything else with a traceback)."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = environ.get(name)
        if value:  # the first one set is the one used, as in `target`
            if not REGION_RE.fullmatch(value):
                raise PhasedoitError(f"{name}: {value!r} is not an AWS region name (like eu-west-1)")
            return


def _render(shown: str, raw: Any, error: Any) -> str:
    return f"{shown}: {_where(raw, error['loc'])}: {_message(error)}"


def _where(raw: Any, loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    node = raw
    for key in loc:
        if key == "[key]" or (key == "services" and isinstance(node, list)):
            continue  # a phase written as a plain list has no `services` key
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}" if parts else key)
        node = _child(node, key)
    return "".join(parts) or "(top level)"


def _child(node: Any, key: int | str) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and key < len(node):
        return node[key]
    return None


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "too_short": "must not be empty",
}


def _message(error: Any) -> str:
    kind = error["type"]
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    got = _brief(error["input"])
    if kind in ("model_type", "dict_type"):
        if len(error["loc"]) == 2 and error["loc"][0] == "phases":
            return f"expected a list of services or a mapping with 'services', got {got}"
        return f"expected a mapping, got {got}"
    if kind == "literal_error":
        return f"expected {error['ctx']['expected']}, got {got}"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}, got {got}"


def _resolve(root: Path, parsed: ConfigFile, raw: dict[str, Any]) -> tuple[App, list[str]]:
    problems: list[str] = []
    services: dict[str, Service] = {}
    named: set[str] = set()
    for name, where in _listed_services(root, parsed, raw, problems):
        named.add(name)
        found = _find_service(root, name, parsed.services.get(name, ServiceSettings()), where)
        if isinstance(found, str):
            problems.append(found)
        else:
            services[name] = found
    listed = {name for phase in parsed.phases or () for name in phase.services}
    if parsed.phases:
        problems += [f"services.{name}: not in any phase" for name in parsed.services if name not in listed]
        problems += _duplicate_phase_names(parsed.phases)
    phases = tuple(
        Phase(p + 1, phase.name, tuple(phase.services)) for p, phase in enumerate(parsed.phases or ())
    )
    problems += _unknown_after(root, parsed, named)
    app = App(
        root,
        parsed.app,
        phases,
        services,
        dict(parsed.stages),
        tuple(parsed.external_exports),
        parsed.framework,
        parsed.schedule,
    )
    if not problems:
        problems += _stack_collisions(app)
    return app, problems


def _stack_collisions(app: App) -> list[str]:
    """Two services, or one service on two stages, that would deploy to one stack would overwrite it.

    Checked for the stages phases.yml lists (or the default stage); a Serverless Framework service names
    its stack in its serverless.yml, which planning checks for the stage it plans.
    """
    owners: dict[str, tuple[str, str]] = {}
    problems = []
    for stage in [s for s in app.stages if "*" not in s] or [DEFAULT_STAGE]:  # names, not patterns
        for service in app.services.values():
            if service.serverless:
                continue
            try:
                stack = service.stack_name(app.name, stage)
            except PhasedoitError as e:
                return [str(e).removeprefix(f"{CONFIG_NAME}: ")]
            if stack in owners:
                other, other_stage = owners[stack]
                problems.append(
                    f"services.{service.name}: its stack on stage {stage}, {stack}, is also the stack of"
                    f" {other} on stage {other_stage}"
                )
            else:
                owners[stack] = (service.name, stage)
    return problems


def _listed_services(
    root: Path, parsed: ConfigFile, raw: dict[str, Any], problems: list[str]
) -> Iterator[tuple[str, str]]:
    """Each service once, with where it is named; without phases: the services map's, then services/*."""
    if parsed.phases is None:
        found = {p.parent.name for n in DEFINITION_NAMES for p in root.glob(f"services/*/{n}")}
        names = [*parsed.services, *sorted(found - set(parsed.services))]
        if not names:
            problems.append(
                "phases: computed from the imports, but there are no services"
                " (no services/*/template.yml or serverless.yml)"
            )
        yield from ((name, f"services.{name}") for name in names)
        return
    seen: dict[str, str] = {}
    for p, (phase, raw_phase) in enumerate(zip(parsed.phases, raw["phases"], strict=True)):
        for s, name in enumerate(phase.services):
            where = f"phases[{p}][{s}]" if isinstance(raw_phase, list) else f"phases[{p}].services[{s}]"
            if name in seen:
                problems.append(f"{where}: service {name!r} is already in {seen[name]}")
            else:
                seen[name] = where
                yield name, where


def _find_service(root: Path, name: str, settings: ServiceSettings, where: str) -> Service | str:
    """The service, or the problem with it (located at `where` in phases, or in its settings)."""
    folder = root / (settings.path or f"services/{name}")
    shown = (Path(settings.path) if settings.path else Path("services", name)).as_posix()
    if settings.path:
        where = f"services.{name}.path"
    if _outside(root, folder):
        return f"{where}: {shown} is outside the app folder"
    if not folder.is_dir():
        return (
            f"{where}: no folder {shown}"
            if settings.path
            else f"{where}: unknown service {name!r} (no folder {shown})"
        )
    if settings.template:
        return _given_template(root, Service(name, folder, folder / settings.template, settings), shown)
    for candidate in DEFINITION_NAMES:
        if _present(folder / candidate):
            return _checked(root, Service(name, folder, folder / candidate, settings), shown)
    return (
        f"{where}: service {name!r} has no template in {shown}"
        " (template.yml, template.yaml, template.json or serverless.yml)"
    )


def _given_template(root: Path, service: Service, shown: str) -> Service | str:
    where, template = f"services.{service.name}.template", service.settings.template
    if _outside(root, service.template):
        return f"{where}: {template} is outside the app folder"
    if not _present(service.template):
        return f"{where}: no file {shown}/{template}"
    return _checked(root, service, shown)


def _outside(root: Path, path: Path) -> bool:
    """Does `path`, as written (`/dev`, `../x`), lead out of the app folder? A symlink in it is the user's."""
    return not Path(os.path.normpath(path)).is_relative_to(os.path.normpath(root))


def _present(path: Path) -> bool:
    # anything by that name, even a broken symlink or a FIFO: reading it then says what is wrong with it
    return path.exists() or path.is_symlink()


def _checked(root: Path, service: Service, shown: str) -> Service | str:
    """Watched paths exist; a Serverless Framework service names and configures its stack itself."""
    for i, path in enumerate(service.settings.watch):
        if _outside(root, root / path):
            return f"services.{service.name}.watch[{i}]: {path} is outside the app folder"
        if not (root / path).exists():
            return f"services.{service.name}.watch[{i}]: no file or folder {path}"
    if service.serverless:
        for key in CLOUDFORMATION_ONLY:
            if key in service.settings.model_fields_set:
                config = f"{shown}/{service.template.relative_to(service.folder).as_posix()}"
                return f"services.{service.name}.{key}: not used by a Serverless Framework service ({config})"
    else:
        for key in SERVERLESS_ONLY:
            if key in service.settings.model_fields_set:
                template = f"{shown}/{service.template.relative_to(service.folder).as_posix()}"
                return (
                    f"services.{service.name}.{key}: only for a Serverless Framework service, not {template}"
                )
    return service


def _unknown_after(root: Path, parsed: ConfigFile, named: set[str]) -> list[str]:
    def problem(other: str) -> str:
        if other in named:
            return "a service cannot deploy after itself"
        if parsed.phases and (root / "services" / other).is_dir():
            return f"{other!r} is in no phase (add it to one, or leave it out of after:)"
        return f"unknown service {other!r}"

    return [
        f"services.{name}.after[{i}]: {problem(other)}"
        for name, settings in parsed.services.items()
        for i, other in enumerate(settings.after)
        if other not in named or other == name
    ]


def _duplicate_phase_names(phases: list[PhaseSettings]) -> list[str]:
    problems = []
    first: dict[str, int] = {}
    for p, phase in enumerate(phases):
        if phase.name is not None and first.setdefault(phase.name, p) != p:
            problems.append(
                f"phases[{p}].name: phase name {phase.name!r} is already used by phases[{first[phase.name]}]"
            )
    return problems
