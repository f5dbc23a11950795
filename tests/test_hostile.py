"""Hostile input: each case is refused with one whole line, exit status 1, and no CloudFormation call.

Every case of CASES runs in-process, through what the loader runs before doit takes over (the command-line
variables check, `config.load_config`, `planning.plan_stage`): pure functions that hold no AWS client, so
they can make no call. The cases marked `doit=True` also run as a user runs them: `doit -n 2 deploy` as a
subprocess on a copy of a one-service app, AWS_ENDPOINT_URL at a recording proxy in front of moto; each
asserts stdout, stderr and the exit status whole, and that the proxy saw no request at all. They are (14):
the alias bombs in phases.yml and in a template, 5,000-deep nesting in a template, a duplicate key in
phases.yml and in a JSON template, JSON NaN, !!binary, an unknown !Tag, phases.yml as a symlink to
/dev/zero, a template that is a FIFO, `path: /dev`, a mistyped and an empty doit variable, and
AWS_REGION='us-east-1; id'.

The odd files of a service's folder are no error: they are left out of its fingerprint with a warning,
checked at the end (in-process and through one real deploy).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from phasedoit import changes, variables
from phasedoit.config import load_config
from phasedoit.errors import PhasedoitError
from phasedoit.planning import plan_stage
from phasedoit.yamlfile import MAX_BYTES
from tests.conftest import CREDENTIALS, REPO, Moto, doit
from tests.faults import running_layer

PHASES = "app: tiny\nphases: [[api]]\n"
TEMPLATE = """\
Parameters:
  Stage: {Type: String}
Resources:
  Topic:
    Type: AWS::SNS::Topic
    Properties: {TopicName: !Sub '${Stage}-topic'}
"""
JSON_TEMPLATE = '{\n  "Resources": {\n    "Topic": {"Type": "AWS::SNS::Topic"}\n  }\n}\n'
YML, JSON = "services/api/template.yml", "services/api/template.json"
# A file's content, None to leave it out, or what makes it (a FIFO, a symlink) in the app folder given.
Content = str | bytes | None | Callable[[Path], None]


def laughs(indent: str = "") -> str:
    """The billion laughs, under 1.1 KB: nine lines, each list nine aliases of the line before."""
    lines = [f"{indent}l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def merged(indent: str = "") -> str:
    """The same bomb through merge keys: each mapping merges the one before nine times."""
    lines = [f"{indent}m0: &m0 {{a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9}}"]
    lines += [f"{indent}m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 9) + "]}" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def symlink(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def in_app(target: str) -> Callable[[Path], None]:
    """A symlink to `target`, a path inside the app folder."""
    return lambda path: path.symlink_to(path.parent / target)


def fifo(path: Path) -> None:
    os.mkfifo(path)


def folder(path: Path) -> None:
    path.mkdir()


def huge(text: str) -> Callable[[Path], None]:
    """`text` and then comments, past the most phasedoit reads."""

    def write(path: Path) -> None:
        path.write_bytes(text.encode() + b"#" * MAX_BYTES)

    return write


@dataclass(frozen=True)
class Case:
    id: str
    files: Mapping[str, Content]  # by path in the app folder, over the app's phases.yml and template.yml
    message: str  # the whole of what is printed, one line per problem
    doit: bool = False  # also run `doit -n 2 deploy` as a subprocess
    args: tuple[str, ...] = ()  # doit's command-line variables
    env: Mapping[str, str] = field(default_factory=dict)


BOMB = "holds more than 1,000,000 values once its aliases are expanded"
DEEP = "nested deeper than 100 levels"
REFUSED_TAG = "is not supported (only strings, numbers, booleans, lists and mappings)"
VARIABLES = "phasedoit knows stage, force, adopt, yes, schedule"

CASES = [
    # phases.yml
    Case("phases alias bomb", {"phases.yml": PHASES + laughs()}, f"phases.yml: line 9, column 5: {BOMB}", doit=True),
    Case("phases merge-key bomb", {"phases.yml": PHASES + merged()}, f"phases.yml: line 8, column 14: {BOMB}"),
    Case("phases alias to itself", {"phases.yml": PHASES + "x: &x [1, *x]\n"}, "phases.yml: line 3, column 4: holds an alias to itself"),
    Case("phases 5000 deep, flow", {"phases.yml": PHASES + "x: " + "[" * 5000 + "]" * 5000 + "\n"}, f"phases.yml: line 3, column 103: {DEEP}"),
    Case("phases 5000 deep, block", {"phases.yml": PHASES + "x:\n" + "- " * 5000 + "y\n"}, f"phases.yml: line 4, column 199: {DEEP}"),
    Case(
        "phases duplicate stage",
        {"phases.yml": PHASES + "stages:\n  dev: {endpoint: local}\n  prod: {region: eu-west-1}\n  dev: {region: eu-west-1}\n"},
        "phases.yml: line 6, column 3: duplicate key 'dev' (first at line 4)",
        doit=True,
    ),
    Case("phases duplicate app", {"phases.yml": PHASES + "app: other\n"}, "phases.yml: line 3, column 1: duplicate key 'app' (first at line 1)"),
    Case(
        "phases duplicate tag, quoted and not",
        {"phases.yml": PHASES + "services:\n  api:\n    tags: {on: a, 'on': b}\n"},
        "phases.yml: line 5, column 19: duplicate key 'on' (first at line 5)",
    ),
    Case("phases .inf", {"phases.yml": PHASES + "services: {api: {capabilities: [.inf]}}\n"}, "phases.yml: line 3, column 33: .inf is not a finite number (quote it if it is text)"),
    Case("phases !!binary", {"phases.yml": PHASES + "x: !!binary aGVsbG8=\n"}, f"phases.yml: line 3, column 4: !!binary {REFUSED_TAG}"),
    Case("phases !!set", {"phases.yml": PHASES + "services: {api: {exclude: !!set {a, b}}}\n"}, f"phases.yml: line 3, column 27: !!set {REFUSED_TAG}"),
    Case("phases !Ref", {"phases.yml": PHASES + "services: {api: {tags: {a: !Ref x}}}\n"}, "phases.yml: line 3, column 28: unknown tag !Ref"),
    Case("phases python tag", {"phases.yml": "app: !!python/object/apply:os.system [id]\n"}, "phases.yml: line 1, column 6: unknown tag !!python/object/apply:os.system"),
    Case("phases control character", {"phases.yml": PHASES + "x: \x1b[31m\n"}, "phases.yml: line 3, column 4: control character #x001b is not allowed in YAML"),
    Case("phases symlink to /dev/zero", {"phases.yml": symlink("/dev/zero")}, "phases.yml: is not a regular file (a character device)", doit=True),
    Case("phases FIFO", {"phases.yml": fifo}, "phases.yml: is not a regular file (a named pipe)"),
    Case("phases folder", {"phases.yml": folder}, "phases.yml: is not a regular file (a folder)"),
    Case("phases broken symlink", {"phases.yml": in_app(".#phases.yml")}, "phases.yml: cannot read: No such file or directory"),
    Case("phases symlink loop", {"phases.yml": in_app("phases.yml")}, "phases.yml: cannot read: Too many levels of symbolic links"),
    Case("phases over 4 MB", {"phases.yml": huge(PHASES)}, "phases.yml: is larger than 4 MB, the most phasedoit reads"),
    Case("path /dev", {"phases.yml": PHASES + "services: {api: {path: /dev}}\n"}, "phases.yml: services.api.path: /dev is outside the app folder", doit=True),
    Case("path above the app", {"phases.yml": PHASES + "services: {api: {path: ../api}}\n"}, "phases.yml: services.api.path: ../api is outside the app folder"),
    Case(
        "service folder a symlink to /dev",
        {"services/dev": symlink("/dev"), "phases.yml": PHASES + "services: {api: {path: services/dev}}\n"},
        "phases.yml: services.api.path: service 'api' has no template in services/dev"
        " (template.yml, template.yaml, template.json or serverless.yml)",
    ),
    Case("template outside", {"phases.yml": PHASES + "services: {api: {template: /etc/hostname}}\n"}, "phases.yml: services.api.template: /etc/hostname is outside the app folder"),
    Case("template a symlink to /dev/zero", {YML: symlink("/dev/zero")}, f"{YML}: is not a regular file (a character device)"),
    Case("watch outside", {"phases.yml": PHASES + "services: {api: {watch: [../..]}}\n"}, "phases.yml: services.api.watch[0]: ../.. is outside the app folder"),
    # templates
    Case("template alias bomb", {YML: TEMPLATE + "Metadata:\n" + laughs("  ")}, f"{YML}: line 14, column 7: {BOMB}", doit=True),
    Case("template merge-key bomb", {YML: TEMPLATE + "Metadata:\n" + merged("  ")}, f"{YML}: line 13, column 16: {BOMB}"),
    Case("template 5000 deep", {YML: TEMPLATE + "Metadata: " + "[" * 5000 + "]" * 5000 + "\n"}, f"{YML}: line 7, column 110: {DEEP}", doit=True),
    Case(
        "template JSON 5000 deep",
        {YML: None, JSON: '{"Resources": {}, "Metadata": ' + "[" * 5000 + "]" * 5000 + "}"},
        f"{JSON}: line 1, column 130: {DEEP}",
    ),
    Case("template duplicate resource", {YML: TEMPLATE + "  Topic:\n    Type: AWS::SQS::Queue\n"}, f"{YML}: line 7, column 3: duplicate key 'Topic' (first at line 4)"),
    Case(
        "template JSON duplicate key",
        {YML: None, JSON: JSON_TEMPLATE.replace('"Topic":', '"Topic": {"Type": "AWS::SQS::Queue"},\n    "Topic":')},
        f"{JSON}: line 4, column 5: duplicate key 'Topic' (first at line 3)",
        doit=True,
    ),
    Case("template JSON NaN", {YML: None, JSON: JSON_TEMPLATE.replace("}\n  }", ', "Metadata": {"n": NaN}}\n  }')}, f"{JSON}: line 3, column 60: NaN is not valid JSON", doit=True),
    Case("template JSON Infinity", {YML: None, JSON: '{"Resources": {}, "Metadata": [Infinity]}'}, f"{JSON}: line 1, column 32: Infinity is not valid JSON"),
    Case("template JSON -Infinity", {YML: None, JSON: '{"Resources": {}, "Metadata": -Infinity}'}, f"{JSON}: line 1, column 31: -Infinity is not valid JSON"),
    Case("template JSON 1e999", {YML: None, JSON: '{"Resources": {}, "Metadata": 1e999}'}, f"{JSON}: line 1, column 31: 1e999 is not a finite number"),
    Case("template .nan", {YML: TEMPLATE + "Metadata: {n: .nan}\n"}, f"{YML}: line 7, column 15: .nan is not a finite number (quote it if it is text)"),
    Case("template -.inf", {YML: TEMPLATE + "Metadata: [-.inf]\n"}, f"{YML}: line 7, column 12: -.inf is not a finite number (quote it if it is text)"),
    Case("template !!binary", {YML: TEMPLATE + "Metadata: !!binary aGVsbG8=\n"}, f"{YML}: line 7, column 11: !!binary {REFUSED_TAG}", doit=True),
    Case("template !!set", {YML: TEMPLATE + "Metadata: !!set {a, b}\n"}, f"{YML}: line 7, column 11: !!set {REFUSED_TAG}"),
    Case("template !!omap", {YML: TEMPLATE + "Metadata: !!omap [a: 1]\n"}, f"{YML}: line 7, column 11: !!omap {REFUSED_TAG}"),
    Case("template !!timestamp", {YML: TEMPLATE + "Metadata: !!timestamp 2010-09-09\n"}, f"{YML}: line 7, column 11: !!timestamp {REFUSED_TAG}"),
    Case(
        "template unknown tag",
        {YML: TEMPLATE.replace("!Sub", "!Substitute")},
        f"{YML}: line 6, column 29: unknown tag !Substitute (not a CloudFormation short form such as !Ref or !Sub)",
        doit=True,
    ),
    Case(
        "template !ToJsonString",
        {YML: TEMPLATE + "Metadata: !ToJsonString {a: 1}\n"},
        f"{YML}: line 7, column 11: unknown tag !ToJsonString (CloudFormation has no short form of it: write Fn::ToJsonString)",
    ),
    Case("template a FIFO", {YML: fifo}, f"{YML}: is not a regular file (a named pipe)", doit=True),
    Case("template a folder", {YML: folder}, f"{YML}: is not a regular file (a folder)"),
    Case("template a broken symlink", {YML: in_app(".#template.yml")}, f"{YML}: cannot read: No such file or directory"),
    Case("template over 4 MB", {YML: huge(TEMPLATE)}, f"{YML}: is larger than 4 MB, the most phasedoit reads"),
    # the command line and the environment
    Case("mistyped variable", {}, f"stgae=prod: unknown variable (did you mean stage=prod?); {VARIABLES}", doit=True, args=("stgae=prod",)),
    Case("empty stage", {}, f"stage=: needs a value; {VARIABLES}", doit=True, args=("stage=",)),
    Case("unknown variable", {}, f"region=eu-west-1: unknown variable; {VARIABLES}", args=("region=eu-west-1",)),
    Case(
        "two bad variables",
        {},
        f"Force=all: unknown variable (did you mean force=all?); {VARIABLES}\nyes=: needs a value; {VARIABLES}",
        args=("Force=all", "yes="),
    ),
    Case("AWS_REGION", {}, "AWS_REGION: 'us-east-1; id' is not an AWS region name (like eu-west-1)", doit=True, env={"AWS_REGION": "us-east-1; id"}),
    Case("AWS_DEFAULT_REGION", {}, "AWS_DEFAULT_REGION: '$(id)' is not an AWS region name (like eu-west-1)", env={"AWS_REGION": "", "AWS_DEFAULT_REGION": "$(id)"}),
]  # fmt: skip


def make_app(root: Path, files: Mapping[str, Content]) -> Path:
    """The one-service app with `files` over it; the dodo.py users have beside its phases.yml."""
    (root / "services" / "api").mkdir(parents=True)
    (root / "dodo.py").write_text((REPO / "dodo.py").read_text())
    written: dict[str, Content] = {"phases.yml": PHASES, YML: TEMPLATE, **files}
    for name, content in written.items():
        path = root / name
        if content is None:
            continue  # left out
        if callable(content):
            content(path)
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def test_the_bombs_fit_in_a_kilobyte() -> None:
    assert (len(laughs()), len(merged())) < (1100, 1100)


def test_forty_cases_and_more() -> None:
    assert len(CASES) >= 40
    assert sum(case.doit for case in CASES) >= 12
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused(tmp_path: Path, case: Case) -> None:
    app = make_app(tmp_path / "app", case.files)
    with pytest.raises(PhasedoitError) as e:
        load(app, dict(arg.split("=", 1) for arg in case.args), {**CREDENTIALS, **case.env})
    assert str(e.value) == case.message


def load(app: Path, given: dict[str, str], environ: Mapping[str, str]) -> None:
    """What the loader does before doit takes over, less doit."""
    variables.check(given, variables.KNOWN)
    plan_stage(load_config(app / "phases.yml"), given.get("stage"), environ)


DOIT_CASES = [case for case in CASES if case.doit]


@pytest.mark.parametrize("case", DOIT_CASES, ids=[case.id for case in DOIT_CASES])
def test_refused_by_doit(tmp_path: Path, moto: Moto, credentials: dict[str, str], case: Case) -> None:
    app = make_app(tmp_path / "app", case.files)
    with running_layer(moto.url) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, **case.env}
        result = doit(app, "-n", "2", "deploy", *case.args, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", case.message + "\n")
    assert proxy.calls == []


@pytest.mark.parametrize("workers", [("-n", "-1"), ("--process=-4",)])
def test_a_negative_number_of_workers(
    tmp_path: Path, moto: Moto, credentials: dict[str, str], workers: tuple[str, ...]
) -> None:
    """doit itself would run nothing, then exit 0 as if all were deployed."""
    app = make_app(tmp_path / "app", {})
    with running_layer(moto.url) as proxy:
        result = doit(app, *workers, "deploy", env={**os.environ, "AWS_ENDPOINT_URL": proxy.url})
    value = workers[-1].removeprefix("--process=")
    message = f"-n {value}: the number of parallel deploys is 0 (one at a time) or more\n"
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message)
    assert proxy.calls == []


def odd_files(lib: Path) -> None:
    """What an editor, a dev server or a test run leaves in a folder."""
    lib.mkdir(parents=True)
    (lib / "handler.py").write_text("def handler(event, context): ...\n")
    (lib / ".#handler.py").symlink_to("user@host.1234:1700000000")  # Emacs' lock: a broken symlink
    (lib / "loop").symlink_to("loop")
    (lib / "etc").symlink_to("/etc")
    (lib / "passwd").symlink_to("/etc/passwd")
    (lib / "self").symlink_to(".")
    (lib / "same.py").symlink_to("handler.py")
    os.mkfifo(lib / "fifo")
    with socket.socket(socket.AF_UNIX) as server:
        cwd = Path.cwd()
        os.chdir(lib)  # a socket's path is limited to about 100 bytes: bind it by its name
        try:
            server.bind("dev.sock")
        finally:
            os.chdir(cwd)


def odd_warnings(lib: str) -> list[str]:
    return [
        f"warning: {lib}/.#handler.py: a broken symlink, left out of the fingerprint",
        f"warning: {lib}/etc: a symlink that leads outside the app folder, left out of the fingerprint",
        f"warning: {lib}/fifo: a named pipe (FIFO), left out of the fingerprint",
        f"warning: {lib}/loop: a symlink loop, left out of the fingerprint",
        f"warning: {lib}/passwd: a symlink that leads outside the app folder, left out of the fingerprint",
        f"warning: {lib}/self: a symlink loop (to a folder already included), left out of the fingerprint",
        f"warning: {lib}/dev.sock: a socket, left out of the fingerprint",
    ]


def test_odd_files_are_left_out_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    odd_files(lib)
    # the app folder is tmp_path's parent: the warnings name a path no other test shows (they come once a run)
    hashes = changes.file_hashes(lib, changes.DEFAULT_EXCLUDE, root=tmp_path.parent)
    assert list(hashes) == ["handler.py", "same.py"]
    assert hashes["handler.py"] == hashes["same.py"]
    assert sorted(capsys.readouterr().err.splitlines()) == sorted(odd_warnings(f"{tmp_path.name}/lib"))
    assert changes.file_hashes(lib, changes.DEFAULT_EXCLUDE, root=tmp_path.parent) == hashes
    assert capsys.readouterr().err == ""


def test_a_deploy_with_odd_files_and_yaml_1_1_tags(
    tmp_path: Path, moto: Moto, credentials: dict[str, str]
) -> None:
    """Odd files in a folder it watches: one warning each, and the stack is created; tags as written."""
    tags = "{version: 1.10, mode: 0755, team: yes, on: call}"
    app = make_app(
        tmp_path / "app", {"phases.yml": PHASES + f"services: {{api: {{watch: [lib], tags: {tags}}}}}\n"}
    )
    odd_files(app / "lib")
    with running_layer(moto.url) as proxy:
        result = doit(app, "-n", "2", "deploy", env={**os.environ, "AWS_ENDPOINT_URL": proxy.url})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert sorted(warnings) == sorted(odd_warnings("lib"))
    assert proxy.written() == [("CreateStack", "api-dev")]
    [stack] = moto.client().describe_stacks(StackName="api-dev")["Stacks"]
    sent = {tag["Key"]: tag["Value"] for tag in stack["Tags"] if not tag["Key"].startswith("phasedoit:")}
    assert sent == {"version": "1.10", "mode": "0755", "team": "yes", "on": "call"}
