"""CloudFormation templates: phasedoit renders the body itself, packages the local code it points at,
sends it, and waits for the stack."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from phasedoit import intrinsics, packaging, templatecache, templates
from phasedoit.config import CONFIG_NAME
from phasedoit.deployers import FORMAT, Context, Packager, Rendered, Say, no_guard, pseudo_parameters
from phasedoit.errors import PhasedoitError
from phasedoit.parameters import fingerprinted, resolve_parameter
from phasedoit.stack import (
    APP_TAG,
    EXPORTS_TAG,
    FINGERPRINT_TAG,
    SERVICE_TAG,
    STAGE_TAG,
    Deployed,
    OnProgress,
    StackSpec,
    Target,
    digest,
)

if TYPE_CHECKING:
    from phasedoit.config import Service
    from phasedoit.planning import ServicePlan

FINGERPRINT_ON_STACK = True
guard = no_guard  # its client checks the account of a stage bound to one
# Values CloudFormation reads when it deploys, not when phasedoit renders: `{{resolve:ssm:name}}` without
# a version, and secrets (`{{resolve:secretsmanager:...}}`). `ssm-secure` always names its version.
DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:(ssm|secretsmanager):([^}]*)\}\}")
SSM_PARAMETER_TYPE = "AWS::SSM::Parameter::Value<"


@dataclass(frozen=True)
class Request(StackSpec):
    """What a deploy sends: the stack's request, and what its template points at in the artifacts bucket
    (uploaded first, the body's placeholders then filled in)."""

    package: packaging.Package = field(default_factory=lambda: packaging.Package(""))


def render(context: Context, service: Service) -> Rendered:
    app, stage, where = context.app, context.stage, context.target
    shown = app.shown(service.template)
    cache = templatecache.for_state(app.root / packaging.STATE_DIR)
    template = templates.load_template(service.template, shown, cache)
    declared = templates.parameter_names(template)
    for name in service.settings.parameters:
        if name not in declared:
            raise PhasedoitError(
                f"{CONFIG_NAME}: services.{service.name}.parameters.{name}: not a parameter of {shown}"
            )
    parameters = {"Stage": stage} if "Stage" in declared else {}
    parameters |= _values(context, service, declared)
    name = service.stack_name(app.name, stage)
    tags = {**service.settings.tags, APP_TAG: app.name, STAGE_TAG: stage, SERVICE_TAG: service.name}
    package = packaging.package_template(
        template,
        service.template,
        shown,
        folder=service.folder,
        root=app.root,
        exclude=tuple(service.settings.exclude),
        store=packaging.Store(context.settings.artifacts_bucket, where.region),
        capabilities=tuple(service.settings.capabilities),
    )
    body = package.body
    spec = Request(name, body, parameters, tags, package.capabilities, package=package)
    known = {**parameters, **pseudo_parameters(name, where.region, context.settings.account)}
    ignored = service.settings.deploy_time_values == "ignore"
    always = None if ignored else deploy_time_values(template, body)
    sent = [FORMAT, name, fingerprinted(parameters), tags, spec.capabilities, where.region, where.account]
    return Rendered(
        deployer="cloudformation",
        stack=name,
        request=spec,
        dependencies=templates.find_dependencies(template, known, shown),
        # what is sent, by where it comes from: the template, and each artifact (its key is its digest)
        files={
            service.template.relative_to(service.folder).as_posix(): digest(packaging.as_written(package)),
            **{artifact.shown: artifact.digest for artifact in package.artifacts},
        },
        settings=digest(sent),
        always=always,
        exports=export_definitions(template, known),
        missing=tuple(templates.missing_parameters(template, parameters)),
        notes=package.notes,
        resource_types=templates.resource_types(template),
    )


def _values(context: Context, service: Service, declared: set[str]) -> dict[str, str]:
    """The stage's parameters that the template declares, then the service's; `{env: NAME}` read now."""
    stage = {
        k: (v, f"stages.{context.stage}") for k, v in context.settings.parameters.items() if k in declared
    }
    chosen = stage | {k: (v, f"services.{service.name}") for k, v in service.settings.parameters.items()}
    return {
        k: resolve_parameter(v, context.environ, f"{CONFIG_NAME}: {where}.parameters.{k}")
        for k, (v, where) in chosen.items()
    }


def export_definitions(template: dict[str, Any], known: Mapping[str, str]) -> dict[str, str]:
    """Each export the template defines, by its name, with a digest of its Output's Value expression.

    Names resolve as the graph resolves them (parameter defaults included); an Output whose `Condition` is
    known to be false defines no export: deploying it removes the export, if it was there.
    """
    values = {**templates.parameter_defaults(template), **known}
    scope = intrinsics.Scope(values, template.get("Conditions"), templates.deploy_time_parameters(template))
    outputs = template.get("Outputs")
    definitions: dict[str, str] = {}
    for output in (outputs if isinstance(outputs, dict) else {}).values():
        export = output.get("Export") if isinstance(output, dict) else None
        if not isinstance(export, dict) or "Name" not in export:
            continue
        if isinstance(output.get("Condition"), str) and scope.condition(output["Condition"]) is False:
            continue
        try:
            definitions[scope.resolve(export["Name"])] = digest(output.get("Value"))
        except intrinsics.UnresolvedError:
            continue  # a warning already says it
    return definitions


def deploy_time_values(template: dict[str, Any], body: str) -> str | None:
    """Why the template's stack must deploy on every run: values CloudFormation resolves when it deploys.

    phasedoit cannot see them change, so it cannot say the stack is up to date (as CDK does for these).
    """
    params = template.get("Parameters")
    for name, spec in (params if isinstance(params, dict) else {}).items():
        if isinstance(spec, dict) and str(spec.get("Type", "")).startswith(SSM_PARAMETER_TYPE):
            return f"parameter {name} is read from SSM when it deploys"
    for match in DYNAMIC_REFERENCE.finditer(body):
        kind, reference = match.groups()
        if not (kind == "ssm" and re.search(r":\d+$", reference)):  # `name:3` pins version 3
            return f"{match[0]} is read when it deploys"
    return None


def deploy(
    plan: ServicePlan, target: Target, fingerprint: str, say: Say, on_progress: OnProgress | None = None
) -> Deployed:
    from phasedoit import artifacts, cloudformation  # boto3 loads in the workers, not when doit lists tasks

    request: Request = plan.request
    cfn = cloudformation.client(target)  # first: it checks the account of a stage bound to one
    packager = Packager(say, on_progress)
    template = artifacts.prepare(
        target, request.package, packager.say, f"stages.{target.stage}.artifacts_bucket"
    )
    packager.done(f"packaged: {packager.steps} artifact{'s' * (packager.steps != 1)} uploaded")
    tagged = replace(
        request,
        body=template.get("TemplateBody", ""),
        template_url=template.get("TemplateURL", ""),
        tags={**request.tags, FINGERPRINT_TAG: fingerprint, EXPORTS_TAG: digest(dict(plan.exports))},
    )
    return cloudformation.deploy_stack(cfn, tagged, say, adopt=plan.adopt, on_event=on_progress)


def remove(
    plan: ServicePlan, target: Target, say: Say, alone: bool, on_progress: OnProgress | None = None
) -> bool:
    from phasedoit import cloudformation

    cfn = cloudformation.client(target)
    owner = plan.request.tags
    return cloudformation.remove_stack(
        cfn, plan.stack, owner, say, adopt=plan.adopt, alone=alone, on_event=on_progress
    )
