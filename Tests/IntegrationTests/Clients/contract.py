"""The HTTP API against its own contract: validates the served openapi.yaml as OpenAPI 3.1,
then runs schemathesis (`--checks all`, a fixed seed, a bounded number of examples) with a
data token and with admin tokens. Exits non-zero on any finding.

    contract.py <base url> <data token> <admin token> <second admin token> <seed> <examples>

The admin run is split: the generated phases with one admin token, the stateful phase with
another. The stateful phase follows the document's inferred links, so it rotates the admin's
own service with a zero grace sooner or later: the token it holds then ends (by design: the
response carried the new one), and the rest of that phase would only see 401.
"""
import os
import subprocess
import sys
import urllib.request

from openapi_spec_validator import validate
import yaml

base, data_token, admin_token, second_admin, seed, examples = sys.argv[1:7]
here = os.path.dirname(os.path.abspath(__file__))
document_url = base + "/openapi.yaml"

with urllib.request.urlopen(document_url) as answer:
    document = yaml.safe_load(answer.read())
validate(document)
print(f"contract: {document_url} is valid OpenAPI {document['openapi']}", flush=True)

runs = [
    ("data token", data_token, "examples,coverage,fuzzing,stateful"),
    ("admin token", admin_token, "examples,coverage,fuzzing"),
    ("admin token, stateful", second_admin, "stateful"),
]
failed = []
for name, token, phases in runs:
    command = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "--config-file", os.path.join(here, "schemathesis.toml"), "--no-color",
        "run", document_url, "--checks", "all", "--phases", phases,
        "--max-examples", examples, "--seed", seed,
        "-H", "Authorization: Bearer " + token,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    summary = [line for line in result.stdout.splitlines() if "generated" in line or "failure" in line]
    print(f"contract: {name} ({phases}): exit {result.returncode}; " + "; ".join(s.strip() for s in summary), flush=True)
    if result.returncode != 0:
        failed.append(name)
        # The findings, with the curl commands that reproduce them (tokens are filtered by schemathesis).
        print(result.stdout[-12000:])
        print(result.stderr[-4000:])
sys.exit(1 if failed else 0)
