"""The HTTP API against its own contract: validates the served openapi.yaml as OpenAPI 3.1,
then runs schemathesis (`--checks all`, a fixed seed, a bounded number of examples) with a
data token and with admin tokens. Exits non-zero on any finding.

    contract.py <base url> <data token> <admin token> <second admin token> <seed> <examples>

The rolegate binary and the environment it needs to renew an admin token come in the
environment (CONTRACT_ROLEGATE, CONTRACT_ENVIRONMENT as JSON). The admin runs get their token
from contract_auth.py, which renews it when the tester's own rotations end it. The stateful
phase runs with a second admin service, so the first run's rotations cannot reach it.
"""
import json
import os
import subprocess
import sys
import tempfile
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
    ("data token", data_token, None, "examples,coverage,fuzzing,stateful"),
    ("admin token", admin_token, "ops", "examples,coverage,fuzzing"),
    ("admin token, stateful", second_admin, "ops-stateful", "stateful"),
]
failed = []
for name, token, admin_service, phases in runs:
    command = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "--config-file", os.path.join(here, "schemathesis.toml"), "--no-color",
        "run", document_url, "--checks", "all", "--phases", phases,
        "--max-examples", examples, "--seed", seed,
    ]
    environment = dict(os.environ)
    if admin_service:
        environment.update({
            "SCHEMATHESIS_HOOKS": "contract_auth", "PYTHONPATH": here, "CONTRACT_BASE": base,
            "CONTRACT_TOKEN": token,
            "CONTRACT_ROTATE": json.dumps([os.environ["CONTRACT_ROLEGATE"], "token", "rotate", admin_service,
                                           "--grace", "1h"]),
        })
    else:
        command += ["-H", "Authorization: Bearer " + token]
    # In a scratch folder: schemathesis keeps a cache in its working directory.
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=scratch)
    summary = [line.strip() for line in result.stdout.splitlines()
               if "generated" in line or "failure" in line or line.startswith("contract:")]
    print(f"contract: {name} ({phases}): exit {result.returncode}; " + "; ".join(summary), flush=True)
    if result.returncode != 0:
        failed.append(name)
        # The findings, with the curl commands that reproduce them (tokens are filtered by schemathesis).
        print(result.stdout[-12000:])
        print(result.stderr[-4000:])
sys.exit(1 if failed else 0)
