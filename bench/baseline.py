"""The baseline: what a user writes from QuantConnect's API documentation.

Sequential windows of 249 lines, a new connection per request (``requests.post``, no Session),
JSON parsed, each line printed, the cursor advanced by the number of lines returned.

    QC_BASE_URL=... QC_USER_ID=... QC_API_TOKEN=... python bench/baseline.py PROJECT_ID
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import time
from typing import Any

import requests

BASE_URL = os.environ.get("QC_BASE_URL", "https://www.quantconnect.com/api/v2")
USER_ID = os.environ["QC_USER_ID"]
API_TOKEN = os.environ["QC_API_TOKEN"]


def headers() -> dict[str, str]:
    timestamp = str(int(time.time()))
    hashed = hashlib.sha256(f"{API_TOKEN}:{timestamp}".encode()).hexdigest()
    authentication = base64.b64encode(f"{USER_ID}:{hashed}".encode()).decode("ascii")
    return {"Authorization": f"Basic {authentication}", "Timestamp": timestamp}


def post(endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{BASE_URL}{endpoint}", json=payload, headers=headers(), timeout=30)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    if not data.get("success"):
        raise SystemExit(f"{endpoint}: {data.get('errors')}")
    return data


def main() -> None:
    project_id = int(sys.argv[1])
    deploy_id = post("/live/read", {"projectId": project_id})["deployId"]
    start = 0
    while True:
        data = post(
            "/live/logs/read",
            {
                "format": "json",
                "projectId": project_id,
                "algorithmId": deploy_id,
                "startLine": start,
                "endLine": start + 249,
            },
        )
        if start < data["deploymentOffset"]:  # earlier rows belong to older deployments
            start = data["deploymentOffset"]
            continue
        logs = data["logs"]
        for line in logs:
            print(line)
        start += len(logs)
        if not logs or start >= data["length"]:
            break


if __name__ == "__main__":
    main()
