"""Short stable hashes that fingerprints record, without JAX (the deployment side recomputes them).

* :func:`mjcf_hash` — an MJCF text's sha256, first 16 hex digits (``model_hash`` of an MJX task);
* :func:`fingerprint_hash` — the same of a JSON-able payload with sorted keys.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def mjcf_hash(xml: str) -> str:
    """sha256[:16] of an MJCF text."""
    return hashlib.sha256(xml.encode()).hexdigest()[:16]


def fingerprint_hash(payload: Any) -> str:
    """A short stable hash of a JSON-able payload (sorted keys; non-JSON values by ``str``)."""
    return mjcf_hash(json.dumps(payload, sort_keys=True, default=str))
