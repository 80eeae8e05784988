"""Print the ``spec`` annotation of function.yaml for a model served by ``fcn serve``: one
``type: mask`` label per class, read from ``GET /v1/models/{name}``.

    python deploy/cvat/spec.py http://localhost:8000 [MODEL]

Paste the output over the ``spec: |`` block of deploy/cvat/function.yaml when you serve a model
of your own (its class names become CVAT's labels; CVAT matches them to a task's labels by name).
"""

from __future__ import annotations

import json
import sys
import urllib.request


def spec(classes: list[str]) -> str:
    rows = [json.dumps({"id": i, "name": name, "type": "mask"}) for i, name in enumerate(classes)]
    return "[\n  " + ",\n  ".join(rows) + "\n]"


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    url = sys.argv[1].rstrip("/")
    name = sys.argv[2] if len(sys.argv) > 2 else None
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
        listing = json.load(response)
    models = listing["models"]
    chosen = next((m for m in models if m["name"] == name), None) if name else None
    chosen = chosen or next((m for m in models if m.get("default")), models[0])
    sys.stdout.write(spec(chosen["classes"]) + "\n")


if __name__ == "__main__":
    main()
