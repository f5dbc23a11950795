"""Packaging, pure: which properties are packaged, deterministic zips, digests, the rewritten template."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from phasedoit import hashcache, packaging
from phasedoit.config import BUCKET_RE, CONFIG_NAME, load_config
from phasedoit.errors import PhasedoitError
from phasedoit.hashcache import HashCache
from phasedoit.packaging import BUCKET, DEFAULT_EXCLUDE, S3_HOST, Package, Store
from phasedoit.templates import MAX_BODY_BYTES

SHOWN = "services/api/template.yml"
UNKNOWN = Store()  # the bucket and region known only at deploy
HANDLER = "def handler(event, context):\n    return {'statusCode': 200}\n"


@pytest.fixture
def api(tmp_path: Path) -> Path:
    """A service folder with a handler in src/."""
    folder = tmp_path / "services" / "api"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "app.py").write_text(HANDLER)
    (folder / "src" / "util.py").write_text("X = 1\n")
    return folder


def package(folder: Path, template: dict[str, Any], store: Store = UNKNOWN, **kwargs: Any) -> Package:
    return packaging.package_template(
        template,
        folder / "template.yml",
        SHOWN,
        folder=folder,
        root=folder.parent.parent,
        exclude=tuple(kwargs.pop("exclude", ())),
        store=store,
        **kwargs,
    )


def function(code: Any = "src", kind: str = "AWS::Lambda::Function", prop: str = "Code") -> dict[str, Any]:
    properties = {"Runtime": "python3.12", "Handler": "app.handler"}
    if code is not None:
        properties[prop] = code
    return {"Resources": {"Fn": {"Type": kind, "Properties": properties}}}


def zip_of(folder: Path, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> bytes:
    return packaging.make_zip(folder, exclude, folder, "src/")[0]


def planned_zip(folder: Path) -> bytes:
    """The zip a deploy builds for the Lambda code in `folder`/src, as the plan made it."""
    [artifact] = package(folder, function()).artifacts
    return packaging.build(artifact, "bucket", "us-east-1")


# ---- deterministic zips ---------------------------------------------------------------------------------


def test_same_content_same_bytes(api: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "src"
    other.mkdir(parents=True)
    # written in the other order, a second apart: neither order nor time shows in the zip
    (other / "util.py").write_text("X = 1\n")
    (other / "app.py").write_text(HANDLER)
    os.utime(other / "app.py", (1_700_000_000, 1_700_000_000))
    assert zip_of(api / "src") == zip_of(api / "src") == zip_of(other)


def test_touch_changes_nothing_an_edit_does(api: Path) -> None:
    before = planned_zip(api)
    os.utime(api / "src" / "app.py", (2_000_000_000, 2_000_000_000))
    (api / "src" / "app.py").chmod(0o600)  # only the executable bit counts
    assert planned_zip(api) == before
    (api / "src" / "app.py").write_text(HANDLER + "# edited\n")
    assert planned_zip(api) != before


def test_entries_sorted_with_fixed_times_and_modes(api: Path) -> None:
    (api / "src" / "lib").mkdir()
    (api / "src" / "lib" / "b.py").write_text("")
    (api / "src" / "bootstrap").write_text("#!/bin/sh\n")
    (api / "src" / "bootstrap").chmod(0o700)
    (api / "src" / "__pycache__").mkdir()
    (api / "src" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    with zipfile.ZipFile(io.BytesIO(zip_of(api / "src"))) as archive:
        infos = archive.infolist()
    assert [(i.filename, i.date_time, oct(i.external_attr >> 16)) for i in infos] == [
        ("app.py", (1980, 1, 1, 0, 0, 0), "0o100644"),
        ("bootstrap", (1980, 1, 1, 0, 0, 0), "0o100755"),
        ("lib/b.py", (1980, 1, 1, 0, 0, 0), "0o100644"),
        ("util.py", (1980, 1, 1, 0, 0, 0), "0o100644"),
    ]


def test_executable_bit_changes_the_key(api: Path) -> None:
    before = package(api, function()).artifacts[0].key
    (api / "src" / "app.py").chmod(0o755)
    assert package(api, function()).artifacts[0].key != before


def test_exclude_by_name_and_by_path_from_the_service(api: Path) -> None:
    (api / "src" / "generated").mkdir()
    (api / "src" / "generated" / "big.py").write_text("")
    (api / "src" / "notes.md").write_text("")
    (api / "src" / "node_modules").mkdir()
    (api / "src" / "node_modules" / "x.js").write_text("")
    [artifact] = package(api, function(), exclude=["*.md", "src/generated"]).artifacts
    with zipfile.ZipFile(io.BytesIO(packaging.build(artifact, "b", "us-east-1"))) as archive:
        assert archive.namelist() == ["app.py", "util.py"]


def test_the_key_is_the_digest_of_what_the_zip_holds(api: Path) -> None:
    [artifact] = package(api, function()).artifacts
    entries = [
        ["app.py", 0o644, hashlib.sha256(HANDLER.encode()).hexdigest()],
        ["util.py", 0o644, hashlib.sha256(b"X = 1\n").hexdigest()],
    ]
    digest = hashlib.sha256(json.dumps(["phasedoit-zip/1", entries]).encode()).hexdigest()
    assert (artifact.kind, artifact.key, artifact.shown, artifact.size) == (
        "zip",
        f"{digest}.zip",
        "src/",
        66,
    )


def test_a_folder_changed_after_the_plan_is_refused(api: Path) -> None:
    [artifact] = package(api, function()).artifacts
    (api / "src" / "app.py").write_text("changed")
    with pytest.raises(PhasedoitError) as error:
        packaging.build(artifact, "b", "us-east-1")
    assert str(error.value) == "src/ changed during the run: deploy again"


def test_a_file_changed_after_the_plan_is_refused(api: Path) -> None:
    (api / "api.yaml").write_text("openapi: 3.0.0\n")
    [artifact] = package(api, function("api.yaml", "AWS::Serverless::Api", "DefinitionUri")).artifacts
    assert packaging.build(artifact, "b", "us-east-1") == b"openapi: 3.0.0\n"
    (api / "api.yaml").write_text("openapi: 3.1.0\n")
    with pytest.raises(PhasedoitError) as error:
        packaging.build(artifact, "b", "us-east-1")
    assert str(error.value) == "api.yaml changed during the run: deploy again"


# ---- which properties, rewritten how ---------------------------------------------------------------------


def _key_of(folder: Path, path: str) -> str:
    source = folder / path
    if source.is_dir():
        return packaging.make_zip(source, DEFAULT_EXCLUDE, folder, path)[1] + ".zip"
    return hashlib.sha256(source.read_bytes()).hexdigest() + source.suffix


@pytest.mark.parametrize("prop", packaging.PROPERTIES, ids=lambda p: f"{p.type}.{'.'.join(p.path)}")
def test_every_packaged_property(api: Path, prop: packaging.Property) -> None:
    (api / "child.yml").write_text("Resources:\n  T:\n    Type: AWS::SNS::Topic\n")
    local = "child.yml" if prop.form == "template" else "src"
    properties: dict[str, Any] = {}
    packaging._set(properties, prop.path, local)
    found = package(api, {"Resources": {"R": {"Type": prop.type, "Properties": properties}}})
    value = packaging._get(json.loads(found.body)["Resources"]["R"]["Properties"], prop.path)
    [artifact] = found.artifacts
    if prop.form == "template":
        assert artifact.kind == "template"
        assert value == f"https://{S3_HOST}/{BUCKET}/{artifact.key}"
    elif prop.form == "object":
        assert value == {prop.fields[0]: BUCKET, prop.fields[1]: _key_of(api, "src")}
    else:
        assert value == f"s3://{BUCKET}/{_key_of(api, 'src')}"


def test_what_is_left_alone(api: Path) -> None:
    template = {
        "Resources": {
            "InS3": function("s3://bucket/key.zip", "AWS::Serverless::Function", "CodeUri")["Resources"][
                "Fn"
            ],
            "Inline": function({"ZipFile": "def handler(e, c): pass"})["Resources"]["Fn"],
            "Intrinsic": function({"Fn::Sub": "s3://${B}/k"}, "AWS::Serverless::Function", "CodeUri")[
                "Resources"
            ]["Fn"],
            "InlineSam": function(None, "AWS::Serverless::Function") | {"Properties": {"InlineCode": "x"}},
            "Remote": {
                "Type": "AWS::CloudFormation::Stack",
                "Properties": {"TemplateURL": "https://s3.amazonaws.com/b/t.yml"},
            },
            "NoBody": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "x"}},
            "Queue": {"Type": "AWS::SQS::Queue"},
        }
    }
    assert package(api, template) == Package(json.dumps(template, separators=(",", ":")))


def test_a_missing_code_property_is_the_template_folder(api: Path) -> None:
    (api / "template.yml").write_text("Resources: {}\n")
    found = package(api, function(None, "AWS::Serverless::Function"))
    [artifact] = found.artifacts
    assert (artifact.shown, artifact.source) == ("./", str(api))
    with zipfile.ZipFile(io.BytesIO(packaging.build(artifact, "b", "us-east-1"))) as archive:
        assert archive.namelist() == ["src/app.py", "src/util.py", "template.yml"]


def test_sam_globals_code(api: Path) -> None:
    template = function(None, "AWS::Serverless::Function") | {"Globals": {"Function": {"CodeUri": "src"}}}
    found = package(api, template, Store("my-bucket", "eu-west-1"))
    body = json.loads(found.body)
    assert body["Globals"]["Function"]["CodeUri"] == f"s3://my-bucket/{_key_of(api, 'src')}"
    assert "CodeUri" not in body["Resources"]["Fn"]["Properties"]


def test_a_single_code_file_is_zipped_a_zip_file_is_not(api: Path) -> None:
    [zipped] = package(api, function("src/app.py")).artifacts
    with zipfile.ZipFile(io.BytesIO(packaging.build(zipped, "b", "us-east-1"))) as archive:
        assert archive.namelist() == ["app.py"]
    (api / "code.zip").write_bytes(zip_of(api / "src"))
    [as_is] = package(api, function("code.zip")).artifacts
    assert (as_is.kind, as_is.key) == ("file", _key_of(api, "code.zip"))


def test_one_folder_used_twice_is_one_artifact(api: Path) -> None:
    template = function()
    template["Resources"]["Other"] = function("./src/")["Resources"]["Fn"]
    found = package(api, template)
    assert len(found.artifacts) == 1
    resources = json.loads(found.body)["Resources"]
    assert resources["Fn"]["Properties"]["Code"] == resources["Other"]["Properties"]["Code"]


def test_code_outside_the_service_is_shown_from_the_app(api: Path) -> None:
    shared = api.parent.parent / "shared" / "lib"
    shared.mkdir(parents=True)
    (shared / "lib.py").write_text("")
    [artifact] = package(api, function("../../shared/lib")).artifacts
    assert artifact.shown == "shared/lib/"


def test_for_each_loops_and_includes(api: Path) -> None:
    (api / "snippet.yml").write_text("Description: included\n")
    template = {
        "Transform": "AWS::LanguageExtensions",
        "Resources": {
            "Fn::ForEach::Fns": ["Name", ["A", "B"], {"${Name}Fn": function()["Resources"]["Fn"]}],
            "Q": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "Fn::Transform": {"Name": "AWS::Include", "Parameters": {"Location": "snippet.yml"}}
                },
            },
        },
    }
    found = package(api, template, Store("b", "us-east-1"))
    body = json.loads(found.body)
    loop = body["Resources"]["Fn::ForEach::Fns"][2]["${Name}Fn"]["Properties"]["Code"]
    assert loop == {"S3Bucket": "b", "S3Key": _key_of(api, "src")}
    include = body["Resources"]["Q"]["Properties"]["Fn::Transform"]["Parameters"]["Location"]
    assert include == f"s3://b/{_key_of(api, 'snippet.yml')}"
    assert found.capabilities == ("CAPABILITY_AUTO_EXPAND",)
    assert found.notes == ("adds CAPABILITY_AUTO_EXPAND (Transform AWS::LanguageExtensions, AWS::Include)",)


# ---- nested templates -------------------------------------------------------------------------------------


def test_nested_templates_are_packaged_recursively(api: Path) -> None:
    (api / "nested" / "code").mkdir(parents=True)
    (api / "nested" / "code" / "index.py").write_text(HANDLER)
    (api / "nested" / "db.yml").write_text(
        "Resources:\n"
        "  Fn:\n    Type: AWS::Lambda::Function\n    Properties: {Code: code}\n"
        "  Grandchild:\n    Type: AWS::CloudFormation::Stack\n    Properties: {TemplateURL: ../leaf.json}\n"
    )
    (api / "leaf.json").write_text('{"Resources": {"T": {"Type": "AWS::SNS::Topic"}}}')
    template = {
        "Resources": {
            "Db": {"Type": "AWS::CloudFormation::Stack", "Properties": {"TemplateURL": "nested/db.yml"}}
        }
    }
    found = package(api, template, Store("b", "eu-west-1"))
    code, leaf, db = found.artifacts
    assert [(a.kind, a.shown) for a in found.artifacts] == [
        ("zip", "nested/code/"), ("template", "leaf.json"), ("template", "nested/db.yml")
    ]  # fmt: skip
    url = json.loads(found.body)["Resources"]["Db"]["Properties"]["TemplateURL"]
    assert url == f"https://s3.eu-west-1.amazonaws.com/b/{db.key}"
    assert db.key == hashlib.sha256(db.body.encode()).hexdigest() + ".template"
    assert json.loads(db.body)["Resources"] == {
        "Fn": {"Type": "AWS::Lambda::Function", "Properties": {"Code": {"S3Bucket": "b", "S3Key": code.key}}},
        "Grandchild": {
            "Type": "AWS::CloudFormation::Stack",
            "Properties": {"TemplateURL": f"https://s3.eu-west-1.amazonaws.com/b/{leaf.key}"},
        },
    }


def test_nested_template_placeholders_are_filled_in_at_deploy(api: Path) -> None:
    (api / "child.yml").write_text(
        "Resources:\n  Fn:\n    Type: AWS::Lambda::Function\n    Properties: {Code: src}\n"
    )
    template = {
        "Resources": {"C": {"Type": "AWS::Serverless::Application", "Properties": {"Location": "child.yml"}}}
    }
    found = package(api, template)
    code, child = found.artifacts
    assert BUCKET in child.body
    sent = json.loads(packaging.build(child, "real-bucket", "cn-north-1"))
    assert sent["Resources"]["Fn"]["Properties"]["Code"] == {"S3Bucket": "real-bucket", "S3Key": code.key}
    assert packaging.template_arguments(found, "real-bucket", "cn-north-1") == {
        "TemplateBody": json.dumps(
            {
                "Resources": {
                    "C": {
                        "Type": "AWS::Serverless::Application",
                        "Properties": {
                            "Location": f"https://s3.cn-north-1.amazonaws.com.cn/real-bucket/{child.key}"
                        },
                    }
                }
            },
            separators=(",", ":"),
        )
    }


# ---- large templates, transforms -----------------------------------------------------------------------


def big_template(size: int) -> dict[str, Any]:
    template = function()
    template["Description"] = "x" * size
    return template


def test_a_large_template_goes_through_the_bucket(api: Path) -> None:
    found = package(api, big_template(64 * 1024))
    assert found.template is not None
    assert (found.template.kind, found.template.shown) == ("template", "template.yml")
    assert found.notes == ("template of 65,833 bytes goes through the artifacts bucket",)
    assert packaging.template_arguments(found, "b", "us-east-1") == {
        "TemplateURL": f"https://s3.us-east-1.amazonaws.com/b/{found.template.key}"
    }
    assert json.loads(packaging.build(found.template, "b", "us-east-1"))["Resources"]["Fn"]["Properties"][
        "Code"
    ] == {
        "S3Bucket": "b",
        "S3Key": found.artifacts[0].key,
    }
    assert found.uploads == (*found.artifacts, found.template)


def test_a_template_that_may_outgrow_the_inline_limit_once_filled_in(api: Path) -> None:
    # under the limit as planned, over it if the bucket's name is 63 characters long
    size = MAX_BODY_BYTES - len(package(api, big_template(0)).body) - 10
    assert len(package(api, big_template(size)).body) < MAX_BODY_BYTES
    assert package(api, big_template(size)).template is not None
    assert package(api, big_template(size), Store("b", "us-east-1")).template is None


def test_a_template_over_1_mb(api: Path) -> None:
    with pytest.raises(PhasedoitError) as error:
        package(api, big_template(1_048_576))
    assert str(error.value) == (
        "services/api/template.yml: template is 1,048,873 bytes as JSON; CloudFormation takes at most 1,048,576 (through S3)"
    )


@pytest.mark.parametrize(
    ("transform", "capabilities", "expected", "notes"),
    [
        ("AWS::Serverless-2016-10-31", (), ("CAPABILITY_AUTO_EXPAND",),
         ("adds CAPABILITY_AUTO_EXPAND (Transform AWS::Serverless-2016-10-31)",)),
        (["AWS::Serverless-2016-10-31"], ("CAPABILITY_IAM",), ("CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"),
         ("adds CAPABILITY_AUTO_EXPAND (Transform AWS::Serverless-2016-10-31)",)),
        ("AWS::Serverless-2016-10-31", ("CAPABILITY_AUTO_EXPAND",), ("CAPABILITY_AUTO_EXPAND",), ()),
        (None, ("CAPABILITY_IAM",), ("CAPABILITY_IAM",), ()),
    ],
)  # fmt: skip
def test_transforms_add_auto_expand(
    api: Path,
    transform: Any,
    capabilities: tuple[str, ...],
    expected: tuple[str, ...],
    notes: tuple[str, ...],
) -> None:
    template = function(None, "AWS::Serverless::Function") | ({"Transform": transform} if transform else {})
    found = package(api, template, capabilities=capabilities)
    assert (found.capabilities, found.notes) == (expected, notes)


def test_nothing_to_package_needs_no_bucket(api: Path) -> None:
    template = {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}
    found = package(api, template)
    assert not packaging.needs_bucket(found)
    assert packaging.template_arguments(found, "unused", "us-east-1") == {"TemplateBody": found.body}
    assert packaging.needs_bucket(package(api, function()))


def test_what_packaging_finds_deep_in_a_template_with_nothing_else_to_package(api: Path) -> None:
    """A template with no packaged property is sent as written unless a transform shows anywhere in it."""
    (api / "snippet.yml").write_text("Description: included\n")
    include = {"Fn::Transform": {"Name": "AWS::Include", "Parameters": {"Location": "snippet.yml"}}}
    macro = {"Fn::Transform": {"Name": "Upper", "Parameters": {"Text": "x"}}}
    queue: dict[str, Any] = {
        "Type": "AWS::SQS::Queue",
        "Properties": {"Tags": [{"Key": "k", "Value": include}]},
    }
    found = package(api, {"Resources": {"Q": queue}}, Store("b", "us-east-1"))
    tag = json.loads(found.body)["Resources"]["Q"]["Properties"]["Tags"][0]["Value"]
    assert tag["Fn::Transform"]["Parameters"]["Location"] == f"s3://b/{_key_of(api, 'snippet.yml')}"
    assert found.capabilities == ("CAPABILITY_AUTO_EXPAND",)
    deep = package(api, {"Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": macro}}}})
    assert (deep.artifacts, deep.capabilities) == ((), ("CAPABILITY_AUTO_EXPAND",))
    # the words in values, not keys: nothing to do
    words = {"Description": "Transform", "Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": {
        "QueueName": 'a "Fn::Transform" and "Transform"'}}}}  # fmt: skip
    assert package(api, words) == Package(json.dumps(words, separators=(",", ":")))


# ---- user errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "files", "message"),
    [
        (function("nope/"), {}, "services/api/template.yml: Resources.Fn.Properties.Code: no file or folder nope"),
        (function("empty"), {"empty/__pycache__/a.pyc": ""},
         "services/api/template.yml: Resources.Fn.Properties.Code: nothing to package in empty/ (empty, or every file excluded)"),
        ({"Resources": {"N": {"Type": "AWS::CloudFormation::Stack", "Properties": {"TemplateURL": "src"}}}}, {},
         "services/api/template.yml: Resources.N.Properties.TemplateURL: no template file src"),
        ({"Resources": {"N": {"Type": "AWS::CloudFormation::Stack", "Properties": {"TemplateURL": "loop.yml"}}}},
         {"loop.yml": "Resources:\n  Again:\n    Type: AWS::CloudFormation::Stack\n    Properties: {TemplateURL: loop.yml}\n"},
         "services/api/loop.yml: Resources.Again.Properties.TemplateURL: loop.yml includes itself"),
        ({"Resources": {"N": {"Type": "AWS::CloudFormation::Stack", "Properties": {"TemplateURL": "bad.yml"}}}},
         {"bad.yml": "Resources: [\n"},
         "services/api/bad.yml: line 2, column 1: expected the node content, but found '<stream end>'"),
        ({"Metadata": {"AWS::ServerlessRepo::Application": {"ReadmeUrl": "README.md"}}, "Resources": {}}, {},
         "services/api/template.yml: Metadata.AWS::ServerlessRepo::Application.ReadmeUrl: no file or folder README.md"),
    ],
)  # fmt: skip
def test_user_errors(api: Path, template: dict[str, Any], files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (api / name).parent.mkdir(parents=True, exist_ok=True)
        (api / name).write_text(text)
    with pytest.raises(PhasedoitError) as error:
        package(api, template)
    assert str(error.value) == message


# ---- the bucket ------------------------------------------------------------------------------------------


def test_default_bucket_name() -> None:
    name = packaging.default_bucket("000000000042", "eu-west-1")
    assert name == packaging.default_bucket("000000000042", "eu-west-1")  # the same on every machine
    assert name.startswith("phasedoit-artifacts-eu-west-1-")
    assert "000000000042" not in name
    assert BUCKET_RE.fullmatch(name)
    assert name != packaging.default_bucket("000000000043", "eu-west-1")
    assert packaging.default_bucket("000000000042", "us-east-1").startswith("phasedoit-artifacts-us-east-1-")


@pytest.mark.parametrize(
    ("bucket", "message"),
    [
        ("My_Bucket", "phases.yml: stages.prod.artifacts_bucket: 'My_Bucket' is not an S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-')"),
        ("a..b", "phases.yml: stages.prod.artifacts_bucket: 'a..b' is not an S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-')"),
    ],
)  # fmt: skip
def test_artifacts_bucket_setting(tmp_path: Path, bucket: str, message: str) -> None:
    (tmp_path / "services" / "api").mkdir(parents=True)
    (tmp_path / "services" / "api" / "template.yml").write_text("Resources: {}\n")
    config = tmp_path / CONFIG_NAME
    config.write_text(f"app: shop\nstages:\n  prod: {{artifacts_bucket: {bucket}}}\n")
    with pytest.raises(PhasedoitError) as error:
        load_config(config)
    assert str(error.value) == message
    config.write_text("app: shop\nstages:\n  prod: {artifacts_bucket: my.artifacts-1}\n")
    assert load_config(config).stages["prod"].artifacts_bucket == "my.artifacts-1"


# ---- the hashes kept between runs -------------------------------------------------------------------------


def _stamp(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_mtime_ns, status.st_ctime_ns, status.st_size, status.st_ino]


def test_a_file_as_it_was_is_not_read_again(tmp_path: Path) -> None:
    code = tmp_path / "app.py"
    code.write_text(HANDLER)
    cache = tmp_path / ".phasedoit" / hashcache.FILE_NAME
    cache.parent.mkdir()
    # what an earlier run found; the hash is not the file's: only a cache that trusts it returns it
    cache.write_text(json.dumps({"version": 1, "files": {str(code): [*_stamp(code), "f" * 64]}}))
    assert HashCache(cache).sha256(code, code.stat()) == "f" * 64
    code.write_text(HANDLER.upper())  # same size; its times change
    assert HashCache(cache).sha256(code, code.stat()) == hashlib.sha256(HANDLER.upper().encode()).hexdigest()


def test_what_a_run_hashed_is_saved_unless_just_modified(tmp_path: Path) -> None:
    old, new = tmp_path / "old.py", tmp_path / "new.py"
    old.write_text("a")
    new.write_text("b")
    os.utime(old, (1_700_000_000, 1_700_000_000))
    cache = HashCache(tmp_path / "hashes.json")
    cache.sha256(old, old.stat())
    cache.sha256(new, new.stat())  # modified this very second: an edit in the same tick would not show
    cache.save()
    assert list(json.loads((tmp_path / "hashes.json").read_text())["files"]) == [str(old)]
