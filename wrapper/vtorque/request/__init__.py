"""A `-vm` VM request: grammar, resolution against the site, the files it names, request.json."""
