"""`doit plan --format json|markdown` says what the text plan says, service by service."""

from __future__ import annotations

import json
import re
from pathlib import Path

from phasedoit.plan import plan_lines, to_json, to_markdown, to_text
from phasedoit.stack import Verdict
from tests.conftest import Moto, doit
from tests.faults import Layer
from tests.sample import shop


def test_the_three_formats_of_one_plan(tmp_path: Path, layer: Layer, moto: Moto) -> None:
    app = shop(tmp_path)
    assert doit(app, "-n", "4", "deploy").returncode == 0
    template = app / "services" / "checkout-api" / "template.yml"
    template.write_text(template.read_text().replace("${Stage}-purchased", "${Stage}-bought"))
    moto.client().delete_stack(StackName="reset-cart-job-dev")
    text, as_json, markdown = (
        doit(app, "plan", *f) for f in ([], ["--format", "json"], ["--format", "markdown"])
    )
    assert [r.returncode for r in (text, as_json, markdown)] == [0, 0, 0]
    assert text.stdout.splitlines() == [
        "2 of 3 services would deploy (schedule: phases)",
        "phase 1 'api'",
        "  checkout-api           deploys: changed files: template.yml",
        "phase 2 'jobs'",
        "  confirmation-job       up to date, unless the exports of checkout-api change",
        "  reset-cart-job         deploys: stack missing",
    ]
    document = json.loads(as_json.stdout)
    assert document == {
        "app": "shop",
        "stage": "dev",
        "schedule": "phases",
        "summary": "2 of 3 services would deploy (schedule: phases)",
        "deploys": 2,
        "services": 3,
        "phases": [
            {
                "phase": "phase 1 'api'",
                "services": [
                    {
                        "service": "checkout-api",
                        "status": "deploys",
                        "text": "deploys: changed files: template.yml",
                        "reasons": ["changed files: template.yml"],
                        "waits_for": [],
                        "upstreams": [],
                        "notes": [],
                    }
                ],
            },
            {
                "phase": "phase 2 'jobs'",
                "services": [
                    {
                        "service": "confirmation-job",
                        "status": "up to date",
                        "text": "up to date, unless the exports of checkout-api change",
                        "reasons": [],
                        "waits_for": ["checkout-api"],
                        "upstreams": ["checkout-api"],
                        "notes": [],
                    },
                    {
                        "service": "reset-cart-job",
                        "status": "deploys",
                        "text": "deploys: stack missing",
                        "reasons": ["stack missing"],
                        "waits_for": ["checkout-api"],
                        "upstreams": ["checkout-api"],
                        "notes": [],
                    },
                ],
            },
        ],
    }
    assert markdown.stdout.splitlines()[:6] == [
        "### phasedoit plan: shop, stage dev",
        "",
        "**2 of 3 services would deploy (schedule: phases)**",
        "",
        "| phase | service | plan |",
        "| --- | --- | --- |",
    ]
    # the same words in all three: the text plan's lines, rebuilt from the JSON and from the table
    from_json = [document["summary"]]
    for phase in document["phases"]:
        from_json += [phase["phase"], *(f"  {s['service']:<22} {s['text']}" for s in phase["services"])]
    assert from_json == text.stdout.splitlines()
    rows = [re.fullmatch(r"\| (.+) \| `(.+)` \| (.+) \|", row) for row in markdown.stdout.splitlines()[6:]]
    from_markdown = [(m[1], m[2], m[3].replace("**", "")) for m in rows if m]
    assert from_markdown == [
        (phase["phase"], s["service"], s["text"]) for phase in document["phases"] for s in phase["services"]
    ]


def test_a_skipped_service_and_a_markdown_cell() -> None:
    verdicts = [
        Verdict("users-api", "phase 1", reasons=["changed files: a|b.yml"], notes=("packages src/",)),
        Verdict("sls-api", "phase 1", skipped="a Serverless Framework service deploys to AWS only"),
        Verdict("feed-job", "phase 2", ("users-api", "sls-api")),
    ]
    lines = plan_lines(verdicts)
    assert to_text(lines, "shop", "dev").splitlines() == [
        "1 of 3 services would deploy",
        "phase 1",
        "  users-api              deploys: changed files: a|b.yml",
        "                         packages src/",
        "  sls-api                skipped: a Serverless Framework service deploys to AWS only",
        "phase 2",
        "  feed-job               up to date, unless the exports of users-api change",
    ]
    assert to_markdown(lines, "shop", "pr-7").splitlines()[6:] == [
        "| phase 1 | `users-api` | **deploys**: changed files: a\\|b.yml<br>packages src/ |",
        "| phase 1 | `sls-api` | skipped: a Serverless Framework service deploys to AWS only |",
        "| phase 2 | `feed-job` | up to date, unless the exports of users-api change |",
    ]
    assert json.loads(to_json(lines, "shop", "pr-7"))["phases"][0]["services"][1]["status"] == "skipped"
