"""Pure: what a template packages (code folders, files, nested templates), deterministic zips and digests,
and the template rewritten to point at the artifacts bucket, as `aws cloudformation package` does.

Two moments. The plan (when doit loads, no AWS call) hashes every artifact and rewrites the template, so
the fingerprint of what is sent covers the code. A deploy (in a worker) builds each artifact the bucket
lacks again, checks that it still has the planned digest, and uploads it (artifacts.py). A zip's digest is
that of its entries (names, modes, content hashes), which is what makes its bytes: the same key on every
machine, whatever its zlib, and no zipping at plan time.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import io
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phasedoit import hashcache, templates
from phasedoit.errors import PhasedoitError
from phasedoit.hashcache import HashCache

# Never part of what a service deploys: VCS folders, caches, installed packages, build outputs of tools.
DEFAULT_EXCLUDE = (
    ".git", ".hg", ".svn", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    "node_modules", ".venv", ".serverless", ".aws-sam", ".DS_Store", ".phasedoit",
)  # fmt: skip
STATE_DIR = ".phasedoit"  # the app's, as planning names it: the hashes of its code are kept there
# Known only at deploy when phases.yml names no bucket: the default bucket's name comes from the account.
BUCKET = "{{phasedoit:artifacts-bucket}}"
S3_HOST = "{{phasedoit:s3-host}}"
# The longest values they may take, to know at plan time whether a body fits inline once substituted.
LONGEST_BUCKET, LONGEST_HOST = 63, len("s3.ap-southeast-5.amazonaws.com.cn")
AUTO_EXPAND = "CAPABILITY_AUTO_EXPAND"
SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
ZIP_FORMAT = "phasedoit-zip/1"  # part of a zip's digest: a change in how zips are made changes every key
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: timestamps never matter


@dataclass(frozen=True)
class Property:
    """A property that may hold a local path, and how `aws cloudformation package` rewrites it."""

    type: str  # resource type, or the Metadata entry
    path: tuple[str, ...]  # inside Properties (the Metadata entry)
    # "url": s3://bucket/key; "object": {bucket field: bucket, key field: key}; "template": a template
    # packaged in turn, given as its https URL
    form: str = "url"
    fields: tuple[str, str] = ("Bucket", "Key")  # of an "object"
    zip_file: bool = False  # a single file is zipped too (Lambda wants a zip); a .zip is sent as it is
    when_missing: bool = False  # an absent property means the template's own folder


LAMBDA_FIELDS = ("S3Bucket", "S3Key")
# The AWS CLI's list (awscli/customizations/cloudformation/artifact_exporter.py, RESOURCES_EXPORT_LIST),
# plus AWS::Serverless::HttpApi as the SAM CLI packages it.
PROPERTIES = (
    Property("AWS::Serverless::Function", ("CodeUri",), zip_file=True, when_missing=True),
    Property("AWS::Serverless::Api", ("DefinitionUri",)),
    Property("AWS::Serverless::HttpApi", ("DefinitionUri",)),
    Property("AWS::AppSync::GraphQLSchema", ("DefinitionS3Location",)),
    Property("AWS::AppSync::Resolver", ("RequestMappingTemplateS3Location",)),
    Property("AWS::AppSync::Resolver", ("ResponseMappingTemplateS3Location",)),
    Property("AWS::AppSync::FunctionConfiguration", ("RequestMappingTemplateS3Location",)),
    Property("AWS::AppSync::FunctionConfiguration", ("ResponseMappingTemplateS3Location",)),
    Property("AWS::ApiGateway::RestApi", ("BodyS3Location",), "object"),
    Property("AWS::Lambda::Function", ("Code",), "object", LAMBDA_FIELDS, zip_file=True, when_missing=True),
    Property("AWS::ElasticBeanstalk::ApplicationVersion", ("SourceBundle",), "object", LAMBDA_FIELDS,
             when_missing=True),
    Property("AWS::CloudFormation::Stack", ("TemplateURL",), "template"),
    Property("AWS::Serverless::Application", ("Location",), "template"),
    Property("AWS::Serverless::LayerVersion", ("ContentUri",), zip_file=True, when_missing=True),
    Property("AWS::Lambda::LayerVersion", ("Content",), "object", LAMBDA_FIELDS, zip_file=True,
             when_missing=True),
    # the AWS CLI also packages the template's folder as a missing script; a job has one script file
    Property("AWS::Glue::Job", ("Command", "ScriptLocation")),
    Property("AWS::StepFunctions::StateMachine", ("DefinitionS3Location",), "object"),
    Property("AWS::Serverless::StateMachine", ("DefinitionUri",), "object"),
    Property("AWS::CodeCommit::Repository", ("Code", "S3"), "object", zip_file=True),
)  # fmt: skip
METADATA = (
    Property("AWS::ServerlessRepo::Application", ("ReadmeUrl",)),
    Property("AWS::ServerlessRepo::Application", ("LicenseUrl",)),
)
# SAM's Globals: a function without CodeUri takes this one (the AWS CLI would zip the template's folder).
GLOBAL_CODE = Property("Globals", ("Function", "CodeUri"), zip_file=True)
INCLUDE = Property("AWS::Include", ("Location",))  # Fn::Transform AWS::Include: a file, as an s3:// URL
# a SAM function with these has no code to package
NO_CODE = ("InlineCode", "ImageUri")


@dataclass(frozen=True)
class Store:
    """Where the artifacts go, as far as the plan knows: None until a deploy knows it (a placeholder)."""

    bucket: str | None = None
    region: str | None = None

    @property
    def bucket_text(self) -> str:
        return self.bucket or BUCKET

    @property
    def host_text(self) -> str:
        return s3_host(self.region) if self.region else S3_HOST


def s3_host(region: str) -> str:
    return f"s3.{region}.amazonaws.com" + (".cn" if region.startswith("cn-") else "")


def template_url(bucket: str, host: str, key: str) -> str:
    # path style, as the AWS CLI writes it: a bucket name with dots stays a valid https host
    return f"https://{host}/{bucket}/{key}"


def default_bucket(account: str, region: str) -> str:
    """The bucket phasedoit creates: one per account and region, the same on every machine.

    The account id must not be readable from the name (it shows in templates, logs and state): a salted
    PBKDF2 of it makes trying the 10^12 possible ids cost about a GPU-year; 0.13 s once per worker here.
    """
    salt = f"phasedoit-artifacts:{region}".encode()
    digest = hashlib.pbkdf2_hmac("sha256", account.encode(), salt, 300_000)
    return f"phasedoit-artifacts-{region}-{digest.hex()[:20]}"


def substitute(text: str, bucket: str, region: str) -> str:
    return text.replace(BUCKET, bucket).replace(S3_HOST, s3_host(region))


@dataclass(frozen=True)
class Artifact:
    """One object for the bucket, as planned: keyed by its digest, so an existing one is not sent again."""

    kind: str  # "zip" (a folder, or a file zipped alone), "file" (sent as it is), "template"
    key: str
    shown: str  # as the user knows it: src/, api.yaml, nested/db.yml
    size: int  # bytes before zipping (a template: its body)
    source: str = ""  # the folder or file
    exclude: tuple[str, ...] = ()  # a folder's files left out
    base: str = ""  # exclude patterns also match paths from here (the service's folder)
    body: str = ""  # a template's, placeholders and all

    @property
    def digest(self) -> str:
        return self.key.split(".", 1)[0]


@dataclass(frozen=True)
class Package:
    """A service's template, packaged: what the plan shows and the fingerprint covers."""

    body: str  # the template to send, locations rewritten (placeholders until a deploy knows the bucket)
    artifacts: tuple[Artifact, ...] = ()  # each once; nested templates after what they point at
    template: Artifact | None = None  # the body itself, when too large to send inline
    capabilities: tuple[str, ...] = ()  # the service's, and CAPABILITY_AUTO_EXPAND for a transform
    notes: tuple[str, ...] = ()  # what packaging decided, for the plan
    store: Store = Store()  # the bucket and region as the plan knew them

    @property
    def uploads(self) -> tuple[Artifact, ...]:
        return self.artifacts + ((self.template,) if self.template else ())


@dataclass
class _Packer:
    """One service's packaging: its folder and excludes, and what it found so far."""

    folder: Path
    root: Path  # the app's folder: paths outside the service are shown from there
    exclude: tuple[str, ...]
    store: Store
    hashes: HashCache
    found: dict[str, Artifact] = field(default_factory=dict)
    transforms: list[str] = field(default_factory=list)
    opened: list[Path] = field(default_factory=list)  # the templates being packaged, outermost first

    def template(self, template: dict[str, Any], path: Path, shown: str) -> dict[str, Any]:
        """A copy of `template` with every local path replaced by the location of its artifact."""
        resolved = path.resolve()
        self.opened.append(resolved)
        packed = copy.deepcopy(template)
        self.transforms += _transforms(packed)
        here = resolved.parent  # as the service's folder is: paths are compared with it
        self._includes(packed, here, shown, "")
        sam_code = _get(packed.get("Globals"), GLOBAL_CODE.path)
        if sam_code is not None:
            self._property(packed["Globals"], GLOBAL_CODE, here, f"{shown}: Globals.Function.CodeUri")
        metadata = packed.get("Metadata")
        for prop in METADATA:
            if isinstance(metadata, dict) and isinstance(metadata.get(prop.type), dict):
                where = f"{shown}: Metadata.{prop.type}.{'.'.join(prop.path)}"
                self._property(metadata[prop.type], prop, here, where)
        for name, resource in _resources(packed.get("Resources")):
            for prop in PROPERTIES:
                if resource.get("Type") == prop.type:
                    where = f"{shown}: Resources.{name}.Properties.{'.'.join(prop.path)}"
                    missing = prop.when_missing and _inherits(resource, sam_code)
                    if missing and resource.get("Properties") is None:
                        resource["Properties"] = {}
                    if isinstance(resource.get("Properties"), dict):
                        self._property(resource["Properties"], prop, here, where, missing)
        self.opened.pop()
        return packed

    def _property(
        self, holder: dict[str, Any], prop: Property, here: Path, where: str, missing: bool = False
    ) -> None:
        """Package the path at `prop.path` in `holder`; `missing`: an absent one means the folder `here`."""
        value = _get(holder, prop.path)
        if value is None or value == "":
            if not missing:
                return
            value = "."
        if not isinstance(value, str) or value.startswith("s3://"):
            return  # an S3 location already, or an intrinsic function: nothing local
        if prop.form == "template" and value.startswith(("http://", "https://")):
            return
        artifact = self._artifact(here / value, prop, where)
        bucket, key = self.store.bucket_text, artifact.key
        if prop.form == "object":
            _set(holder, prop.path, {prop.fields[0]: bucket, prop.fields[1]: key})
        elif prop.form == "template":
            _set(holder, prop.path, template_url(bucket, self.store.host_text, key))
        else:
            _set(holder, prop.path, f"s3://{bucket}/{key}")

    def _artifact(self, path: Path, prop: Property, where: str) -> Artifact:
        shown = self._shown(path)
        if prop.form == "template":
            if not path.is_file():
                raise PhasedoitError(f"{where}: no template file {shown}")
            return self._nested(path, shown, where)
        if path.is_dir():
            artifact = self._zip(path, f"{shown}/", where)
        elif path.is_file() and prop.zip_file and not zipfile.is_zipfile(path):
            artifact = self._zip(path, shown, where)
        elif path.is_file():
            content = _hash(path, where, self.hashes)
            artifact = Artifact("file", content.sha256 + "".join(path.suffixes[-1:]), shown, content.size,
                                str(path))  # fmt: skip
        else:
            raise PhasedoitError(f"{where}: no file or folder {shown}")
        return self.found.setdefault(artifact.key, artifact)

    def _zip(self, path: Path, shown: str, where: str) -> Artifact:
        entries = [
            (name, _hash(file, where, self.hashes)) for name, file in walk(path, self.exclude, self.folder)
        ]
        if not entries:
            raise PhasedoitError(f"{where}: nothing to package in {shown} (empty, or every file excluded)")
        digest = zip_digest([(name, content.mode, content.sha256) for name, content in entries])
        size = sum(content.size for _, content in entries)
        return Artifact("zip", f"{digest}.zip", shown, size, str(path), self.exclude, str(self.folder))

    def _nested(self, path: Path, shown: str, where: str) -> Artifact:
        if path.resolve() in self.opened:
            raise PhasedoitError(f"{where}: {shown} includes itself")
        named = self._shown(path, from_root=True)  # in errors, as every file is: from the app's folder
        nested = self.template(templates.load_template(path, named), path, named)
        body = templates.render(nested)
        _check_size(body, shown)
        digest = hashlib.sha256(body.encode()).hexdigest()
        artifact = Artifact("template", f"{digest}.template", shown, len(body.encode()), body=body)
        return self.found.setdefault(artifact.key, artifact)

    def _includes(self, node: Any, here: Path, shown: str, where: str) -> None:
        """`Fn::Transform: {Name: AWS::Include, Parameters: {Location: file}}`, anywhere in the template."""
        if isinstance(node, list):
            for i, item in enumerate(node):
                self._includes(item, here, shown, f"{where}[{i}]")
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            inner = f"{where}.{key}" if where else str(key)
            transform = value if key in ("Fn::Transform", "Transform") else None
            if isinstance(transform, dict) and transform.get("Name") == INCLUDE.type:
                parameters = transform.get("Parameters")
                if isinstance(parameters, dict):
                    self._property(parameters, INCLUDE, here, f"{shown}: {inner}.Parameters.Location")
            else:
                self._includes(value, here, shown, inner)

    def _shown(self, path: Path, from_root: bool = False) -> str:
        """A path as the user knows it: from the service's folder, else from the app's."""
        path = Path(os.path.normpath(path))
        for base in (self.root,) if from_root else (self.folder, self.root):
            if path.is_relative_to(base):
                return path.relative_to(base).as_posix() if path != base else "."
        return path.as_posix()


def package_template(
    template: dict[str, Any],
    path: Path,
    shown: str,
    *,
    folder: Path,
    root: Path,
    exclude: tuple[str, ...],
    store: Store,
    capabilities: tuple[str, ...] = (),
) -> Package:
    """Package a service's template (read from `path`, shown as `shown`); `exclude`: the service's patterns
    (phasedoit's defaults apply too); `capabilities`: the service's own."""
    body = templates.render(template)
    found: dict[str, Artifact] = {}
    transforms: list[str] = []
    if not _as_it_is(template, body):
        root = root.resolve()
        packer = _Packer(folder.resolve(), root, DEFAULT_EXCLUDE + tuple(exclude), store,
                         hashcache.for_state(root / STATE_DIR))  # fmt: skip
        body = templates.render(packer.template(template, path, shown))
        found, transforms = packer.found, packer.transforms
    notes: list[str] = []
    if transforms and AUTO_EXPAND not in capabilities:
        capabilities = (*capabilities, AUTO_EXPAND)
        notes.append(f"adds {AUTO_EXPAND} (Transform {', '.join(dict.fromkeys(transforms))})")
    big = None
    size = _check_size(body, shown)
    if size > templates.MAX_BODY_BYTES:
        digest = hashlib.sha256(body.encode()).hexdigest()
        big = Artifact("template", f"{digest}.template", Path(shown).name, len(body.encode()), body=body)
        notes.append(f"template of {size:,} bytes goes through the artifacts bucket")
    return Package(body, tuple(found.values()), big, capabilities, tuple(notes), store)


PACKAGED_TYPES = frozenset(prop.type for prop in PROPERTIES)


def _as_it_is(template: dict[str, Any], body: str) -> bool:
    """Whether packaging leaves the template as it is: no property that may hold a local path, no
    transform (nor AWS::Include). Most templates: they are then neither copied nor walked again.

    `body`, the template as JSON, shows every `Transform` and `Fn::Transform` key as it is written (in a
    string value, its quotes would be escaped): a template without either has no transform anywhere.
    """
    if '"Transform"' in body or '"Fn::Transform"' in body:
        return False
    if _get(template.get("Globals"), GLOBAL_CODE.path) is not None:
        return False
    metadata = template.get("Metadata")
    if isinstance(metadata, dict) and any(isinstance(metadata.get(prop.type), dict) for prop in METADATA):
        return False
    return not any(
        resource.get("Type") in PACKAGED_TYPES for _, resource in _resources(template.get("Resources"))
    )


def _check_size(body: str, shown: str) -> int:
    """The size of `body` once the deploy fills its placeholders in, at most; refused over 1 MB."""
    size = len(body.encode())
    size += body.count(BUCKET) * (LONGEST_BUCKET - len(BUCKET))
    size += body.count(S3_HOST) * (LONGEST_HOST - len(S3_HOST))
    if size > templates.MAX_URL_BYTES:
        raise PhasedoitError(
            f"{shown}: template is {size:,} bytes as JSON; CloudFormation takes at most"
            f" {templates.MAX_URL_BYTES:,} (through S3)"
        )
    return size


def _transforms(template: dict[str, Any]) -> list[str]:
    """The macros a template uses (each needs CAPABILITY_AUTO_EXPAND): its Transform and any Fn::Transform."""
    top = template.get("Transform")
    found = [t.get("Name") if isinstance(t, dict) else t for t in (top if isinstance(top, list) else [top])]
    found += _fn_transforms(template)
    return [name for name in found if isinstance(name, str)]


def _fn_transforms(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Fn::Transform" and isinstance(value, dict):
                yield value.get("Name")
            yield from _fn_transforms(value)
    elif isinstance(node, list):
        for item in node:
            yield from _fn_transforms(item)


def _resources(resources: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each resource, also those inside `Fn::ForEach::` loops (AWS::LanguageExtensions)."""
    if not isinstance(resources, dict):
        return
    for name, resource in resources.items():
        if name.startswith("Fn::ForEach::") and isinstance(resource, list) and len(resource) == 3:
            yield from _resources(resource[2])
        elif isinstance(resource, dict):
            yield name, resource


def _inherits(resource: dict[str, Any], global_code: Any) -> bool:
    """Whether an absent code property means the template's folder (False: SAM has it another way)."""
    if resource.get("Type") != "AWS::Serverless::Function":
        return True
    properties = resource.get("Properties") or {}
    image = properties.get("PackageType") == "Image"
    return not (image or global_code is not None or any(k in properties for k in NO_CODE))


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _set(node: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


# ---- files, digests and zips ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    sha256: str
    size: int
    mode: int  # 0o755 or 0o644: only whether it is executable survives (a Lambda bootstrap must be)


def _hash(path: Path, where: str, hashes: HashCache) -> Content:
    try:
        status = path.stat()
        return Content(hashes.sha256(path, status), status.st_size, _mode(status))
    except OSError as e:
        raise PhasedoitError(f"{where}: cannot read {path}: {e.strerror}") from None


def _mode(status: os.stat_result) -> int:
    return 0o755 if status.st_mode & 0o111 else 0o644


def walk(source: Path, exclude: tuple[str, ...], base: Path) -> list[tuple[str, Path]]:
    """The files of `source` (or `source` itself, a file) as (name in the zip, path), sorted by name.

    Patterns match a name, a path inside `source`, or a path from `base` (the service's folder).
    Symbolic links are followed, as the AWS CLI does; a folder already visited is not entered again.
    """
    if source.is_file():
        return [(source.name, source)]
    return sorted(_walk(source, exclude, base))


def _walk(source: Path, exclude: tuple[str, ...], base: Path) -> Iterator[tuple[str, Path]]:
    seen = {os.path.realpath(source)}
    for top, dirs, files in os.walk(source, followlinks=True):
        inside = Path(top).relative_to(source)
        kept = []
        for name in sorted(dirs):
            real = os.path.realpath(Path(top, name))
            if real not in seen and not _excluded(inside / name, Path(top, name), exclude, base):
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if not _excluded(inside / name, Path(top, name), exclude, base):
                yield (inside / name).as_posix(), Path(top, name)


def _excluded(inside: Path, path: Path, patterns: tuple[str, ...], base: Path) -> bool:
    texts = [inside.name, inside.as_posix()]
    if path.is_relative_to(base):
        texts.append(path.relative_to(base).as_posix())
    return any(fnmatch.fnmatchcase(text, pattern) for text in texts for pattern in patterns)


def zip_digest(entries: list[tuple[str, int, str]]) -> str:
    """What a zip holds, (name, mode, content hash) in its order, as one hash: its bytes follow from it."""
    return hashlib.sha256(json.dumps([ZIP_FORMAT, entries]).encode()).hexdigest()


def build(artifact: Artifact, bucket: str, region: str) -> bytes:
    """The bytes to upload, made again from the files; a one-line error if they are not what was planned."""
    if artifact.kind == "template":
        return substitute(artifact.body, bucket, region).encode()
    if artifact.kind == "file":
        data = _read(Path(artifact.source), artifact.shown)
        digest = hashlib.sha256(data).hexdigest()
    else:
        data, digest = make_zip(Path(artifact.source), artifact.exclude, Path(artifact.base), artifact.shown)
    if digest != artifact.digest:
        raise PhasedoitError(f"{artifact.shown} changed during the run: deploy again")
    return data


def make_zip(source: Path, exclude: tuple[str, ...], base: Path, shown: str) -> tuple[bytes, str]:
    """A deterministic zip of `source` and its digest: sorted entries, fixed times, normalized modes."""
    buffer = io.BytesIO()
    entries: list[tuple[str, int, str]] = []
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, path in walk(source, exclude, base):
            data = _read(path, shown)
            try:
                mode = _mode(path.stat())
            except OSError as e:
                raise PhasedoitError(f"{shown}: cannot read {path}: {e.strerror}") from None
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.create_system = 3  # Unix, on every system: unzip then honours the mode bits
            info.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
            entries.append((name, mode, hashlib.sha256(data).hexdigest()))
    return buffer.getvalue(), zip_digest(entries)


def _read(path: Path, shown: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PhasedoitError(f"{shown}: cannot read {path}: {e.strerror}") from None


def as_written(package: Package) -> str:
    """The body with each artifact's key replaced by its path: what the template says, whatever the code.

    Its digest changes with the template file only; each artifact's own digest says when its code did.
    """
    body = package.body
    for artifact in package.artifacts:
        body = body.replace(artifact.key, artifact.shown)
    return body


def template_arguments(package: Package, bucket: str, region: str) -> dict[str, str]:
    """The template part of a CreateStack/UpdateStack request, once the bucket is known."""
    if package.template is not None:
        return {"TemplateURL": template_url(bucket, s3_host(region), package.template.key)}
    return {"TemplateBody": substitute(package.body, bucket, region)}


def needs_bucket(package: Package) -> bool:
    return bool(package.uploads) or BUCKET in package.body or S3_HOST in package.body


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{round(size / 1024)} KB"
    return f"{size / 1024 / 1024:.1f} MB"
