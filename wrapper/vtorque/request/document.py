"""`request.json`: what vsub writes into the job's spool dir, and what root reads back at
start (re-validated against the site config and catalog as they are then)."""

import json
import re

from vtorque.errors import RequestError
from vtorque.request.grammar import KEYS
from vtorque.request.resolve import resolve_request

REQUEST_VERSION = 1
MAX_REQUEST_BYTES = 256 * 1024


def request_document(request, asked, submit_argv, job_id, owner_uid):
    """What `request.json` holds: the resolved request and what the user asked."""
    return {
        "version": REQUEST_VERSION,
        "job_id": job_id,
        "owner_uid": owner_uid,
        "asked": {key: value for key, (value, _) in sorted(asked.items())},
        "submit": list(submit_argv),  # the batch system's submit command, as run
        "request": request.to_dict(),
        "options": request.as_options(),
    }


def load_request(path, owner_uid, config):
    """The request of `path` (request.json) re-validated against `config` and the catalog as
    they are NOW. Refuses links, files not owned by `owner_uid` or writable by others,
    oversized or malformed JSON; the image is looked up again, never taken from the file."""
    from vtorque.trust import read_trusted

    source = f"request file {path}"
    raw = read_trusted(path, owner_uid=owner_uid, max_bytes=MAX_REQUEST_BYTES, what="request file")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(f"not valid JSON: {err}", source=source) from None
    except RecursionError:  # the C decoder recurses per level; a user's "[[[[..." ends here
        raise RequestError("not valid JSON: nested too deeply", source=source) from None
    if not isinstance(document, dict) or document.get("version") != REQUEST_VERSION:
        raise RequestError(f"expected a JSON object with version {REQUEST_VERSION}", source=source)
    options = document.get("options")
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[a-z_]+", k) for k, v in options.items()
    ):
        raise RequestError("'options' must map -vm keys to strings", source=source)
    unknown = set(options) - set(KEYS)
    if unknown:
        raise RequestError("unknown key", key=sorted(unknown)[0], accepted=", ".join(KEYS), source=source)
    for key, value in options.items():
        if "," in value:
            raise RequestError("commas are not allowed in values", key=key, value=value, source=source)
    parsed = {key: (value, source) for key, value in options.items()}
    return resolve_request(parsed, config, owner_uid=owner_uid, cwd="/")
