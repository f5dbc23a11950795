from __future__ import annotations

from pathlib import Path

import pytest

from phasedoit.config import App, check_region_from_env, load_config
from phasedoit.errors import PhasedoitError

TEMPLATE = "Resources:\n  Topic: {Type: AWS::SNS::Topic}\n"


def make_app(
    root: Path, config: str | bytes, services: tuple[str, ...] = ("users-api", "orders-api")
) -> Path:
    for name in services:
        (root / "services" / name).mkdir(parents=True)
        (root / "services" / name / "template.yml").write_text(TEMPLATE)
    path = root / "phases.yml"
    path.write_bytes(config if isinstance(config, bytes) else config.encode())
    return path


def load(root: Path, config: str | bytes) -> App:
    return load_config(make_app(root, config))


def error_of(root: Path, config: str | bytes) -> str:
    with pytest.raises(PhasedoitError) as e:
        load(root, config)
    return str(e.value)


def test_minimal_config(tmp_path: Path) -> None:
    app = load(
        tmp_path, "app: shop\nphases:\n  - [users-api]\n  - name: orders\n    services: [orders-api]\n"
    )
    assert app.name == "shop"
    assert [(p.number, p.name, p.services) for p in app.phases] == [
        (1, None, ("users-api",)),
        (2, "orders", ("orders-api",)),
    ]
    assert [p.label for p in app.phases] == ["phase 1", "phase 2 'orders'"]
    assert app.services["users-api"].template == tmp_path / "services/users-api/template.yml"
    assert app.services["users-api"].stack_name("shop", "dev") == "users-api-dev"


def test_full_config(tmp_path: Path) -> None:
    (tmp_path / "stacks" / "orders").mkdir(parents=True)
    (tmp_path / "stacks" / "orders" / "cfn.json").write_text('{"Resources": {}}')
    app = load(
        tmp_path,
        """
app: shop
phases: [[users-api, orders-api]]
services:
  users-api:
    stack_name: "{app}-{service}-{stage}"
    parameters: {Memory: 512, Debug: true, Zones: [a, b], Name: x}
    tags: {team: core, cost: 12}
    capabilities: [CAPABILITY_IAM]
  orders-api: {path: stacks/orders, template: cfn.json}
stages:
  dev: {endpoint: local}
  prod: {region: eu-west-1, endpoint: "https://cloudformation.eu-west-1.amazonaws.com", parameters: {Memory: 1024}}
""",
    )
    users = app.services["users-api"].settings
    assert app.services["users-api"].stack_name("shop", "prod") == "shop-users-api-prod"
    assert users.parameters == {"Memory": "512", "Debug": "true", "Zones": "a,b", "Name": "x"}
    assert users.tags == {"team": "core", "cost": "12"}
    assert users.capabilities == ["CAPABILITY_IAM"]
    assert app.services["orders-api"].template == tmp_path / "stacks/orders/cfn.json"
    assert app.stages["prod"].region == "eu-west-1"
    assert app.stages["dev"].endpoint == "local"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "app: shop\nphases:\n  - [users-api, nope-api]\n",
            "phases.yml: phases[0][1]: unknown service 'nope-api' (no folder services/nope-api)",
        ),
        (
            "app: shop\nphases:\n  - name: a\n    services: [users-api, nope-api]\n",
            "phases.yml: phases[0].services[1]: unknown service 'nope-api' (no folder services/nope-api)",
        ),
        ("phases: [[users-api]]\n", "phases.yml: app: required key is missing"),
        (
            "app: shop\nphases: sometimes\n",
            "phases.yml: phases: input should be a valid list, got 'sometimes'",
        ),
        (
            "app: Shop\nphases: [[users-api]]\n",
            "phases.yml: app: 'Shop' is not a valid app name (lowercase letters, digits and '-', starting with a letter)",
        ),
        ("app: 12\nphases: [[users-api]]\n", "phases.yml: app: input should be a valid string, got 12"),
        ("app: shop\nphases: []\n", "phases.yml: phases: must not be empty"),
        ("app: shop\nphases: [[users-api], []]\n", "phases.yml: phases[1]: must not be empty"),
        (
            "app: shop\nphases: [[users-api], {name: x, services: []}]\n",
            "phases.yml: phases[1].services: must not be empty",
        ),
        (
            "app: shop\nphases: [[users-api, users-api]]\n",
            "phases.yml: phases[0][1]: service 'users-api' is already in phases[0][0]",
        ),
        (
            "app: shop\nphases: [[users-api], [orders-api, users-api]]\n",
            "phases.yml: phases[1][1]: service 'users-api' is already in phases[0][0]",
        ),
        (
            "app: shop\nphases: [[users_api]]\n",
            "phases.yml: phases[0][0]: 'users_api' is not a valid service name (letters, digits and '-', starting with a letter)",
        ),
        ("app: shop\nphases: [[users-api]]\nregion: x\n", "phases.yml: region: unknown key"),
        (
            "app: shop\nphases: [{name: a, services: [users-api], after: b}]\n",
            "phases.yml: phases[0].after: unknown key",
        ),
        (
            "app: shop\nphases: [users-api]\n",
            "phases.yml: phases[0]: expected a list of services or a mapping with 'services', got 'users-api'",
        ),
        (
            "app: shop\nphases: [[users-api]]\nservices: {users-api: x}\n",
            "phases.yml: services.users-api: expected a mapping, got 'x'",
        ),
        (
            "app: shop\nphases: [[users-api]]\nservices: {orders-api: {}}\n",
            "phases.yml: services.orders-api: not in any phase",
        ),
        (
            "app: shop\nphases: [[users-api]]\nservices: {users-api: {template: nope.yml}}\n",
            "phases.yml: services.users-api.template: no file services/users-api/nope.yml",
        ),
        (
            "app: shop\nphases: [[users-api]]\nservices: {users-api: {path: elsewhere}}\n",
            "phases.yml: services.users-api.path: no folder elsewhere",
        ),
        (
            "app: shop\nphases: [[users-api]]\nservices: {users-api: {stack_name: '{svc}-x'}}\n",
            "phases.yml: services.users-api.stack_name: unknown placeholder {svc} (use {app}, {service}, {stage})",
        ),
        (
            "app: shop\nphases: [[users-api]]\nexternal_exports: ['${Stage}-VpcId']\n",
            "phases.yml: external_exports[0]: unknown placeholder {Stage} (use {stage})",
        ),
        (
            "app: shop\nphases: [[users-api]]\nexternal_exports: ['{stage-VpcId']\n",
            "phases.yml: external_exports[0]: '{stage-VpcId': expected '}' before end of string",
        ),
        (
            "app: shop\nphases: [[users-api]]\nservices: {users-api: {parameters: {A: {b: 1}}}}\n",
            "phases.yml: services.users-api.parameters.A: expected a string, number or boolean, got {'b': '1'}",
        ),
        (
            "app: shop\nphases: [[users-api]]\nservices: {users-api: {capabilities: [IAM]}}\n",
            "phases.yml: services.users-api.capabilities[0]: expected 'CAPABILITY_IAM', 'CAPABILITY_NAMED_IAM' or 'CAPABILITY_AUTO_EXPAND', got 'IAM'",
        ),
        (
            "app: shop\nphases: [[users-api]]\nservices: {users-api: {tag: {a: b}}}\n",
            "phases.yml: services.users-api.tag: unknown key",
        ),
        (
            "app: shop\nphases: [[users-api]]\nstages: {Prod: {}}\n",
            "phases.yml: stages.Prod: 'Prod' is not a valid stage name (lowercase letters, digits and '-', starting with a letter)",
        ),
        (
            "app: shop\nphases: [[users-api]]\nstages: {prod: {region: moon}}\n",
            "phases.yml: stages.prod.region: 'moon' is not an AWS region name (like eu-west-1)",
        ),
        (
            "app: shop\nphases: [[users-api]]\nstages: {prod: {account: '1234'}}\n",
            "phases.yml: stages.prod.account: an AWS account id is 12 digits",
        ),
        (
            "app: shop\nphases: [[users-api]]\nstages: {prod: {endpoint: ftp://x}}\n",
            "phases.yml: stages.prod.endpoint: 'ftp://x' is neither 'local' nor an http(s) URL",
        ),
        (
            "app: shop\nphases: [{name: a, services: [users-api]}, {name: a, services: [orders-api]}]\n",
            "phases.yml: phases[1].name: phase name 'a' is already used by phases[0]",
        ),
        (
            "app: shop\nphases:\n  - [users-api\n",
            "phases.yml: line 4, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        ("app: shop\n  phases: x\n", "phases.yml: line 2, column 9: mapping values are not allowed here"),
        ("- app\n", "phases.yml: expected a mapping with 'app' and 'phases'"),
        ("", "phases.yml: expected a mapping with 'app' and 'phases'"),
        (b"app: shop\x00\x01\x02", "phases.yml: is a binary file, not YAML or JSON text"),
        (b"app: sh\xe9p\n", "phases.yml: is not UTF-8 text (bad byte at offset 7)"),
    ],
)
def test_bad_config(tmp_path: Path, config: str | bytes, message: str) -> None:
    assert error_of(tmp_path, config) == message


def test_every_error_at_once(tmp_path: Path) -> None:
    config = "app: shop\nphases: [[users-api, nope], [users-api]]\nservices: {other: {}}\n"
    assert error_of(tmp_path, config).splitlines() == [
        "phases.yml: phases[0][1]: unknown service 'nope' (no folder services/nope)",
        "phases.yml: phases[1][0]: service 'users-api' is already in phases[0][0]",
        "phases.yml: services.other: not in any phase",
    ]


def test_service_without_template(tmp_path: Path) -> None:
    (tmp_path / "services" / "empty").mkdir(parents=True)
    assert error_of(tmp_path, "app: shop\nphases: [[empty]]\n") == (
        "phases.yml: phases[0][0]: service 'empty' has no template in services/empty"
        " (template.yml, template.yaml, template.json or serverless.yml)"
    )


@pytest.mark.parametrize("name", ["template.yaml", "template.json"])
def test_template_names(tmp_path: Path, name: str) -> None:
    (tmp_path / "services" / "jobs").mkdir(parents=True)
    (tmp_path / "services" / "jobs" / name).write_text('{"Resources": {}}')
    app = load(tmp_path, "app: shop\nphases: [[jobs]]\n")
    assert app.services["jobs"].template.name == name


@pytest.mark.parametrize("phases", ["", "phases: auto\n"])
def test_phases_left_to_compute(tmp_path: Path, phases: str) -> None:
    app = load(tmp_path, f"app: shop\n{phases}")
    assert app.phases == ()
    assert list(app.services) == ["orders-api", "users-api"]


def test_phases_left_to_compute_keep_the_services_order(tmp_path: Path) -> None:
    app = load(tmp_path, "app: shop\nservices: {users-api: {}, orders-api: {}}\n")
    assert list(app.services) == ["users-api", "orders-api"]


def test_phases_left_to_compute_take_every_service_folder(tmp_path: Path) -> None:
    (tmp_path / "services" / "audit-job").mkdir(parents=True)
    (tmp_path / "services" / "audit-job" / "template.json").write_text('{"Resources": {}}')
    app = load(tmp_path, "app: shop\nservices: {users-api: {tags: {team: a}}}\n")
    assert list(app.services) == ["users-api", "audit-job", "orders-api"]


def test_phases_left_to_compute_without_services(tmp_path: Path) -> None:
    (tmp_path / "phases.yml").write_text("app: shop\n")
    with pytest.raises(PhasedoitError) as e:
        load_config(tmp_path / "phases.yml")
    assert str(e.value) == (
        "phases.yml: phases: computed from the imports, but there are no services"
        " (no services/*/template.yml or serverless.yml)"
    )


@pytest.mark.parametrize(
    ("stack_name", "shown"),
    [
        ("{service}_{stage}", "users-api_prod"),
        ("9-{service}", "9-users-api"),
        ("x" * 125 + "{stage}", "x" * 125 + "prod"),
    ],
)
def test_stack_names_cloudformation_refuses(tmp_path: Path, stack_name: str, shown: str) -> None:
    with pytest.raises(PhasedoitError) as e:  # for every stage phases.yml lists, when it is read
        load(
            tmp_path,
            f"app: shop\nphases: [[users-api]]\nservices: {{users-api: {{stack_name: '{stack_name}'}}}}\n"
            "stages: {prod: {}}\n",
        )
    assert str(e.value) == (
        f"phases.yml: services.users-api.stack_name: {shown!r} is not a valid CloudFormation stack name"
        " (letters, digits and '-', starting with a letter, at most 128)"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "app: coll\nphases: [[api, api-eu]]\nstages: {dev: {}, eu-dev: {}}\n",
            "phases.yml: services.api: its stack on stage eu-dev, api-eu-dev, is also the stack of api-eu on stage dev",
        ),
        (
            "app: coll\nphases: [[api, api-eu]]\nservices: {api: {stack_name: 'shared-{stage}'}, api-eu: {stack_name: 'shared-{stage}'}}\n",
            "phases.yml: services.api-eu: its stack on stage dev, shared-dev, is also the stack of api on stage dev",
        ),
    ],
)
def test_two_services_or_stages_never_share_a_stack(tmp_path: Path, config: str, message: str) -> None:
    for name in ("api", "api-eu"):
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "template.yml").write_text(
            "Resources: {T: {Type: AWS::SNS::Topic}}\n"
        )
    (tmp_path / "phases.yml").write_text(config)
    with pytest.raises(PhasedoitError) as e:
        load_config(tmp_path / "phases.yml")
    assert str(e.value) == message


def test_tags_and_parameters_are_sent_as_written(tmp_path: Path) -> None:
    """YAML 1.1 reads `1.10` as 1.1, `0755` as 493 and `yes` as true: AWS takes strings, so they stay text."""
    app = load(
        tmp_path,
        "app: shop\nphases: [[users-api]]\nservices:\n  users-api:\n"
        "    tags: {version: 1.10, mode: 0755, team: yes, at: 12:30, on: call, 2024: year, empty: ''}\n"
        "    parameters: {Ratio: 1.50, Zones: [0755, no], Flag: True, Hex: 0x1F}\n"
        "stages:\n  no: {parameters: {Version: 1.10}}\n",
    )
    settings = app.services["users-api"].settings
    assert settings.tags == {
        "version": "1.10",
        "mode": "0755",
        "team": "yes",
        "at": "12:30",
        "on": "call",
        "2024": "year",
        "empty": "",
    }
    assert settings.parameters == {"Ratio": "1.50", "Zones": "0755,no", "Flag": "True", "Hex": "0x1F"}
    assert app.stages["no"].parameters == {"Version": "1.10"}  # `no:`, the Norway problem, is a stage name


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "services: {users-api: {tags: {team: ~}}}\n",
            "phases.yml: services.users-api.tags.team: expected a string, number or boolean, got None",
        ),
        (
            "services: {users-api: {tags: {team: [a]}}}\n",
            "phases.yml: services.users-api.tags.team: expected a string, number or boolean, got ['a']",
        ),
        (
            "services: {users-api: {capabilities: [yes]}}\n",
            "phases.yml: services.users-api.capabilities[0]: expected 'CAPABILITY_IAM', 'CAPABILITY_NAMED_IAM' or 'CAPABILITY_AUTO_EXPAND', got True",
        ),
        (
            "services: {users-api: {tags: {team: {a: " + "x" * 100 + "}}}}\n",
            "phases.yml: services.users-api.tags.team: expected a string, number or boolean, got {'a': '"
            + "x" * 50
            + "...",
        ),
    ],
)
def test_what_is_not_text_where_text_is_expected(tmp_path: Path, config: str, message: str) -> None:
    assert error_of(tmp_path, "app: shop\nphases: [[users-api]]\n" + config) == message


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("{path: /dev}", "phases.yml: services.users-api.path: /dev is outside the app folder"),
        ("{path: ..}", "phases.yml: services.users-api.path: .. is outside the app folder"),
        ("{path: services/../..}", "phases.yml: services.users-api.path: services/../.. is outside the app folder"),
        ("{template: ../../../x.yml}", "phases.yml: services.users-api.template: ../../../x.yml is outside the app folder"),
        ("{template: /etc/hostname}", "phases.yml: services.users-api.template: /etc/hostname is outside the app folder"),
        ("{watch: [/etc]}", "phases.yml: services.users-api.watch[0]: /etc is outside the app folder"),
        ("{watch: [../x]}", "phases.yml: services.users-api.watch[0]: ../x is outside the app folder"),
    ],
)  # fmt: skip
def test_paths_outside_the_app_folder(tmp_path: Path, setting: str, message: str) -> None:
    config = f"app: shop\nphases: [[users-api]]\nservices: {{users-api: {setting}}}\n"
    assert error_of(tmp_path / "app", config) == message


def test_symlinks_out_of_the_app_folder_are_the_users(tmp_path: Path) -> None:
    """A path written out of the app is refused; a symlink the user made is followed where it leads."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "template.yml").write_text(TEMPLATE)
    path = make_app(tmp_path / "app", "app: shop\nphases: [[users-api, orders-api]]\n")
    users = tmp_path / "app" / "services" / "users-api"
    (users / "template.yml").unlink()
    (users / "template.yml").symlink_to(tmp_path / "elsewhere" / "template.yml")
    orders = tmp_path / "app" / "services" / "orders-api"
    (orders / "template.yml").unlink()
    orders.rmdir()
    orders.symlink_to(tmp_path / "elsewhere")
    app = load_config(path)
    assert app.services["users-api"].template.read_text() == TEMPLATE
    assert app.services["orders-api"].template.resolve() == tmp_path / "elsewhere" / "template.yml"


def test_symlinks_inside_the_app_folder(tmp_path: Path) -> None:
    path = make_app(
        tmp_path, "app: shop\nphases: [[users-api, orders-api]]\nservices: {orders-api: {path: alias}}\n"
    )
    (tmp_path / "alias").symlink_to(tmp_path / "services" / "orders-api")
    (tmp_path / "services" / "users-api" / "template.yml").unlink()
    (tmp_path / "services" / "users-api" / "template.yml").symlink_to(tmp_path / "shared.yml")
    (tmp_path / "shared.yml").write_text(TEMPLATE)
    app = load_config(path)
    assert app.services["orders-api"].folder == tmp_path / "alias"
    assert app.services["users-api"].template == tmp_path / "services" / "users-api" / "template.yml"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AWS_REGION": "us-east-1; id"}, "AWS_REGION: 'us-east-1; id' is not an AWS region name (like eu-west-1)"),
        ({"AWS_REGION": "", "AWS_DEFAULT_REGION": "eu west 1"}, "AWS_DEFAULT_REGION: 'eu west 1' is not an AWS region name (like eu-west-1)"),
        ({"AWS_DEFAULT_REGION": "../../x"}, "AWS_DEFAULT_REGION: '../../x' is not an AWS region name (like eu-west-1)"),
    ],
)  # fmt: skip
def test_a_region_from_the_environment_that_is_no_region(environ: dict[str, str], message: str) -> None:
    with pytest.raises(PhasedoitError) as e:
        check_region_from_env(environ)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"AWS_REGION": ""},
        {"AWS_REGION": "eu-west-1"},
        {"AWS_REGION": "us-gov-west-1"},
        {"AWS_REGION": "cn-northwest-1"},
        {"AWS_REGION": "us-isob-east-1"},
        {"AWS_REGION": "eusc-de-east-1"},
        {"AWS_REGION": "ap-southeast-7", "AWS_DEFAULT_REGION": "not used"},
    ],
)
def test_regions_from_the_environment(environ: dict[str, str]) -> None:
    check_region_from_env(environ)
