"""``monailabel start_server`` with a working CORS allow-list (run in MONAI Label's environment).

MONAI Label (0.8.5) parses ``MONAI_LABEL_CORS_ORIGINS`` into pydantic URL objects: its start-up logging cannot
serialise them (the server exits with ``TypeError: Object of type AnyHttpUrl is not JSON serializable``) and their
text form gains a trailing slash (``http://127.0.0.1:8000/``), which never equals a browser's ``Origin`` header.
Here they become the plain origins CORS compares against, then MONAI Label's own command line runs unchanged::

    python -m volgan.apps.monailabel.start_server --app APP --studies STUDIES --port 8000 ...
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def plain_origins(origins: Sequence[object]) -> list[str]:
    """``scheme://host[:port]`` of each origin, as a browser sends it in ``Origin`` (no path, no trailing slash)."""
    return [str(o).rstrip("/") for o in origins]


def main(argv: Sequence[str] | None = None) -> None:
    from monailabel.config import settings
    from monailabel.main import Main

    settings.MONAI_LABEL_CORS_ORIGINS = plain_origins(settings.MONAI_LABEL_CORS_ORIGINS)
    sys.argv = ["monailabel", "start_server", *(sys.argv[1:] if argv is None else argv)]
    Main().run()


if __name__ == "__main__":
    main()
