"""schemathesis hooks for contract.py: the admin token, kept working through the tester's own
rotations.

The tester learns service names from the API's answers and rotates them, its own admin service
included; with a zero grace the token it holds ends at once (by design: the rotation's answer
carried the new token, which the tester does not pick up). Every 401 makes schemathesis ask for
the token again: if the one it holds no longer works, a new one is made with the CLI (the way an
operator would) and the request retried, so the admin operations keep being tested instead of
answering 401 for the rest of the run.
"""
import json
import os
import subprocess
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["CONTRACT_BASE"]
ROTATE = json.loads(os.environ["CONTRACT_ROTATE"])
ENVIRONMENT = json.loads(os.environ["CONTRACT_ENVIRONMENT"])
state = {"token": os.environ["CONTRACT_TOKEN"], "renewed": 0}


def works(token):
    request = urllib.request.Request(BASE + "/admin/v1/tokens?service=-", headers={"Authorization": "Bearer " + token})
    try:
        urllib.request.urlopen(request, timeout=10)
        return True
    except urllib.error.HTTPError as error:
        return error.code != 401


@schemathesis.auth(retry_on=[401])
class AdminToken:
    def get(self, case, context):
        if not works(state["token"]):
            result = subprocess.run(ROTATE, capture_output=True, text=True, env=ENVIRONMENT, check=True,
                                    cwd=os.environ["CONTRACT_DIRECTORY"])
            state["token"] = result.stdout.strip().splitlines()[-1]
            state["renewed"] += 1
            print(f"contract: the admin token ended (the tester rotated its service); renewed {state['renewed']} time(s)",
                  flush=True)
        return state["token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = "Bearer " + data
